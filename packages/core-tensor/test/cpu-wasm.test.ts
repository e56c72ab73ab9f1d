import { afterAll, describe, expect, it } from "vitest"
import { specOf, type KernelCall, type View } from "../src/backend.js"
import { memory } from "../src/backends/cpu/buffer.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { Heap, sizeClass } from "../src/backends/cpu/heap.js"
import { matmulWasm } from "../src/backends/cpu/matmul.js"
import { matmulReference } from "../src/backends/cpu/matmul-reference.js"
import { attentionKernels } from "../src/backends/cpu/attention.js"
import { fastAttentionKernels } from "../src/backends/cpu/attention-fast.js"
import { crossEntropyBackwardJs, crossEntropyJs } from "../src/backends/cpu/cross-entropy.js"
import { rmsNormBackwardJs, rmsNormJs } from "../src/backends/cpu/norm.js"
import { adamwJs } from "../src/backends/cpu/optim.js"
import { ropeJs } from "../src/backends/cpu/rope.js"
import { softmaxBackwardJs, softmaxJs } from "../src/backends/cpu/softmax.js"
import { siluMulBackwardJs, siluMulJs } from "../src/backends/cpu/swiglu.js"
import { defaultThreadCount } from "../src/backends/cpu/pool.js"
import { Runtime, wasmRuntime } from "../src/backends/cpu/wasm-runtime.js"
import { Device, ops, Rng } from "../src/index.js"
import { contiguousStrides } from "../src/shape.js"
import { sequence, size } from "./sequence.js"

/**
 * The CPU backend's WASM machinery: the generated SIMD GEMM against the JS reference kernel over many shapes and
 * strides (single- and multi-threaded), the shared-heap allocator, and several CPU devices sharing one process.
 */
const backend = createCpuBackend()
afterAll(() => backend.destroy())


/** A float32 view of `shape` over a fresh buffer of `storage` elements with given strides and offset. */
function view(shape: number[], strides: number[], offset: number, storage: number, seed: number): View {
  const buffer = backend.alloc(Math.max(1, storage) * 4)
  backend.write(buffer, sequence(Math.max(1, storage), seed))
  return { buffer, dtype: "float32", shape, strides, offset }
}

function output(shape: number[]): View {
  const n = size(shape)
  const buffer = backend.alloc(Math.max(1, n) * 4)
  backend.write(buffer, new Uint32Array(Math.max(1, n)).fill(0x7fc00001)) // NaN junk: every element must be written
  return { buffer, dtype: "float32", shape, strides: contiguousStrides(shape), offset: 0 }
}

async function values(v: View): Promise<Float32Array> {
  const bytes = await backend.read(v.buffer, v.offset * 4, size(v.shape) * 4)
  return new Float32Array(bytes.buffer, bytes.byteOffset, size(v.shape))
}

interface Case {
  batch: number[]
  m: number
  k: number
  n: number
  transA?: boolean
  transB?: boolean
  /** Batch dims (by index) broadcast with stride 0, per operand. */
  broadcastA?: number[]
  broadcastB?: number[]
  offset?: number
}

/** Operand views for a case: a [...batch, M, K] (maybe a transposed [K, M] layout), likewise b. */
function operands(c: Case, seed: number): { a: View; b: View } {
  const make = (rows: number, cols: number, trans: boolean, broadcast: number[], s: number): View => {
    // Storage: contiguous [...batch', rows, cols] or [...batch', cols, rows] for a transpose, batch' with
    // broadcast dims squeezed to 1 (stride 0).
    const inner = trans ? [cols, rows] : [rows, cols]
    const batchDims = c.batch.map((d, i) => (broadcast.includes(i) ? 1 : d))
    const stored = [...batchDims, ...inner]
    const st = contiguousStrides(stored)
    const r = c.batch.length
    const strides = c.batch.map((_, i) => (broadcast.includes(i) ? 0 : st[i]))
    strides.push(...(trans ? [st[r + 1], st[r]] : [st[r], st[r + 1]]))
    const offset = c.offset ?? 0
    return view([...c.batch, rows, cols], strides, offset, size(stored) + offset, s)
  }
  return { a: make(c.m, c.k, c.transA ?? false, c.broadcastA ?? [], seed), b: make(c.k, c.n, c.transB ?? false, c.broadcastB ?? [], seed + 17) }
}

async function check(c: Case, seed: number, parallel: boolean, variant?: 8 | 16): Promise<void> {
  const { a, b } = operands(c, seed)
  const outShape = [...c.batch, c.m, c.n]
  const got = output(outShape)
  const want = output(outShape)
  matmulWasm({ kind: "matmul", a, b, out: got }, memory, { parallel, variant })
  matmulReference({ kind: "matmul", a, b, out: want }, memory)
  const g = await values(got)
  const w = await values(want)
  for (let i = 0; i < w.length; i++) {
    // f32 accumulation vs the reference's doubles: relative 1e-4 of the dot product's magnitude scale.
    const tol = 1e-4 * Math.max(1, Math.abs(w[i]), Math.sqrt(c.k))
    if (!(Math.abs(g[i] - w[i]) <= tol)) throw new Error(`${JSON.stringify(c)} parallel=${parallel} variant=${variant}: element ${i}: got ${g[i]}, expected ${w[i]}`)
  }
  for (const v of [a, b, got, want]) backend.free(v.buffer)
}

const edgeCases: Case[] = [
  { batch: [], m: 1, k: 1, n: 1 },
  { batch: [], m: 1, k: 37, n: 1 },
  { batch: [], m: 1, k: 64, n: 200 }, // M = 1
  { batch: [], m: 200, k: 64, n: 1 }, // N = 1
  { batch: [], m: 6, k: 8, n: 8 }, // exactly one register tile
  { batch: [], m: 7, k: 9, n: 9 }, // one tile plus edges both ways
  { batch: [], m: 12, k: 385, n: 16 }, // K just over one depth slice
  { batch: [], m: 125, k: 769, n: 771 }, // several blocks and slices, ragged everywhere
  { batch: [], m: 33, k: 0, n: 20 }, // K = 0: zeros
  { batch: [], m: 50, k: 40, n: 30, offset: 13 }, // non-zero, unaligned view offsets
]

describe("wasm gemm vs the JS reference (both register tiles: 6 × 8, and 6 × 16 as revectorized when available)", () => {
  it("edge shapes: 1×1×1, M or N = 1, tile edges, K = 0, unaligned offsets", async () => {
    let seed = 1
    for (const c of edgeCases)
      for (const [transA, transB] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const)
        for (const parallel of [false, true]) for (const variant of [8, 16] as const) await check({ ...c, transA, transB }, seed++, parallel, variant)
  })

  it("random shapes, transposes and batch broadcasts (rank ≤ 4)", async () => {
    const rnd = sequence(4000, 99)
    let r = 0
    const pick = (lo: number, hi: number) => lo + Math.floor(((rnd[r++ % rnd.length] + 1) / 2) * (hi - lo + 1))
    for (let trial = 0; trial < 60; trial++) {
      const rank = pick(0, 4)
      const batch = Array.from({ length: Math.min(rank, 4) }, () => pick(1, 3))
      const broadcastA = batch.map((_, i) => i).filter(() => pick(0, 3) === 0)
      const broadcastB = batch.map((_, i) => i).filter(() => pick(0, 3) === 0)
      const c: Case = {
        batch,
        m: pick(1, 40),
        k: pick(0, 70),
        n: pick(1, 40),
        transA: pick(0, 1) === 1,
        transB: pick(0, 1) === 1,
        broadcastA,
        broadcastB,
        offset: pick(0, 5),
      }
      await check(c, 1000 + trial, trial % 2 === 0, trial % 3 === 0 ? 8 : 16)
    }
  })

  it("runs on the worker threads when the pool is up", async () => {
    const rt = wasmRuntime()
    const stats = () => rt.pool.stats()
    // The backend started the workers; wait (bounded) until they are up. A single-core machine has none, and then
    // the main thread does it all.
    await rt.workersReady(20_000)
    const before = stats().workerTasks
    const until = Date.now() + 20_000
    let i = 0
    do await check({ batch: [2], m: 150, k: 300, n: 170, transB: i % 2 === 1 }, 7 + i++, true)
    while (stats().workers > 0 && stats().workerTasks === before && Date.now() < until)
    if (stats().workers > 0) expect(stats().workerTasks).toBeGreaterThan(before)
  })
})

describe("thread pool", () => {
  it("starts workers with the first user, runs jobs on them, stops with the last user and restarts", async () => {
    const rt = new Runtime() // a private runtime (own module instance and pool) over the shared heap
    const stats = () => rt.pool.stats()
    expect(stats().workers).toBe(0)
    rt.acquire()
    const expected = defaultThreadCount() - 1
    expect(stats().workers).toBe(Math.max(0, expected))
    expect(await rt.workersReady(20_000)).toBe(true)
    expect(stats().ready).toBe(stats().workers)
    // A job of many small tasks: a[i] = a[i] + b[i] over disjoint chunks, all threads claiming dynamically.
    const n = 1 << 16
    const a = rt.heap.alloc(4 * n)
    const b = rt.heap.alloc(4 * n)
    const job = () => {
      rt.heap.f32.fill(1, a / 4, a / 4 + n)
      rt.heap.f32.fill(2, b / 4, b / 4 + n)
      rt.pool.begin()
      for (let i = 0; i < n; i += 256) rt.pool.task(rt.fn.add_vv, a + 4 * i, a + 4 * i, b + 4 * i, 256)
      rt.run(true)
      for (let i = 0; i < n; i++) if (rt.heap.f32[a / 4 + i] !== 3) throw new Error(`element ${i}: ${rt.heap.f32[a / 4 + i]}`)
    }
    // Claiming is dynamic, so on a fast core the calling thread can finish a small job before a worker wakes:
    // repeat (bounded) until a worker has taken a task — if none ever does, the pool is broken and this fails.
    const until = Date.now() + 20_000
    do job()
    while (stats().workers > 0 && stats().workerTasks === 0 && Date.now() < until)
    if (stats().workers > 0) expect(stats().workerTasks).toBeGreaterThan(0)
    rt.release()
    expect(stats().workers).toBe(0)
    job() // no user: runs on the calling thread only
    rt.acquire()
    expect(stats().workers).toBe(Math.max(0, expected))
    job()
    rt.release()
    rt.heap.free(a, 4 * n)
    rt.heap.free(b, 4 * n)
  })

  it("a trap inside a task surfaces as an error and leaves the pool usable", () => {
    const rt = wasmRuntime()
    const bad = 0xfffffff0 // 16 bytes below 4 GiB: a 64-element access runs past the memory and traps
    rt.pool.begin()
    rt.pool.task(rt.fn.add_vv, bad, bad, bad, 64)
    expect(() => rt.run(false)).toThrow()
    // In a parallel job the trapping task may run on a worker: the job still completes and then throws.
    const ok = rt.heap.alloc(4096)
    rt.pool.begin()
    for (let i = 0; i < 16; i++) rt.pool.task(rt.fn.add_vv, ok, ok, ok, 64)
    rt.pool.task(rt.fn.add_vv, bad, bad, bad, 64)
    for (let i = 0; i < 16; i++) rt.pool.task(rt.fn.add_vv, ok, ok, ok, 64)
    expect(() => rt.run(true)).toThrow()
    rt.pool.begin()
    rt.pool.task(rt.fn.add_vv, ok, ok, ok, 64)
    rt.pool.task(rt.fn.add_vv, ok, ok, ok, 64)
    rt.run(true)
    rt.heap.free(ok, 4096)
  })
})

describe("shared heap allocator", () => {
  it("size classes are 64-byte aligned with at most 25% slack", () => {
    for (const bytes of [1, 63, 64, 65, 200, 257, 1000, 4097, 123457, 80_000_000]) {
      const c = sizeClass(bytes)
      expect(c % 64).toBe(0)
      expect(c).toBeGreaterThanOrEqual(bytes)
      if (bytes > 256) expect(c / bytes).toBeLessThanOrEqual(1.25)
    }
  })

  it("reuses freed blocks of a class, most recent first", () => {
    const h = new Heap(1, 64)
    const a = h.alloc(1000)
    const b = h.alloc(1000)
    h.free(a, 1000)
    h.free(b, 1000)
    expect(h.alloc(1000)).toBe(b)
    expect(h.alloc(990)).toBe(a) // same class
  })

  it("grows, keeping contents, and re-made views cover the new memory", () => {
    const h = new Heap(1, 64)
    const first = h.alloc(40_000)
    h.f32.fill(3.5, first / 4, first / 4 + 10_000)
    const generation = h.generation
    const big = h.alloc(500_000) // more than the initial page: grows
    expect(h.generation).toBeGreaterThan(generation)
    expect(h.byteLength).toBeGreaterThanOrEqual(big + 500_000)
    expect(h.f32.length * 4).toBe(h.byteLength)
    expect(h.f32[first / 4 + 9_999]).toBe(3.5)
    h.f32[(big + 499_996) / 4] = 1
  })

  it("never hands out overlapping live blocks under random alloc/free, and coalesces when full", () => {
    const h = new Heap(1, 48) // 3 MiB cap
    const live = new Map<number, number>()
    const rnd = sequence(20000, 5)
    let r = 0
    for (let step = 0; step < 4000; step++) {
      const u = (rnd[r++] + 1) / 2
      if (live.size > 0 && (u < 0.45 || live.size > 200)) {
        const keys = [...live.keys()]
        const key = keys[Math.floor(((rnd[r++] + 1) / 2) * keys.length) % keys.length]
        h.free(key, live.get(key)!)
        live.delete(key)
        continue
      }
      const bytes = 1 + Math.floor(((rnd[r++] + 1) / 2) ** 3 * 60_000)
      let offset: number
      try {
        offset = h.alloc(bytes)
      } catch (e) {
        expect(String(e)).toMatch(/out of memory/)
        continue
      }
      expect(offset % 64).toBe(0)
      expect(offset + sizeClass(bytes)).toBeLessThanOrEqual(h.byteLength)
      for (const [o, n] of live) {
        const overlap = offset < o + sizeClass(n) && o < offset + sizeClass(bytes)
        if (overlap) throw new Error(`block [${offset}, +${sizeClass(bytes)}) overlaps live [${o}, +${sizeClass(n)})`)
      }
      live.set(offset, bytes)
    }
    // Free everything; then one block as big as (almost) the whole cap must fit again after coalescing.
    for (const [o, n] of live) h.free(o, n)
    const whole = h.alloc(2_500_000)
    expect(whole).toBeGreaterThan(0)
  })

  it("reports running out of the 4 GiB-class cap as a RangeError", () => {
    const h = new Heap(1, 4)
    h.alloc(200_000)
    expect(() => h.alloc(100_000)).toThrow(RangeError)
  })
})

describe("several cpu devices in one process", () => {
  it("Device.create resolves with the worker threads up, so the first products run on every thread", async () => {
    const dev = await Device.create("cpu")
    const { workers, ready } = wasmRuntime().pool.stats()
    expect(workers).toBe(Math.max(0, defaultThreadCount() - 1))
    expect(ready).toBe(workers)
    dev.destroy()
  })

  it("interleaved dispatches on two devices share the heap and the pool safely", async () => {
    const d1 = await Device.create("cpu")
    const d2 = await Device.create("cpu")
    const rng = new Rng(3)
    const a1 = d1.randn([130, 90], rng)
    const b1 = d1.randn([90, 110], rng)
    const a2 = d2.tensor(await a1.data(), [130, 90])
    const b2 = d2.tensor(await b1.data(), [90, 110])
    const outs1 = []
    const outs2 = []
    for (let i = 0; i < 5; i++) {
      outs1.push(ops.matmul(a1, b1))
      outs2.push(ops.matmul(ops.transpose(ops.transpose(a2, 0, 1), 0, 1), b2))
    }
    const ref = await outs1[0].data()
    for (const t of [...outs1, ...outs2]) expect(Array.from(await t.data())).toEqual(Array.from(ref))
    // Destroying one device leaves the other (and the shared workers) working.
    d1.destroy()
    const again = await ops.matmul(a2, b2).data()
    expect(Array.from(again)).toEqual(Array.from(ref))
    d2.destroy()
  })

  it("a freed buffer of one device fails loudly; a destroyed device frees its buffers", async () => {
    const local = createCpuBackend()
    const buffer = local.alloc(64)
    local.free(buffer)
    expect(() => local.write(buffer, new Uint8Array(4))).toThrow(/freed/)
    const heap = wasmRuntime().heap
    const live = heap.liveBytes
    const kept = local.alloc(1 << 20)
    expect(heap.liveBytes).toBeGreaterThan(live)
    local.destroy()
    expect(heap.liveBytes).toBe(live)
    expect(() => local.alloc(4)).toThrow(/destroyed/)
    void kept
  })

  it("dispatch through the backend uses the wasm kernel for large products", async () => {
    const a = view([64, 96], [96, 1], 0, 64 * 96, 11)
    const b = view([96, 80], [1, 96], 0, 96 * 80, 12) // transposed storage
    const got = output([64, 80])
    const want = output([64, 80])
    const call: KernelCall = { kind: "matmul", a, b, out: got }
    backend.dispatch(backend.compile(specOf(call)), call)
    matmulReference({ kind: "matmul", a, b, out: want }, memory)
    const g = await values(got)
    const w = await values(want)
    for (let i = 0; i < w.length; i++) expect(Math.abs(g[i] - w[i])).toBeLessThan(1e-4 * Math.max(1, Math.abs(w[i])))
  })
})

// ---- element-wise, row and optimizer kernels: the WASM paths against the JS references ----

function run(call: KernelCall): void {
  backend.dispatch(backend.compile(specOf(call)), call)
}

/** A contiguous float32 tensor of `shape` with values in [lo, hi), after `pad` junk elements. */
function f32(shape: number[], seed: number, lo = -1, hi = 1, pad = 3): View {
  const n = size(shape)
  const values = sequence(n + pad, seed).map((v) => lo + ((v + 1) / 2) * (hi - lo))
  const buffer = backend.alloc((n + pad) * 4)
  backend.write(buffer, values)
  return { buffer, dtype: "float32", shape, strides: contiguousStrides(shape), offset: pad }
}

function i32(values: number[]): View {
  const buffer = backend.alloc(values.length * 4)
  backend.write(buffer, new Int32Array(values))
  return { buffer, dtype: "int32", shape: [values.length], strides: [1], offset: 0 }
}

async function expectNear(what: string, got: View, want: View | Float32Array | number[], rtol: number, atol = rtol): Promise<void> {
  const g = await values(got)
  const w = ArrayBuffer.isView(want) || Array.isArray(want) ? want : await values(want as View)
  expect(g.length).toBe(w.length)
  for (let i = 0; i < w.length; i++) {
    const ok = Number.isNaN(w[i]) ? Number.isNaN(g[i]) : g[i] === w[i] || Math.abs(g[i] - w[i]) <= atol + rtol * Math.abs(w[i])
    if (!ok) throw new Error(`${what}: element ${i}: got ${g[i]}, expected ${w[i]}`)
  }
}

/** Sizes below and above the thread split, with ragged tails. */
const SIZES = [5, 67, 1001, 300_003]

describe("wasm element-wise kernels vs references", () => {
  it("unary neg / reciprocal / sqrt / exp, contiguous and strided", async () => {
    const fns: Record<string, (x: number) => number> = { neg: (x) => -x, reciprocal: (x) => 1 / x, sqrt: Math.sqrt, exp: Math.exp }
    for (const n of SIZES)
      for (const [op, fn] of Object.entries(fns)) {
        const x = f32([n], n, op === "exp" ? -90 : 0.01, op === "exp" ? 90 : 4)
        const out = output([n])
        run({ kind: "unary", op: op as "neg", x, out })
        const xs = await values(x)
        const want = new Float32Array(n).map((_, i) => fn(xs[i]))
        // exp is within 2 ulp (and flushes results below 2^-126 to 0); the others are exact f32 results.
        if (op === "exp") await expectNear(`${op} ${n}`, out, want, 3e-7, 1.2e-38)
        else await expectNear(`${op} ${n}`, out, want, 0)
      }
    // A transposed view goes through a copy first.
    const x = f32([40, 30], 3, 0.1, 2)
    const t: View = { ...x, shape: [30, 40], strides: [1, 30] }
    const out = output([30, 40])
    run({ kind: "unary", op: "sqrt", x: t, out })
    const xs = await values(x)
    const want = new Float32Array(1200).map((_, i) => Math.sqrt(xs[(i % 40) * 30 + Math.floor(i / 40)]))
    await expectNear("sqrt of a transpose", out, want, 0)
  })

  it("copies permuted (transposed) views of every rank exactly", async () => {
    for (const [shape, perm] of [
      [[37, 53], [1, 0]],
      [[5, 40, 33], [2, 0, 1]],
      [[3, 4, 20, 17], [0, 2, 1, 3]],
      [[3, 4, 20, 17], [3, 1, 2, 0]],
    ] as [number[], number[]][]) {
      const x = f32(shape, size(shape))
      const st = contiguousStrides(shape)
      const view: View = { ...x, shape: perm.map((p) => shape[p]), strides: perm.map((p) => st[p]) }
      const out = output(view.shape as number[])
      run({ kind: "copy", x: view, out })
      const xs = await values(x)
      const want = new Float32Array(size(shape))
      const outStrides = contiguousStrides(view.shape)
      for (let i = 0; i < want.length; i++) {
        let src = 0
        let rest = i
        for (let d = 0; d < view.shape.length; d++) {
          const coord = Math.floor(rest / outStrides[d])
          rest -= coord * outStrides[d]
          src += coord * view.strides[d]
        }
        want[i] = xs[src]
      }
      await expectNear(`copy [${shape}] perm ${perm}`, out, want, 0, 0)
    }
  })

  it("exp edge values: overflow, underflow, NaN", async () => {
    // 16 elements: long enough for the WASM path (shorter rows stay in JS).
    const x16 = backend.alloc(16 * 4)
    backend.write(x16, new Float32Array([0, -0, 1, -1, 200, -200, NaN, 88, 0, -0, 1, -1, 200, -200, NaN, 88]))
    const out16 = output([16])
    run({ kind: "unary", op: "exp", x: { buffer: x16, dtype: "float32", shape: [16], strides: [1], offset: 0 }, out: out16 })
    const g = await values(out16)
    expect(g[0]).toBe(1)
    expect(g[1]).toBe(1)
    expect(Math.abs(g[2] - Math.E) / Math.E).toBeLessThan(3e-7)
    expect(g[4]).toBe(Infinity)
    expect(g[5]).toBe(0)
    expect(Number.isNaN(g[6])).toBe(true)
    expect(Math.abs(g[7] - Math.exp(88)) / Math.exp(88)).toBeLessThan(3e-7)
  })

  it("binary add / mul / max with broadcast rows, both sides", async () => {
    const fns: Record<string, (a: number, b: number) => number> = { add: (a, b) => a + b, mul: (a, b) => a * b, max: Math.max }
    for (const [rows, cols] of [
      [3, 17],
      [513, 577],
      [1, 300_001],
    ])
      for (const [op, fn] of Object.entries(fns)) {
        const a = f32([rows, cols], rows + cols, -3, 3)
        const b = f32([rows, cols], rows * cols, -3, 3)
        const row = f32([cols], cols, -3, 3)
        const as = await values(a)
        const bs = await values(b)
        const rs = await values(row)
        const cases: [View, View, (i: number) => number][] = [
          [a, b, (i) => fn(as[i], bs[i])],
          [a, { ...row, shape: [rows, cols], strides: [0, 1] }, (i) => fn(as[i], rs[i % cols])],
          [{ ...row, shape: [rows, cols], strides: [0, 1] }, b, (i) => fn(rs[i % cols], bs[i])],
          [a, { ...row, shape: [rows, cols], strides: [1, 0] }, (i) => fn(as[i], rs[Math.floor(i / cols) % cols])],
        ]
        for (const [x, y, ref] of cases) {
          const out = output([rows, cols])
          run({ kind: "binary", op: op as "add", a: x, b: y, out })
          await expectNear(`${op} ${rows}x${cols}`, out, new Float32Array(rows * cols).map((_, i) => ref(i)), 0)
        }
      }
  })

  it("where (bit-exact, broadcast branches) and float comparisons", async () => {
    for (const [rows, cols] of [
      [3, 17],
      [300, 1001],
    ]) {
      const n = rows * cols
      const a = f32([rows, cols], 1, -2, 2)
      const b = f32([rows, cols], 2, -2, 2)
      const row = f32([cols], 3, -2, 2)
      const [as, bs, rs] = [await values(a), await values(b), await values(row)]
      // comparisons, with ties (a against itself) and broadcasts
      const bcast: View = { ...row, shape: [rows, cols], strides: [0, 1] }
      for (const op of ["cmplt", "cmpeq"] as const) {
        const fn = op === "cmplt" ? (x: number, y: number) => (x < y ? 1 : 0) : (x: number, y: number) => (x === y ? 1 : 0)
        for (const [x, y, xs, ys] of [
          [a, b, (i: number) => as[i], (i: number) => bs[i]],
          [a, a, (i: number) => as[i], (i: number) => as[i]],
          [a, bcast, (i: number) => as[i], (i: number) => rs[i % cols]],
          [bcast, b, (i: number) => rs[i % cols], (i: number) => bs[i]],
        ] as const) {
          const buffer = backend.alloc(n * 4)
          const out: View = { buffer, dtype: "bool", shape: [rows, cols], strides: [cols, 1], offset: 0 }
          run({ kind: "binary", op, a: x, b: y, out })
          const got = new Uint32Array((await backend.read(buffer, 0, n * 4)).buffer)
          for (let i = 0; i < n; i++) if (got[i] !== fn(xs(i), ys(i))) throw new Error(`${op} ${i}: ${got[i]}`)
        }
      }
      const bits = Array.from({ length: n }, (_, i) => ((i * 7) % 3 === 0 ? 1 : 0))
      const cb = backend.alloc(n * 4)
      backend.write(cb, new Uint32Array(bits))
      const cond: View = { buffer: cb, dtype: "bool", shape: [rows, cols], strides: [cols, 1], offset: 0 }
      const scalar = f32([1], 4, -2, 2)
      const s0 = (await values(scalar))[0]
      const sv: View = { ...scalar, shape: [rows, cols], strides: [0, 0] }
      for (const [x, y, xs, ys] of [
        [a, b, (i: number) => as[i], (i: number) => bs[i]],
        [a, sv, (i: number) => as[i], () => s0],
        [sv, bcast, () => s0, (i: number) => rs[i % cols]],
        [sv, sv, () => s0, () => s0],
      ] as const) {
        const out = output([rows, cols])
        run({ kind: "where", cond, a: x, b: y, out })
        await expectNear("where", out, new Float32Array(n).map((_, i) => (bits[i] ? xs(i) : ys(i))), 0, 0)
      }
    }
  })

  it("sum / max reductions along every axis of contiguous tensors", async () => {
    for (const shape of [
      [7, 9],
      [3, 130, 41],
      [4, 576, 157],
      [2, 300_001],
      [300_001, 2],
    ]) {
      const x = f32(shape, size(shape), -2, 2)
      const xs = await values(x)
      for (let axis = 0; axis < shape.length; axis++) {
        const outer = size(shape.slice(0, axis))
        const len = shape[axis]
        const inner = size(shape.slice(axis + 1))
        for (const op of ["sum", "max"] as const) {
          const outShape = shape.map((d, i) => (i === axis ? 1 : d))
          const out = output(outShape)
          run({ kind: "reduce", op, axis, x, out })
          const want = new Float32Array(outer * inner)
          for (let o = 0; o < outer; o++)
            for (let j = 0; j < inner; j++) {
              let acc = op === "sum" ? 0 : -Infinity
              for (let t = 0; t < len; t++) {
                const v = xs[(o * len + t) * inner + j]
                acc = op === "sum" ? acc + v : Math.max(acc, v)
              }
              want[o * inner + j] = acc
            }
          await expectNear(`${op} axis ${axis} of [${shape}]`, out, want, 1e-6, 1e-5)
        }
      }
    }
  })
})

describe("wasm row kernels vs their JS references", () => {
  it("rmsNorm and its backward", async () => {
    for (const [R, D] of [
      [3, 9],
      [512, 576],
    ]) {
      const x = f32([R, D], R + D, -2, 2)
      const w = f32([D], D, 0.5, 1.5)
      const g = f32([R, D], R * D, -1, 1)
      const [out, rstd, refOut, refRstd] = [output([R, D]), output([R]), output([R, D]), output([R])]
      run({ kind: "rmsNorm", eps: 1e-5, x, weight: w, out, rstd })
      rmsNormJs({ kind: "rmsNorm", eps: 1e-5, x, weight: w, out: refOut, rstd: refRstd }, memory)
      await expectNear("rstd", rstd, refRstd, 0)
      await expectNear("rmsNorm", out, refOut, 0)
      const [dx, refDx] = [output([R, D]), output([R, D])]
      run({ kind: "rmsNormBackward", x, weight: w, rstd, g, dx })
      rmsNormBackwardJs({ kind: "rmsNormBackward", x, weight: w, rstd, g, dx: refDx }, memory)
      await expectNear("rmsNormBackward", dx, refDx, 1e-5, 1e-6)
    }
  })

  it("softmax (plain, causal, sliding window) and its backward", async () => {
    for (const [R, C] of [
      [6, 5],
      [2304, 128],
    ])
      for (const [causal, window] of [
        [false, 0],
        [true, 0],
        [true, 3],
        [false, 2],
      ] as const) {
        const x = f32([R, C], R + C + window, -30, 30)
        const common = { scale: 0.7, causal, window, tq: Math.min(R, 64), heads: 1, qOffset: C - Math.min(R, 64), keyMask: null }
        const [out, ref] = [output([R, C]), output([R, C])]
        run({ kind: "softmax", ...common, x, out })
        softmaxJs({ kind: "softmax", ...common, x, out: ref }, memory)
        await expectNear(`softmax ${R}x${C} causal=${causal} window=${window}`, out, ref, 2e-6, 1e-7)
        const g = f32([R, C], 5, -1, 1)
        const [dx, refDx] = [output([R, C]), output([R, C])]
        run({ kind: "softmaxBackward", scale: 0.7, p: ref, g, dx })
        softmaxBackwardJs({ kind: "softmaxBackward", scale: 0.7, p: ref, g, dx: refDx }, memory)
        await expectNear("softmaxBackward", dx, refDx, 1e-5, 1e-6)
      }
  })

  it("rope forward and backward, shared and per-batch tables", async () => {
    for (const [B, H, T, Dh] of [
      [1, 1, 3, 6],
      [4, 9, 128, 64],
    ])
      for (const bc of [1, B]) {
        const x = f32([B, H, T, Dh], B * H + T, -2, 2)
        const cos = f32(bc === 1 ? [T, Dh] : [bc, T, Dh], 11, -1, 1)
        const sin = f32(bc === 1 ? [T, Dh] : [bc, T, Dh], 12, -1, 1)
        for (const backward of [false, true]) {
          const [out, ref] = [output([B, H, T, Dh]), output([B, H, T, Dh])]
          run({ kind: "rope", backward, x, cos, sin, out })
          ropeJs({ kind: "rope", backward, x, cos, sin, out: ref }, memory)
          // f32 products (the reference rounds once from doubles): 1 ulp of the terms, which are up to 2 here.
          await expectNear(`rope ${[B, H, T, Dh]} bc=${bc} backward=${backward}`, out, ref, 1e-6, 5e-7)
        }
      }
  })

  it("siluMul and its backward", async () => {
    for (const n of SIZES) {
      const z = f32([n], n, -20, 20)
      const u = f32([n], n + 1, -2, 2)
      const g = f32([n], n + 2, -1, 1)
      const [out, ref] = [output([n]), output([n])]
      run({ kind: "siluMul", gate: z, up: u, out })
      siluMulJs({ kind: "siluMul", gate: z, up: u, out: ref }, memory)
      await expectNear(`siluMul ${n}`, out, ref, 1e-6, 1e-7)
      const [dg, du, refDg, refDu] = [output([n]), output([n]), output([n]), output([n])]
      run({ kind: "siluMulBackward", gate: z, up: u, g, dGate: dg, dUp: du })
      siluMulBackwardJs({ kind: "siluMulBackward", gate: z, up: u, g, dGate: refDg, dUp: refDu }, memory)
      await expectNear(`siluMul dGate ${n}`, dg, refDg, 2e-6, 1e-7)
      await expectNear(`siluMul dUp ${n}`, du, refDu, 2e-6, 1e-7)
    }
  })

  it("cross-entropy and its backward, with ignored and out-of-range targets", async () => {
    for (const [N, V] of [
      [5, 7],
      [300, 1001],
    ]) {
      const logits = f32([N, V], N + V, -8, 8)
      const targets = Array.from({ length: N }, (_, n) => (n % 7 === 3 ? -100 : n % 11 === 5 ? V + 2 : (n * 31) % V))
      const target = i32(targets)
      const [loss, lse, refLoss, refLse] = [output([N]), output([N]), output([N]), output([N])]
      run({ kind: "crossEntropy", ignoreIndex: -100, logits, target, loss, lse })
      crossEntropyJs({ kind: "crossEntropy", ignoreIndex: -100, logits, target, loss: refLoss, lse: refLse }, memory)
      await expectNear("lse", lse, refLse, 1e-6)
      await expectNear("loss", loss, refLoss, 1e-5, 1e-5)
      const g = f32([N], 9, 0.1, 1)
      const [dl, refDl] = [output([N, V]), output([N, V])]
      run({ kind: "crossEntropyBackward", ignoreIndex: -100, logits, target, lse: refLse, g, dlogits: dl })
      crossEntropyBackwardJs({ kind: "crossEntropyBackward", ignoreIndex: -100, logits, target, lse: refLse, g, dlogits: refDl }, memory)
      await expectNear("dlogits", dl, refDl, 2e-6, 1e-7)
    }
  })

  it("adamw (f32 lanes) matches the double-precision JS reference", async () => {
    for (const n of SIZES) {
      const p = f32([n], n, -1, 1, 0)
      const m = f32([n], n + 1, -0.1, 0.1, 0)
      const v = f32([n], n + 2, 0, 0.01, 0)
      const g = f32([n], n + 3, -1, 1, 0)
      const copy = async (t: View) => {
        const c = output(t.shape as number[])
        backend.write(c.buffer, await values(t))
        return c
      }
      const [p2, m2, v2] = [await copy(p), await copy(m), await copy(v)]
      const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, bc1: 1 - 0.9 ** 3, bc2: 1 - 0.999 ** 3 }
      run({ kind: "adamw", ...hyper, p, m, v, g })
      adamwJs({ kind: "adamw", ...hyper, p: p2, m: m2, v: v2, g }, memory)
      // f32 rounding of each term (p ~ 1, m ~ 0.1, v ~ 0.01 here): a few ulp of the terms, absolute.
      await expectNear("p", p, p2, 2e-7, 2e-7)
      await expectNear("m", m, m2, 2e-7, 2e-8)
      await expectNear("v", v, v2, 2e-7, 2e-9)
    }
  })
})

describe("blocked attention vs the reference kernels", () => {
  it("forward and backward: GQA, causal, sliding window, Tk > T, key masks", async () => {
    const cases = [
      { B: 2, Hq: 4, Hkv: 2, T: 5, Tk: 5, D: 8, causal: true, window: 0, mask: false },
      { B: 1, Hq: 3, Hkv: 1, T: 7, Tk: 11, D: 6, causal: true, window: 4, mask: true },
      { B: 2, Hq: 2, Hkv: 2, T: 9, Tk: 9, D: 16, causal: false, window: 0, mask: true },
      { B: 2, Hq: 6, Hkv: 3, T: 33, Tk: 40, D: 64, causal: true, window: 0, mask: true },
      { B: 1, Hq: 2, Hkv: 1, T: 4, Tk: 6, D: 4, causal: false, window: 2, mask: false },
      { B: 1, Hq: 1, Hkv: 1, T: 5, Tk: 5, D: 4, causal: true, window: 1, mask: true }, // rows with no allowed key
    ]
    let seed = 1
    for (const c of cases) {
      const q = f32([c.B, c.Hq, c.T, c.D], seed++, -2, 2, 0)
      const k = f32([c.B, c.Hkv, c.Tk, c.D], seed++, -2, 2, 0)
      const v = f32([c.B, c.Hkv, c.Tk, c.D], seed++, -2, 2, 0)
      const dOut = f32([c.B, c.Hq, c.T, c.D], seed++, -1, 1, 0)
      let keyMask: View | null = null
      if (c.mask) {
        // Mask some keys; batch 0 masks every key of its first rows' windows too (rows with no allowed key).
        const bits = Array.from({ length: c.B * c.Tk }, (_, i) => (i % 3 === 1 || (i < c.Tk && i < 3) ? 0 : 1))
        const buffer = backend.alloc(bits.length * 4)
        backend.write(buffer, new Uint32Array(bits))
        keyMask = { buffer, dtype: "bool", shape: [c.B, c.Tk], strides: [c.Tk, 1], offset: 0 }
      }
      const common = { scale: 1 / Math.sqrt(c.D), causal: c.causal, window: c.window, q, k, v, keyMask }
      const [out, lse, refOut, refLse] = [output([c.B, c.Hq, c.T, c.D]), output([c.B, c.Hq, c.T]), output([c.B, c.Hq, c.T, c.D]), output([c.B, c.Hq, c.T])]
      fastAttentionKernels.attention({ kind: "attention", ...common, out, lse }, memory)
      attentionKernels.attention({ kind: "attention", ...common, out: refOut, lse: refLse }, memory)
      const what = JSON.stringify(c)
      await expectNear(`out ${what}`, out, refOut, 1e-5, 1e-5)
      await expectNear(`lse ${what}`, lse, refLse, 1e-5, 1e-5)
      const grads = () => [output([c.B, c.Hq, c.T, c.D]), output([c.B, c.Hkv, c.Tk, c.D]), output([c.B, c.Hkv, c.Tk, c.D])]
      const [dq, dk, dv] = grads()
      const [rq, rk, rv] = grads()
      const back = { kind: "attentionBackward" as const, ...common, out: refOut, lse: refLse, dOut }
      fastAttentionKernels.attentionBackward({ ...back, dq, dk, dv }, memory)
      attentionKernels.attentionBackward({ ...back, dq: rq, dk: rk, dv: rv }, memory)
      await expectNear(`dq ${what}`, dq, rq, 1e-4, 1e-5)
      await expectNear(`dk ${what}`, dk, rk, 1e-4, 1e-5)
      await expectNear(`dv ${what}`, dv, rv, 1e-4, 1e-5)
    }
  })
})
