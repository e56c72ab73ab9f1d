import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forRows } from "./wasm-call.js"

/**
 * Rotary embedding, Hugging Face rotate-half convention. x: [B, H, T, Dh]; cos, sin: [Bc, T, Dh] with Bc = 1
 * broadcasting over the batch (a rank-2 [T, Dh] table is read as Bc = 1). All contiguous, offsets honoured.
 * Runs as WASM SIMD rows (rope_rows), split over the threads when large; `ropeJs` is the reference.
 *
 * forward, d < half:  out = x[d]·cos[d] − x[d+half]·sin[d]
 *          d ≥ half:  out = x[d]·cos[d] + x[d−half]·sin[d]
 * backward (the transpose of that linear map; note the sin index moves with the partner element):
 *          d < half:  out = g[d]·cos[d] + g[d+half]·sin[d+half]
 *          d ≥ half:  out = g[d]·cos[d] − g[d−half]·sin[d−half]
 */
function rope(call: KernelOf<"rope">, mem: Memory): void {
  const { backward, x, cos, sin, out } = call
  const [, H, T, Dh] = x.shape
  if (Dh < 2) return ropeJs(call, mem)
  const perBatch = cos.shape.length === 3 && cos.shape[0] !== 1 ? 1 : 0
  const [ya, xa, ca, sa] = [mem.addr(out), mem.addr(x), mem.addr(cos), mem.addr(sin)]
  forRows("rope_rows", elementCount(x.shape) / Dh, 2 * Dh, (r0, r1) => [ya, xa, ca, sa, r0, r1, T, Dh, H * T, perBatch, backward ? 1 : 0])
}

/** The JS reference. */
export function ropeJs({ backward, x, cos, sin, out }: KernelOf<"rope">, mem: Memory): void {
  const X = mem.f32(x)
  const COS = mem.f32(cos)
  const SIN = mem.f32(sin)
  const Y = mem.f32(out)
  const [B, H, T, Dh] = x.shape
  const half = Dh / 2
  const tableBatches = cos.shape.length === 3 ? cos.shape[0] : 1
  for (let b = 0; b < B; b++) {
    const tableBatch = tableBatches === 1 ? 0 : b
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const row = ((b * H + h) * T + t) * Dh
        const xr = x.offset + row
        const yr = out.offset + row
        const tableRow = (tableBatch * T + t) * Dh
        const cr = cos.offset + tableRow
        const sr = sin.offset + tableRow
        for (let d = 0; d < half; d++) {
          const lo = X[xr + d]
          const hi = X[xr + d + half]
          if (backward) {
            Y[yr + d] = lo * COS[cr + d] + hi * SIN[sr + d + half]
            Y[yr + d + half] = hi * COS[cr + d + half] - lo * SIN[sr + d]
          } else {
            Y[yr + d] = lo * COS[cr + d] - hi * SIN[sr + d]
            Y[yr + d + half] = hi * COS[cr + d + half] + lo * SIN[sr + d + half]
          }
        }
      }
    }
  }
}

export const ropeKernels = { rope } satisfies KernelTable<"rope">
