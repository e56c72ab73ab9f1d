import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { f32Bits, forRows } from "./wasm-call.js"

/**
 * RMSNorm over the last axis (x: [R, D], contiguous; offsets honoured), as WASM SIMD rows (rmsnorm_rows; the
 * sum of squares in f64 lanes) split over the threads when large; the JS loops below are the reference. The mean of squares accumulates in
 * doubles; rstd is rounded to f32 once and that stored value is what both out and the backward pass use, so
 * forward and backward agree exactly. out follows LlamaRMSNorm's order: weight · f32(x · rstd).
 */
function rmsNorm(call: KernelOf<"rmsNorm">, mem: Memory): void {
  const { eps, x, weight, out, rstd } = call
  const D = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / D
  if (D < 4) return rmsNormJs(call, mem)
  const [xa, wa, oa, sa] = [mem.addr(x), mem.addr(weight), mem.addr(out), mem.addr(rstd)]
  forRows("rmsnorm_rows", R, 2 * D, (r0, r1) => [oa, sa, xa, wa, r0, r1, D, f32Bits(eps)])
}

export function rmsNormJs({ eps, x, weight, out, rstd }: KernelOf<"rmsNorm">, mem: Memory): void {
  const X = mem.f32(x)
  const W = mem.f32(weight)
  const Y = mem.f32(out)
  const S = mem.f32(rstd)
  const D = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / D
  for (let r = 0; r < R; r++) {
    const xr = x.offset + r * D
    const yr = out.offset + r * D
    let sumSquares = 0
    for (let d = 0; d < D; d++) sumSquares += X[xr + d] * X[xr + d]
    const s = Math.fround(1 / Math.sqrt(sumSquares / D + eps))
    S[rstd.offset + r] = s
    for (let d = 0; d < D; d++) Y[yr + d] = W[weight.offset + d] * Math.fround(X[xr + d] * s)
  }
}

/** dx = rstd · (gw − h · mean(gw · h)), h = x · rstd, gw = g · weight; the mean accumulates in doubles. */
function rmsNormBackward(call: KernelOf<"rmsNormBackward">, mem: Memory): void {
  const { x, weight, rstd, g, dx } = call
  const D = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / D
  if (D < 4) return rmsNormBackwardJs(call, mem)
  const [da, xa, wa, sa, ga] = [mem.addr(dx), mem.addr(x), mem.addr(weight), mem.addr(rstd), mem.addr(g)]
  forRows("rmsnorm_bwd_rows", R, 2 * D, (r0, r1) => [da, xa, wa, sa, ga, r0, r1, D])
}

export function rmsNormBackwardJs({ x, weight, rstd, g, dx }: KernelOf<"rmsNormBackward">, mem: Memory): void {
  const X = mem.f32(x)
  const W = mem.f32(weight)
  const S = mem.f32(rstd)
  const G = mem.f32(g)
  const DX = mem.f32(dx)
  const D = x.shape[x.shape.length - 1]
  const R = elementCount(x.shape) / D
  for (let r = 0; r < R; r++) {
    const xr = x.offset + r * D
    const gr = g.offset + r * D
    const s = S[rstd.offset + r]
    let dot = 0
    for (let d = 0; d < D; d++) dot += G[gr + d] * W[weight.offset + d] * X[xr + d] * s
    const mean = dot / D
    const out = dx.offset + r * D
    for (let d = 0; d < D; d++) DX[out + d] = s * (G[gr + d] * W[weight.offset + d] - X[xr + d] * s * mean)
  }
}

export const normKernels = { rmsNorm, rmsNormBackward } satisfies KernelTable<"rmsNorm" | "rmsNormBackward">
