import type { KernelOf } from "../../backend.js"
import type { Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forRows } from "./wasm-call.js"

/** A target counts iff it is not ignoreIndex and lies in [0, V); every other row gets zero loss / gradient. */
const counts = (target: number, ignoreIndex: number, V: number) => target !== ignoreIndex && target >= 0 && target < V

/**
 * Per-row cross-entropy: lse = max + log Σ exp(l − max) (stable), loss = lse − l[target]. lse is written for every
 * row, ignored or not, since the backward pass reads it. The row passes run as WASM SIMD (f32 exps and sums);
 * `crossEntropyJs` is the all-double reference.
 */
function crossEntropy(call: KernelOf<"crossEntropy">, mem: Memory): void {
  const { ignoreIndex, logits, target, loss, lse } = call
  const [N, V] = logits.shape
  if (V < 4) return crossEntropyJs(call, mem)
  // WASM rows write each row's max into lse and Σ exp(l − max) (f32 exps, within 2 ulp) into loss; then
  // lse = max + log(sum) and loss here.
  const [la, sa, ma] = [mem.addr(logits), mem.addr(loss), mem.addr(lse)]
  forRows("ce_rows", N, 5 * V, (r0, r1) => [ma, sa, la, r0, r1, V])
  const L = mem.f32(logits)
  const T = mem.i32(target)
  const LOSS = mem.f32(loss)
  const LSE = mem.f32(lse)
  for (let n = 0; n < N; n++) {
    const logSumExp = LSE[lse.offset + n] + Math.log(LOSS[loss.offset + n])
    LSE[lse.offset + n] = logSumExp
    const t = T[target.offset + n]
    LOSS[loss.offset + n] = counts(t, ignoreIndex, V) ? logSumExp - L[logits.offset + n * V + t] : 0
  }
}

/** The JS reference: max, Σ exp and log in doubles. */
export function crossEntropyJs({ ignoreIndex, logits, target, loss, lse }: KernelOf<"crossEntropy">, mem: Memory): void {
  const L = mem.f32(logits)
  const T = mem.i32(target)
  const LOSS = mem.f32(loss)
  const LSE = mem.f32(lse)
  const [N, V] = logits.shape
  for (let n = 0; n < N; n++) {
    const row = logits.offset + n * V
    let max = -Infinity
    for (let v = 0; v < V; v++) if (L[row + v] > max) max = L[row + v]
    let sum = 0
    for (let v = 0; v < V; v++) sum += Math.exp(L[row + v] - max)
    const logSumExp = max + Math.log(sum)
    LSE[lse.offset + n] = logSumExp
    const t = T[target.offset + n]
    LOSS[loss.offset + n] = counts(t, ignoreIndex, V) ? logSumExp - L[row + t] : 0
  }
}

/** dlogits = g[n] · (softmax(logits[n]) − onehot(target[n])), using the stored lse; zero rows when ignored. */
function crossEntropyBackward(call: KernelOf<"crossEntropyBackward">, mem: Memory): void {
  const { ignoreIndex, logits, target, lse, g, dlogits } = call
  const [N, V] = logits.shape
  if (V < 4) return crossEntropyBackwardJs(call, mem)
  // WASM rows: dl = g·exp(l − lse); then the target's −g and the zero rows of ignored targets here.
  const [da, la, sa, ga] = [mem.addr(dlogits), mem.addr(logits), mem.addr(lse), mem.addr(g)]
  forRows("ce_bwd_rows", N, 5 * V, (r0, r1) => [da, la, sa, ga, r0, r1, V])
  const T = mem.i32(target)
  const G = mem.f32(g)
  const DL = mem.f32(dlogits)
  for (let n = 0; n < N; n++) {
    const out = dlogits.offset + n * V
    const t = T[target.offset + n]
    if (!counts(t, ignoreIndex, V)) DL.fill(0, out, out + V)
    else DL[out + t] -= G[g.offset + n]
  }
}

/** The JS reference. */
export function crossEntropyBackwardJs(call: KernelOf<"crossEntropyBackward">, mem: Memory): void {
  const { ignoreIndex, logits, target, lse, g, dlogits } = call
  const L = mem.f32(logits)
  const T = mem.i32(target)
  const LSE = mem.f32(lse)
  const G = mem.f32(g)
  const DL = mem.f32(dlogits)
  const [N, V] = logits.shape
  for (let n = 0; n < N; n++) {
    const out = dlogits.offset + n * V
    const t = T[target.offset + n]
    if (!counts(t, ignoreIndex, V)) {
      DL.fill(0, out, out + V)
      continue
    }
    const row = logits.offset + n * V
    const logSumExp = LSE[lse.offset + n]
    const gn = G[g.offset + n]
    for (let v = 0; v < V; v++) DL[out + v] = gn * (Math.exp(L[row + v] - logSumExp) - (v === t ? 1 : 0))
  }
}

export const crossEntropyKernels = { crossEntropy, crossEntropyBackward } satisfies KernelTable<"crossEntropy" | "crossEntropyBackward">
