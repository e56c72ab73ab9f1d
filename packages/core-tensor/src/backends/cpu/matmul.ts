import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import { planGemm } from "./gemm-plan.js"
import type { KernelTable } from "./kernel.js"
import { matmulReference } from "./matmul-reference.js"
import { MAX_TASKS } from "./pool.js"
import { batchOffset } from "./strided.js"
import { FUSED_FIELDS, SCRATCH_A_BYTES, SCRATCH_B_BYTES } from "./wasm-gemm.js"
import { GEMM_16, GEMM_8, wasmRuntime } from "./wasm-runtime.js"

/**
 * The matmul driver over the WASM SIMD GEMM (wasm-gemm.ts), BLIS/Goto style. Per dispatch:
 *
 *  0. plan (gemm-plan.ts): C is cut into tasks of (batch, row range, column slab). On several threads the plan
 *     splits columns first (free: B is packed per row range) into ~16 tasks per thread of ≥ 1 MFLOP, so that a
 *     thread arriving late or descheduled by other work costs about one small task.
 *  1. pack A: every distinct A matrix of the batch (a broadcast batch dim, stride 0, is packed once) into
 *     MR-row panels in a scratch block of the shared heap — on the calling thread when small, else split over
 *     the threads. Packing reads operands through their strides, so transposes and broadcasts cost nothing
 *     extra. For a short, wide product on several threads (usePrivateA) there is no such step: each thread's
 *     first task of a row range packs A into that thread's own scratch instead.
 *  2. compute: a task walks the depth in slices of ≤ KC: per slice it packs its KC × NC slab of B (again
 *     through its strides) into its thread's scratch, where it stays in L2, and multiplies it by each MC-row
 *     block of packed A (an MC × KC block, ~180 KiB, also L2-resident) with the micro-kernel sweeping MR × NR
 *     tiles (a KC × NR panel of B stays in L1). When B's rows are contiguous (B not transposed) the slab is not
 *     packed in a pass of its own: the first row of tiles reads B from its source and packs it on the way.
 *     Bottom-edge tiles (M mod MR rows) have micro-kernels of their own.
 *
 * Tasks are claimed by the main thread and the workers, each from its own range first (pool.ts). Stacked
 * batches against a shared B (a linear layer over [batch, T, in]) are folded into one product first. Tiny
 * products use the JS reference.
 *
 * Blocking for this machine class (AMD Zen 4 EPYC: 32 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3): KC = 256
 * for the 6 × 16 tile (384 for 6 × 8; a KC × NR panel of B and a KC × 6 panel of A fit L1), MC = 120 (20 panels
 * of 6 rows), NC = 256: B slab 256 KiB + A block 120 KiB in L2. Measured per core on 512×576×1536: ~113 GFLOP/s
 * with the revectorized 6 × 16 tile (the AVX2 peak: 32 flops/cycle at ~3.6 GHz), ~55 with the 128-bit 6 × 8 one.
 * On 64×576×1536 (2 threads, quiet): ~0.57 ms, 1.96× one thread (1.12 ms).
 */

/** Columns of B per thread from which each thread packs its own copy of A (usePrivateA). */
const PRIVATE_A_MIN_COLUMNS = 256
/** Below this many flops a product runs single-threaded, below SMALL_FLOPS in JS. */
const PARALLEL_FLOPS = 1 << 21
const SMALL_FLOPS = 1 << 12
/** Packed bytes per A-packing task (so packing a big operand is split over the threads too). */
const PACK_TASK_BYTES = 1 << 17
const PARALLEL_PACK_BYTES = 1 << 19

function matmul(call: KernelOf<"matmul">, mem: Memory): void {
  const { a, b, out } = call
  const rank = a.shape.length
  const flops = 2 * a.shape[rank - 2] * a.shape[rank - 1] * b.shape[rank - 1] * elementCount(out.shape.slice(0, rank - 2))
  if (flops < SMALL_FLOPS) return matmulReference(call, mem)
  matmulWasm(call, mem)
}

/**
 * The WASM GEMM for any size (K = 0 included: it writes zeros). `parallel` forces the thread split on or off
 * (tests); by default it is on from PARALLEL_FLOPS.
 */
export function matmulWasm(call: KernelOf<"matmul">, mem: Memory, options: { parallel?: boolean; variant?: 8 | 16 } = {}): void {
  const { a, b, out } = call
  const rank = a.shape.length
  const batchRank = rank - 2
  const M = a.shape[rank - 2]
  const K = a.shape[rank - 1]
  const N = b.shape[rank - 1]
  const batches = elementCount(out.shape.slice(0, batchRank))
  const aOffsets = new Array<number>(batches)
  const bOffsets = new Array<number>(batches)
  for (let t = 0; t < batches; t++) {
    aOffsets[t] = batchOffset(a, t, batchRank)
    bOffsets[t] = batchOffset(b, t, batchRank)
  }
  gemm({
    M,
    N,
    K,
    batches,
    a: mem.addr(a),
    aRow: a.strides[rank - 2],
    aCol: a.strides[rank - 1],
    aOffsets,
    b: mem.addr(b),
    bRow: b.strides[rank - 2],
    bCol: b.strides[rank - 1],
    bOffsets,
    c: mem.addr(out),
    ldc: N,
    cBatch: M * N,
    parallel: options.parallel,
    variant: options.variant,
  })
}

/**
 * A batch of row-major-stacked A matrices against one shared B (a linear layer over [batch, T, in]) is one
 * product with batches·M rows: fold it, so blocks span the batch boundary and B is walked once.
 */
function foldBatches(spec: GemmSpec): GemmSpec {
  const { M, batches, aOffsets, bOffsets } = spec
  if (batches <= 1 || spec.cBatch !== M * spec.ldc) return spec
  const a0 = aOffsets[0]
  const b0 = bOffsets[0]
  for (let t = 1; t < batches; t++) if (aOffsets[t] !== a0 + t * M * spec.aRow || bOffsets[t] !== b0) return spec
  return { ...spec, M: M * batches, batches: 1, aOffsets: [a0], bOffsets: [b0], cBatch: M * batches * spec.ldc }
}

/** One batched product C[t] = A[t] · B[t] on heap addresses; strides and offsets in elements. */
export interface GemmSpec {
  readonly M: number
  readonly N: number
  readonly K: number
  readonly batches: number
  /** Heap byte address of A[0][0, 0]; A[t][m, k] is at a + 4·(aOffsets[t] + m·aRow + k·aCol). */
  readonly a: number
  readonly aRow: number
  readonly aCol: number
  readonly aOffsets: ArrayLike<number>
  readonly b: number
  readonly bRow: number
  readonly bCol: number
  readonly bOffsets: ArrayLike<number>
  /** C[t][m, n] is at c + 4·(t·cBatch + m·ldc + n); written, never read. */
  readonly c: number
  readonly ldc: number
  readonly cBatch: number
  /** Force the thread split on or off; default: on from PARALLEL_FLOPS. */
  readonly parallel?: boolean
  /** Force a GEMM variant (tests); default: the runtime's calibrated one. */
  readonly variant?: 8 | 16
}

export function gemm(spec: GemmSpec): void {
  spec = foldBatches(spec)
  const { M, N, K, batches } = spec
  if (M === 0 || N === 0 || batches === 0) return
  const rt = wasmRuntime()
  const heap = rt.heap
  if (K === 0) {
    for (let t = 0; t < batches; t++)
      for (let m = 0; m < M; m++) {
        const row = spec.c / 4 + t * spec.cBatch + m * spec.ldc
        heap.f32.fill(0, row, row + N)
      }
    return
  }
  const flops = 2 * M * N * K * batches
  const pool = rt.pool
  const variant = spec.variant === 8 ? GEMM_8 : spec.variant === 16 ? GEMM_16 : rt.gemm
  const { mr, nr, suffix } = variant
  const fnPackA = rt.fn[`pack_a${suffix}`]
  const fnFused = rt.fn[`gemm_fused${suffix}`]
  const mPanels = Math.ceil(M / mr)
  const aPanelBytes = K * mr * 4
  const aPackBytes = mPanels * aPanelBytes

  // Distinct A matrices (by element offset: a broadcast batch dim is packed once) and each batch's slot.
  const aSlot = new Map<number, number>()
  const aOf = new Array<number>(batches)
  for (let t = 0; t < batches; t++) {
    const ao = spec.aOffsets[t]
    if (!aSlot.has(ao)) aSlot.set(ao, aSlot.size)
    aOf[t] = aSlot.get(ao)!
  }
  const parallel = spec.parallel ?? flops >= PARALLEL_FLOPS
  const threads = parallel ? pool.threads : 1

  // Tasks: batch × row range × column slab (gemm-plan.ts: columns first, many small tasks when parallel).
  const plan = planGemm({ M, N, K, batches, mr, nr, kcMax: variant.kc, bScratchBytes: SCRATCH_B_BYTES, threads })
  const { kc, rangePanels, mcMax, ncPanels, taskCount } = plan
  const slabCols = ncPanels * nr
  const privateA = usePrivateA(threads, rangePanels * aPanelBytes, N)
  const packBytes = privateA ? 0 : aSlot.size * aPackBytes

  const RECORD = 4 * FUSED_FIELDS.length
  const scratchBytes = packBytes + Math.min(taskCount, MAX_TASKS) * RECORD
  const scratch = heap.alloc(scratchBytes)
  const packedA = (slot: number) => scratch + slot * aPackBytes
  const records = scratch + packBytes
  try {
    // ---- 1. pack A into the shared scratch (on the calling thread when small), unless each thread packs its own ----
    if (!privateA) {
      const packParallel = spec.parallel ?? packBytes >= PARALLEL_PACK_BYTES
      pool.begin()
      const aPanelsPerTask = Math.max(1, Math.floor(PACK_TASK_BYTES / aPanelBytes))
      for (const [offset, slot] of aSlot)
        for (let p = 0; p < mPanels; p += aPanelsPerTask) {
          if (pool.pending >= MAX_TASKS) rt.run(packParallel), pool.begin()
          pool.task(fnPackA, packedA(slot) + p * aPanelBytes, spec.a + offset * 4, M, K, spec.aRow * 4, spec.aCol * 4, p, Math.min(mPanels, p + aPanelsPerTask), 0, K)
        }
      rt.run(packParallel)
    } else rt.resetPrivateA()

    // ---- 2. compute: each task packs its slabs of B into its thread's scratch (gemm_fused) ----
    const I = heap.i32
    const ldc = spec.ldc * 4
    const rangeCount = Math.ceil(mPanels / rangePanels)
    let slot = 0
    pool.begin()
    for (let t = 0; t < batches; t++) {
      const aOffset = spec.aOffsets[t]
      const pA = privateA ? 0 : packedA(aOf[t])
      const bBase = spec.b + 4 * spec.bOffsets[t]
      const cBase = spec.c + 4 * t * spec.cBatch
      for (let ip = 0; ip < mPanels; ip += rangePanels) {
        const i0 = ip * mr
        const rows = Math.min(M - i0, rangePanels * mr)
        // A private packing is named by (distinct A, row range): unique within this call, never 0.
        const aTag = privateA ? 1 + aOf[t] * rangeCount + ip / rangePanels : 0
        for (let j0 = 0; j0 < N; j0 += slabCols) {
          if (pool.pending >= MAX_TASKS) rt.run(parallel), pool.begin(), (slot = 0)
          const r = (records + slot * RECORD) / 4
          // FUSED_FIELDS: pA, aps, bSrc, bps, bks, nc, pC, ldc, M, K, kcMax, mcMax, aSrc, aRowStride, aColStride, aTag
          I[r] = privateA ? 0 : pA + ip * aPanelBytes
          I[r + 1] = aPanelBytes
          I[r + 2] = bBase + 4 * j0 * spec.bCol
          I[r + 3] = 4 * spec.bCol
          I[r + 4] = 4 * spec.bRow
          I[r + 5] = Math.min(N - j0, slabCols)
          I[r + 6] = cBase + i0 * ldc + 4 * j0
          I[r + 7] = ldc
          I[r + 8] = rows
          I[r + 9] = K
          I[r + 10] = kc
          I[r + 11] = mcMax
          I[r + 12] = privateA ? spec.a + 4 * (aOffset + i0 * spec.aRow) : 0
          I[r + 13] = 4 * spec.aRow
          I[r + 14] = 4 * spec.aCol
          I[r + 15] = aTag
          pool.task(fnFused, records + slot * RECORD)
          slot++
        }
      }
    }
    rt.run(parallel)
  } finally {
    heap.free(scratch, scratchBytes)
  }
}

/**
 * Should each thread pack A itself (into its scratch, once per row range: gemm_fused's aTag) rather than the
 * calling thread packing it once into shared memory before the job? For a short, wide product (64 × 576 ·
 * 576 × 1536) the shared packing is a serial step, and a slow one: the buffer was last read by the other
 * threads, so every line written costs a cross-core invalidation (78 µs measured against 12 µs single-threaded,
 * an eighth of the whole product) — and the others then read it back across cores. Packing privately
 * duplicates the packing work per thread (in parallel, into each thread's own cache), which pays while each
 * thread multiplies that A by ≥ PRIVATE_A_MIN_COLUMNS columns of B, and when the packing fits the private area.
 */
export function usePrivateA(threads: number, rangePackBytes: number, N: number): boolean {
  return threads > 1 && rangePackBytes <= SCRATCH_A_BYTES && N >= PRIVATE_A_MIN_COLUMNS * threads
}

export const matmulKernels = { matmul } satisfies KernelTable<"matmul">
