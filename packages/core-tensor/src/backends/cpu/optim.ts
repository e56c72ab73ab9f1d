import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forElements } from "./wasm-call.js"
import { wasmRuntime } from "./wasm-runtime.js"

/**
 * AdamW in place, torch.optim.AdamW's order: decay p first, then the moments, then the step. Each stored value
 * (p, m, v) is rounded to f32 as it is written, and the step reads the rounded m and v, as an f32 kernel does.
 */
function adamw(call: KernelOf<"adamw">, mem: Memory): void {
  const { lr, beta1, beta2, eps, weightDecay, bc1, bc2, p, m, v, g } = call
  // WASM in f32 lanes (as torch's f32 kernels; within a few ulp of the double-precision JS loop below).
  const rt = wasmRuntime()
  const params = rt.params
  rt.heap.f32.set([lr * weightDecay, beta1, 1 - beta1, beta2, 1 - beta2, lr / bc1, 1 / bc2, eps], params / 4)
  const [pa, ma, va, ga] = [mem.addr(p), mem.addr(m), mem.addr(v), mem.addr(g)]
  forElements("adamw", elementCount(p.shape), 6, (s, n) => [pa + 4 * s, ma + 4 * s, va + 4 * s, ga + 4 * s, n, params])
}

/** The JS reference. */
export function adamwJs(call: KernelOf<"adamw">, mem: Memory): void {
  const { lr, beta1, beta2, eps, weightDecay, bc1, bc2, p, m, v, g } = call
  const P = mem.f32(p)
  const M = mem.f32(m)
  const V = mem.f32(v)
  const G = mem.f32(g)
  const n = elementCount(p.shape)
  const decay = lr * weightDecay
  for (let i = 0; i < n; i++) {
    const gi = G[g.offset + i]
    const decayed = Math.fround(P[p.offset + i] - decay * P[p.offset + i])
    const mi = Math.fround(beta1 * M[m.offset + i] + (1 - beta1) * gi)
    const vi = Math.fround(beta2 * V[v.offset + i] + (1 - beta2) * gi * gi)
    M[m.offset + i] = mi
    V[v.offset + i] = vi
    P[p.offset + i] = decayed - (lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + eps)
  }
}

/**
 * SGD in place, torch.optim.SGD (dampening 0, no Nesterov): d = g + wd·p; buf = first ? d : momentum·buf + d;
 * p -= lr · (momentum > 0 ? buf : d). buf is written even without momentum, so its contents are never stale.
 */
function sgd({ lr, momentum, weightDecay, first, p, buf, g }: KernelOf<"sgd">, mem: Memory): void {
  const P = mem.f32(p)
  const BUF = mem.f32(buf)
  const G = mem.f32(g)
  const n = elementCount(p.shape)
  for (let i = 0; i < n; i++) {
    const pi = P[p.offset + i]
    const d = Math.fround(G[g.offset + i] + weightDecay * pi)
    const b = first ? d : Math.fround(momentum * BUF[buf.offset + i] + d)
    BUF[buf.offset + i] = b
    P[p.offset + i] = pi - lr * (momentum > 0 ? b : d)
  }
}

export const optimKernels = { adamw, sgd } satisfies KernelTable<"adamw" | "sgd">
