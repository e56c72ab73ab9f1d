import type { KernelOf } from "../../backend.js"
import type { Memory } from "./buffer.js"
import { batchOffset } from "./strided.js"

/**
 * Batched float32 matmul, the JS reference path (used for tiny products and as the tests' reference; the real
 * kernel is the WASM SIMD GEMM driven by matmul.ts). Dot products accumulate in JS
 * doubles and round once on store, so results are at least as accurate as an f32 GEMM (not bit-identical).
 *
 * Scheme: output columns are processed in tiles of COLUMN_TILE; within a tile, rows in groups of 4 whose
 * accumulators (4 × COLUMN_TILE doubles, 8 KiB) stay in L1, while the K × COLUMN_TILE panel of B is reused from
 * L2 by every row group. Each B element loaded feeds 4 multiply-adds. This reaches a few GFLOP/s at 512³ in V8,
 * about twice a plain i-k-j loop.
 *
 * B must have unit stride along N for the inner loop; when it doesn't (a transposed or otherwise strided B) its
 * K × N slice is packed into a contiguous scratch first. A is read with its own strides: it is touched only
 * O(M·K) times per column tile, so packing it would not pay.
 */
const COLUMN_TILE = 256
const ROW_GROUP = 4

/** Packing scratch up to this many floats (16 MiB) is kept between calls; larger ones are left to the GC. */
const KEPT_SCRATCH_FLOATS = 1 << 22

let packScratch = new Float32Array(0)
const accumulators = new Float64Array(ROW_GROUP * COLUMN_TILE)

function scratch(length: number): Float32Array {
  if (packScratch.length >= length) return packScratch
  if (length > KEPT_SCRATCH_FLOATS) return new Float32Array(length)
  packScratch = new Float32Array(Math.min(KEPT_SCRATCH_FLOATS, Math.max(length, packScratch.length * 2)))
  return packScratch
}

/**
 * Copy a strided rows × cols matrix into row-major `dst`. Walks 32 × 32 tiles so that a transposed source
 * (large column stride) is read a few cache lines at a time instead of one line per element across the
 * whole matrix, which thrashes L1/L2 when the stride is a power of two.
 */
const PACK_TILE = 32
function packRowMajor(src: Float32Array, offset: number, rowStride: number, colStride: number, rows: number, cols: number, dst: Float32Array) {
  for (let r0 = 0; r0 < rows; r0 += PACK_TILE) {
    const r1 = Math.min(rows, r0 + PACK_TILE)
    for (let c0 = 0; c0 < cols; c0 += PACK_TILE) {
      const c1 = Math.min(cols, c0 + PACK_TILE)
      for (let c = c0; c < c1; c++) {
        let s = offset + r0 * rowStride + c * colStride
        for (let r = r0; r < r1; r++, s += rowStride) dst[r * cols + c] = src[s]
      }
    }
  }
}

/** One [M, K] × [K, N] product; B rows start at `bOffset + k·bRowStride` with unit column stride. */
function gemm(
  A: Float32Array, aOffset: number, aRowStride: number, aColStride: number,
  B: Float32Array, bOffset: number, bRowStride: number,
  C: Float32Array, cOffset: number,
  M: number, N: number, K: number,
): void {
  const acc = accumulators
  const T = COLUMN_TILE
  for (let j0 = 0; j0 < N; j0 += T) {
    const width = Math.min(T, N - j0)
    for (let i = 0; i < M; i += ROW_GROUP) {
      const rows = Math.min(ROW_GROUP, M - i)
      // A short last group repeats its first row in the missing slots, keeping the inner loop branch-free;
      // the repeated rows' results are simply not stored.
      const a0 = aOffset + i * aRowStride
      const a1 = rows > 1 ? a0 + aRowStride : a0
      const a2 = rows > 2 ? a0 + 2 * aRowStride : a0
      const a3 = rows > 3 ? a0 + 3 * aRowStride : a0
      acc.fill(0)
      for (let k = 0; k < K; k++) {
        const ak = k * aColStride
        const x0 = A[a0 + ak]
        const x1 = A[a1 + ak]
        const x2 = A[a2 + ak]
        const x3 = A[a3 + ak]
        let b = bOffset + k * bRowStride + j0
        for (let j = 0; j < width; j++, b++) {
          const y = B[b]
          acc[j] += x0 * y
          acc[T + j] += x1 * y
          acc[2 * T + j] += x2 * y
          acc[3 * T + j] += x3 * y
        }
      }
      for (let r = 0; r < rows; r++) {
        const c = cOffset + (i + r) * N + j0
        const base = r * T
        for (let j = 0; j < width; j++) C[c + j] = acc[base + j]
      }
    }
  }
}

export function matmulReference({ a, b, out }: KernelOf<"matmul">, mem: Memory): void {
  const A = mem.f32(a)
  const B = mem.f32(b)
  const C = mem.f32(out)
  const rank = a.shape.length
  const batchRank = rank - 2
  const M = a.shape[rank - 2]
  const K = a.shape[rank - 1]
  const N = b.shape[rank - 1]
  const [aRow, aCol] = [a.strides[rank - 2], a.strides[rank - 1]]
  const [bRow, bCol] = [b.strides[rank - 2], b.strides[rank - 1]]
  const batches = out.shape.slice(0, batchRank).reduce((p, d) => p * d, 1)
  const packB = bCol !== 1 && N > 1
  let packedFrom = -1

  for (let batch = 0; batch < batches; batch++) {
    const aOffset = a.offset + batchOffset(a, batch, batchRank)
    let bOffset = b.offset + batchOffset(b, batch, batchRank)
    let bSource = B
    let bRowStride = bRow
    if (packB) {
      const packed = scratch(K * N)
      // A broadcast B (batch stride 0) is packed once, not once per batch.
      if (packedFrom !== bOffset) packRowMajor(B, bOffset, bRow, bCol, K, N, packed)
      packedFrom = bOffset
      bSource = packed
      bOffset = 0
      bRowStride = N
    }
    gemm(A, aOffset, aRow, aCol, bSource, bOffset, bRowStride, C, out.offset + batch * M * N, M, N, K)
  }
}
