import type { KernelOf } from "../../backend.js"
import type { Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"

/** Embedding lookup: out[n] = table[index[n]], or a zero row for an index outside [0, V). */
function gather({ table, index, out }: KernelOf<"gather">, mem: Memory): void {
  const T = mem.f32(table)
  const I = mem.i32(index)
  const Y = mem.f32(out)
  const [V, D] = table.shape
  const N = index.shape[0]
  for (let n = 0; n < N; n++) {
    const row = I[index.offset + n]
    const dst = out.offset + n * D
    if (row >= 0 && row < V) {
      const src = table.offset + row * D
      Y.set(T.subarray(src, src + D), dst)
    } else Y.fill(0, dst, dst + D)
  }
}

/**
 * The adjoint of gather: out = 0, then out[index[n]] += src[n] for n in order. The fixed order makes the f32
 * sums deterministic (each += rounds to f32 on store, as a sequential f32 kernel would).
 */
function scatterAdd({ src, index, out }: KernelOf<"scatterAdd">, mem: Memory): void {
  const S = mem.f32(src)
  const I = mem.i32(index)
  const Y = mem.f32(out)
  const [V, D] = out.shape
  const N = index.shape[0]
  Y.fill(0, out.offset, out.offset + V * D)
  for (let n = 0; n < N; n++) {
    const row = I[index.offset + n]
    if (row < 0 || row >= V) continue
    const s = src.offset + n * D
    const y = out.offset + row * D
    for (let d = 0; d < D; d++) Y[y + d] += S[s + d]
  }
}

export const gatherKernels = { gather, scatterAdd } satisfies KernelTable<"gather" | "scatterAdd">
