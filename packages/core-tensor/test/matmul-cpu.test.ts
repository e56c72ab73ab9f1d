import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { View } from "../src/backend.js"
import { memory } from "../src/backends/cpu/buffer.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { MC_MAX, MIN_TASK_FLOPS, NC_MAX, planGemm, type GemmPlanInput, TASKS_PER_THREAD } from "../src/backends/cpu/gemm-plan.js"
import { gemm, matmulWasm, usePrivateA } from "../src/backends/cpu/matmul.js"
import { matmulReference } from "../src/backends/cpu/matmul-reference.js"
import { claimTask, publishRanges } from "../src/backends/cpu/pool.js"
import { SCRATCH_A_BYTES, SCRATCH_B_BYTES } from "../src/backends/cpu/wasm-gemm.js"
import { wasmRuntime } from "../src/backends/cpu/wasm-runtime.js"
import { contiguousStrides } from "../src/shape.js"
import { sequence, size } from "./sequence.js"

/**
 * The CPU GEMM's task plan (gemm-plan.ts), the pool's range claiming (pool.ts), and every path the short-M
 * work added to the WASM GEMM, against the float64 JS reference: bottom-edge micro-kernels (M mod 6 = 1..5),
 * A packed per thread (gemm_fused aTag: one and several row ranges, several distinct A, a broadcast A, a job
 * split at MAX_TASKS, tags reused by the next call), B packed by the first row of tiles (row-major B) and the
 * 6-row SIMD packing of a row-major A — in all four transposes, with both register tiles.
 */
const backend = createCpuBackend()
afterAll(() => backend.destroy())

/** Same as the pool's workers: started up front so that plans see every thread (threads > 1 where the machine has them). */
beforeAll(async () => {
  await wasmRuntime().workersReady(20_000)
})


function tensorView(shape: number[], strides: number[], storage: number, seed: number): View {
  const buffer = backend.alloc(Math.max(1, storage) * 4)
  backend.write(buffer, sequence(Math.max(1, storage), seed))
  return { buffer, dtype: "float32", shape, strides, offset: 0 }
}

function output(shape: number[]): View {
  const n = Math.max(1, size(shape))
  const buffer = backend.alloc(n * 4)
  backend.write(buffer, new Uint32Array(n).fill(0x7fc00001)) // NaN junk: every element must be written
  return { buffer, dtype: "float32", shape, strides: contiguousStrides(shape), offset: 0 }
}

async function values(v: View): Promise<Float32Array> {
  const bytes = await backend.read(v.buffer, 0, size(v.shape) * 4)
  return new Float32Array(bytes.buffer, bytes.byteOffset, size(v.shape))
}

interface Case {
  batch?: number[]
  m: number
  k: number
  n: number
  transA?: boolean
  transB?: boolean
  /** A (or B) is one matrix broadcast over the batch (stride 0). */
  broadcastA?: boolean
  broadcastB?: boolean
}

/** An operand [...batch, rows, cols], stored as [rows, cols] or transposed [cols, rows] per batch entry. */
function operand(batch: number[], rows: number, cols: number, trans: boolean, broadcast: boolean, seed: number): View {
  const stored = [...batch.map((d) => (broadcast ? 1 : d)), ...(trans ? [cols, rows] : [rows, cols])]
  const st = contiguousStrides(stored)
  const r = batch.length
  const strides = [...batch.map((_, i) => (broadcast ? 0 : st[i])), ...(trans ? [st[r + 1], st[r]] : [st[r], st[r + 1]])]
  return tensorView([...batch, rows, cols], strides, size(stored), seed)
}

/**
 * C = A·B by the WASM GEMM (multi-threaded) against the float64 reference: |got − want| ≤ 1e-4 · max(1, |want|, √k)
 * (f32 accumulation over k terms of magnitude ≤ 1, in a different order).
 */
async function check(c: Case, seed: number, variant?: 8 | 16): Promise<void> {
  const batch = c.batch ?? []
  const a = operand(batch, c.m, c.k, c.transA ?? false, c.broadcastA ?? false, seed)
  const b = operand(batch, c.k, c.n, c.transB ?? false, c.broadcastB ?? false, seed + 17)
  const outShape = [...batch, c.m, c.n]
  const got = output(outShape)
  const want = output(outShape)
  matmulWasm({ kind: "matmul", a, b, out: got }, memory, { parallel: true, variant })
  matmulReference({ kind: "matmul", a, b, out: want }, memory)
  const g = await values(got)
  const w = await values(want)
  try {
    for (let i = 0; i < w.length; i++) {
      const tol = 1e-4 * Math.max(1, Math.abs(w[i]), Math.sqrt(c.k))
      if (!(Math.abs(g[i] - w[i]) <= tol)) throw new Error(`${JSON.stringify(c)} variant=${variant}: element ${i}: got ${g[i]}, expected ${w[i]}`)
    }
  } finally {
    for (const v of [a, b, got, want]) backend.free(v.buffer)
  }
}

const TRANSPOSES = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const

const plan16 = (p: Partial<GemmPlanInput> & Pick<GemmPlanInput, "M" | "N" | "K">) =>
  planGemm({ batches: 1, mr: 6, nr: 16, kcMax: 256, bScratchBytes: SCRATCH_B_BYTES, threads: 2, ...p })

describe("gemm plan", () => {
  it("64×576·576×1536 on 2 threads: all rows in one range, 48 slabs of 32 columns, K in 3 slices of 192", () => {
    const p = plan16({ M: 64, K: 576, N: 1536 })
    expect(p).toEqual({ kc: 192, rangePanels: 11, mcMax: 66, ncPanels: 2, taskCount: 48 })
  })

  it("1024³ on 2 threads: columns split first, then rows once (B re-packed once more, not 3×)", () => {
    const p = plan16({ M: 1024, K: 1024, N: 1024 })
    expect(p).toEqual({ kc: 256, rangePanels: 86, mcMax: MC_MAX, ncPanels: 4, taskCount: 32 })
  })

  it("one thread: no split beyond the widest slab", () => {
    expect(plan16({ M: 64, K: 576, N: 1536, threads: 1 })).toEqual({ kc: 192, rangePanels: 11, mcMax: 66, ncPanels: NC_MAX / 16, taskCount: 6 })
  })

  it("every plan: depth slices ≤ KC, slab within the scratch, tiles cover C, tasks not split below the floor", () => {
    const rnd = sequence(3000, 5)
    let r = 0
    const pick = (lo: number, hi: number) => lo + Math.floor(((rnd[r++] + 1) / 2) * (hi - lo + 1))
    for (let trial = 0; trial < 300; trial++) {
      const [mr, nr, kcMax] = trial % 2 === 0 ? [6, 16, 256] : [6, 8, 384]
      const input: GemmPlanInput = {
        M: pick(1, 3000),
        K: pick(1, 3000),
        N: pick(1, 3000),
        batches: pick(1, 4),
        mr,
        nr,
        kcMax,
        bScratchBytes: SCRATCH_B_BYTES,
        threads: pick(1, 8),
      }
      const p = planGemm(input)
      const { M, N, K, batches, threads } = input
      const mPanels = Math.ceil(M / mr)
      const nPanels = Math.ceil(N / nr)
      expect(p.kc).toBeLessThanOrEqual(kcMax)
      expect(Math.ceil(K / p.kc) * p.kc).toBeGreaterThanOrEqual(K)
      expect(4 * p.kc * p.ncPanels * nr).toBeLessThanOrEqual(SCRATCH_B_BYTES)
      expect(p.ncPanels).toBeGreaterThanOrEqual(1)
      expect(p.ncPanels).toBeLessThanOrEqual(nPanels)
      expect(p.rangePanels).toBeGreaterThanOrEqual(1)
      expect(p.rangePanels).toBeLessThanOrEqual(mPanels)
      expect(p.mcMax % mr).toBe(0)
      expect(p.mcMax).toBeLessThanOrEqual(Math.ceil(MC_MAX / mr) * mr)
      expect(p.taskCount).toBe(batches * Math.ceil(mPanels / p.rangePanels) * Math.ceil(nPanels / p.ncPanels))
      const single = planGemm({ ...input, threads: 1 })
      if (p.taskCount > single.taskCount) {
        // A split happened: no task below the floor, and no more tasks than wanted (one split past it at most).
        const rows = Math.min(M, p.rangePanels * mr)
        const cols = Math.min(N, p.ncPanels * nr)
        expect(2 * K * rows * cols).toBeGreaterThanOrEqual(MIN_TASK_FLOPS)
        expect(p.taskCount).toBeLessThan(4 * TASKS_PER_THREAD * threads)
      }
    }
  })

  it("packs A per thread only for short, wide products on several threads", () => {
    const panelBytes = 576 * 6 * 4
    expect(usePrivateA(2, 11 * panelBytes, 1536)).toBe(true) // the 64 × 576 × 1536 product
    expect(usePrivateA(1, 11 * panelBytes, 1536)).toBe(false) // one thread: the shared packing is the same work
    expect(usePrivateA(2, 11 * panelBytes, 256)).toBe(false) // too few columns to pay for packing twice
    expect(usePrivateA(2, SCRATCH_A_BYTES + 4, 4096)).toBe(false) // does not fit the private area
  })
})

describe("pool range claiming", () => {
  const FIRST = 4
  const STRIDE = 3
  const ctl = () => new Int32Array(FIRST + 64 * STRIDE)

  it("a thread takes its own range from the front, then steals the others' from the back", () => {
    const c = ctl()
    publishRanges(c, 10, 2, FIRST, STRIDE) // thread 0: 0..4, thread 1: 5..9
    expect([0, 1, 2].map(() => claimTask(c, 0, 2, FIRST, STRIDE))).toEqual([0, 1, 2])
    expect(claimTask(c, 1, 2, FIRST, STRIDE)).toBe(5)
    expect([3, 4].map(() => claimTask(c, 0, 2, FIRST, STRIDE))).toEqual([3, 4])
    // Thread 0's range is empty: it steals 9, 8, … while thread 1 goes on from 6.
    expect(claimTask(c, 0, 2, FIRST, STRIDE)).toBe(9)
    expect(claimTask(c, 1, 2, FIRST, STRIDE)).toBe(6)
    expect(claimTask(c, 0, 2, FIRST, STRIDE)).toBe(8)
    expect(claimTask(c, 1, 2, FIRST, STRIDE)).toBe(7)
    expect(claimTask(c, 0, 2, FIRST, STRIDE)).toBe(-1)
    expect(claimTask(c, 1, 2, FIRST, STRIDE)).toBe(-1)
  })

  it("under any interleaving every task is claimed exactly once (also fewer tasks than threads, and none)", () => {
    const rnd = sequence(20000, 11)
    let r = 0
    for (const [count, threads] of [
      [0, 2],
      [1, 2],
      [1, 5],
      [3, 8],
      [48, 2],
      [100, 3],
      [8192, 7],
    ]) {
      const c = ctl()
      publishRanges(c, count, threads, FIRST, STRIDE)
      const seen = new Uint8Array(count)
      const active = new Set(Array.from({ length: threads }, (_, t) => t))
      while (active.size > 0) {
        const t = [...active][Math.floor(((rnd[r++ % rnd.length] + 1) / 2) * active.size) % active.size]
        const index = claimTask(c, t, threads, FIRST, STRIDE)
        if (index < 0) active.delete(t)
        else seen[index]++
      }
      expect(Array.from(seen).every((x) => x === 1)).toBe(true)
    }
  })

  it("a parallel job runs each task once, for any task count", () => {
    const rt = wasmRuntime()
    const n = 64
    const a = rt.heap.alloc(4 * n * 300)
    const one = rt.heap.alloc(4 * n)
    rt.heap.f32.fill(1, one / 4, one / 4 + n)
    try {
      for (const count of [2, 3, 7, 48, 300]) {
        rt.heap.f32.fill(0, a / 4, a / 4 + n * count)
        rt.pool.begin()
        for (let i = 0; i < count; i++) rt.pool.task(rt.fn.add_vv, a + 4 * n * i, a + 4 * n * i, one, n)
        rt.run(true)
        for (let i = 0; i < n * count; i++) if (rt.heap.f32[a / 4 + i] !== 1) throw new Error(`count ${count}: element ${i} = ${rt.heap.f32[a / 4 + i]}`)
      }
    } finally {
      rt.heap.free(a, 4 * n * 300)
      rt.heap.free(one, 4 * n)
    }
  })
})

describe("wasm gemm paths for short, wide products (both register tiles)", () => {
  it("every bottom edge (M mod 6 = 0..5) in all transposes, A packed per thread, ragged N and K", async () => {
    let seed = 1
    for (const m of [61, 62, 63, 64, 65, 66])
      for (const [transA, transB] of TRANSPOSES)
        for (const variant of [8, 16] as const) await check({ m, k: 299, n: 533, transA, transB }, seed++, variant)
  })

  it("the benchmark's 64 × 576 × 1536 in all transposes (K in 3 depth slices)", async () => {
    let seed = 100
    for (const [transA, transB] of TRANSPOSES) await check({ m: 64, k: 576, n: 1536, transA, transB }, seed++)
  })

  it("M below one register tile (no B packing by the first row of tiles), K = 1..5", async () => {
    let seed = 200
    for (const m of [1, 4, 5]) for (const k of [1, 3, 5]) for (const [transA, transB] of TRANSPOSES) await check({ m, k, n: 700, transA, transB }, seed++, 16)
  })

  it("several row ranges, each packed per thread under its own tag", async () => {
    const p = plan16({ M: 1000, K: 32, N: 600 })
    expect(Math.ceil(Math.ceil(1000 / 6) / p.rangePanels)).toBeGreaterThan(1)
    let seed = 300
    for (const [transA, transB] of TRANSPOSES) await check({ m: 1000, k: 32, n: 600, transA, transB }, seed++)
  })

  it("batches: distinct A per batch, a broadcast A, a broadcast B", async () => {
    let seed = 400
    for (const [transA, transB] of TRANSPOSES) {
      await check({ batch: [3], m: 20, k: 70, n: 530, transA, transB }, seed++)
      await check({ batch: [2, 2], m: 13, k: 40, n: 520, transA, transB, broadcastA: true }, seed++)
      await check({ batch: [3], m: 9, k: 50, n: 1030, transA, transB, broadcastB: true }, seed++, 8)
    }
  })

  it("a job split at MAX_TASKS keeps each thread's packed A (a broadcast A over 8200 batches)", async () => {
    await check({ batch: [8200], m: 1, k: 1, n: 512, broadcastA: true }, 500)
  })

  it("the next call with other data in A is not served a stale per-thread packing", async () => {
    const rt = wasmRuntime()
    const [M, K, N] = [64, 100, 1024]
    const h = rt.heap
    const A1 = h.alloc(M * K * 4)
    const A2 = h.alloc(M * K * 4)
    const B = h.alloc(K * N * 4)
    const C = h.alloc(M * N * 4)
    try {
      h.f32.fill(1, A1 / 4, A1 / 4 + M * K)
      h.f32.fill(2, A2 / 4, A2 / 4 + M * K)
      h.f32.fill(0.5, B / 4, B / 4 + K * N)
      const spec = { M, N, K, batches: 1, aRow: K, aCol: 1, aOffsets: [0], b: B, bRow: N, bCol: 1, bOffsets: [0], c: C, ldc: N, cBatch: M * N, parallel: true }
      for (const [a, expected] of [
        [A1, 50],
        [A2, 100],
        [A1, 50],
      ] as const) {
        gemm({ ...spec, a })
        const c = h.f32.subarray(C / 4, C / 4 + M * N)
        expect(c.every((x) => x === expected)).toBe(true) // sums of 100 exact products: exact in f32
      }
    } finally {
      for (const [p, bytes] of [
        [A1, M * K * 4],
        [A2, M * K * 4],
        [B, K * N * 4],
        [C, M * N * 4],
      ])
        h.free(p, bytes)
    }
  })
})
