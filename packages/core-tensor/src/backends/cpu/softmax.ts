import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { f32Bits, forRows } from "./wasm-call.js"

/** A row of doubles for exp(z − max), so each exponential is computed once and rounded only in the output. */
let rowScratch = new Float64Array(0)
function scratchRow(length: number): Float64Array {
  if (rowScratch.length < length) rowScratch = new Float64Array(length)
  return rowScratch
}

/**
 * Masked, max-subtracted softmax over the last axis (x, out: [R, C] contiguous, offsets honoured). Row r is
 * query position i = r mod tq of batch b = floor(r / (heads·tq)); key j is allowed iff
 *   (!causal or j ≤ i + qOffset) and (window = 0 or j > i + qOffset − window) and (no keyMask or keyMask[b, j] != 0).
 * The causal and window rules bound a contiguous key range [lo, hi); the key mask is checked per key.
 * A row with no allowed key is all zeros. Max, exponentials and the sum are in doubles.
 */
function softmax(call: KernelOf<"softmax">, mem: Memory): void {
  const { scale, causal, window, tq, qOffset, x, keyMask, out } = call
  if (keyMask !== null) return softmaxJs(call, mem)
  // No key mask: WASM SIMD rows (f32 exps within 2 ulp and f32 sums), split over the threads when large.
  const C = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / C
  const masked = causal || window > 0 ? 1 : 0
  const [ya, xa] = [mem.addr(out), mem.addr(x)]
  forRows("softmax_rows", R, 6 * C, (r0, r1) => [ya, xa, r0, r1, C, f32Bits(scale), masked, causal ? 1 : 0, window, tq, qOffset])
}

/** The JS reference (and the key-mask path): max, exponentials and the sum in doubles. */
export function softmaxJs(call: KernelOf<"softmax">, mem: Memory): void {
  const { scale, causal, window, tq, heads, qOffset, x, keyMask, out } = call
  const X = mem.f32(x)
  const Y = mem.f32(out)
  const mask = keyMask === null ? null : mem.bool(keyMask)
  const C = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / C
  const e = scratchRow(C)
  for (let r = 0; r < R; r++) {
    const xr = x.offset + r * C
    const yr = out.offset + r * C
    // The plain softmax never reads tq/heads (they may be 0 then).
    let lo = 0
    let hi = C
    if (causal || window > 0) {
      const position = (r % tq) + qOffset
      if (causal) hi = Math.max(0, Math.min(C, position + 1))
      if (window > 0) lo = Math.max(0, Math.min(C, position - window + 1))
    }
    const maskRow = keyMask === null ? -1 : keyMask.offset + Math.floor(r / (heads * tq)) * C
    // Exponentials of disallowed keys stay 0 in `e`, so the final pass needs no mask test.
    e.fill(0, lo, hi)
    let max = -Infinity
    let any = false
    for (let j = lo; j < hi; j++) {
      if (maskRow >= 0 && mask![maskRow + j] === 0) continue
      any = true
      const z = X[xr + j] * scale
      if (z > max) max = z
    }
    Y.fill(0, yr, yr + C)
    if (!any) continue
    let sum = 0
    for (let j = lo; j < hi; j++) {
      if (maskRow >= 0 && mask![maskRow + j] === 0) continue
      const v = Math.exp(X[xr + j] * scale - max)
      e[j] = v
      sum += v
    }
    const inverse = 1 / sum
    for (let j = lo; j < hi; j++) Y[yr + j] = e[j] * inverse
  }
}

/** dx = p · (g − Σ_k g_k p_k) · scale, per row (WASM SIMD rows). */
function softmaxBackward({ scale, p, g, dx }: KernelOf<"softmaxBackward">, mem: Memory): void {
  const C = p.shape[p.shape.length - 1]
  const R = elementCount(p.shape) / C
  const [da, pa, ga] = [mem.addr(dx), mem.addr(p), mem.addr(g)]
  forRows("softmax_bwd_rows", R, 2 * C, (r0, r1) => [da, pa, ga, r0, r1, C, f32Bits(scale)])
}

/** The JS reference: the dot product in doubles. */
export function softmaxBackwardJs({ scale, p, g, dx }: KernelOf<"softmaxBackward">, mem: Memory): void {
  const P = mem.f32(p)
  const G = mem.f32(g)
  const DX = mem.f32(dx)
  const C = p.shape[p.shape.length - 1]
  const R = elementCount(p.shape) / C
  for (let r = 0; r < R; r++) {
    const pr = p.offset + r * C
    const gr = g.offset + r * C
    const out = dx.offset + r * C
    let dot = 0
    for (let j = 0; j < C; j++) dot += G[gr + j] * P[pr + j]
    for (let j = 0; j < C; j++) DX[out + j] = P[pr + j] * (G[gr + j] - dot) * scale
  }
}

export const softmaxKernels = { softmax, softmaxBackward } satisfies KernelTable<"softmax" | "softmaxBackward">
