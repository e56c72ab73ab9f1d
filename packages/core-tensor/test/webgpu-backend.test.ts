import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Backend, type KernelCall, specOf, type View } from "../src/backend.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { createWebGpuBackend } from "../src/backends/webgpu/webgpu-backend.js"
import { type DType, storageArray } from "../src/dtype.js"
import { BufferLimitError } from "../src/errors.js"
import { ACCUMULATING, assertClose, ELEMENTWISE, EXACT, type Tolerance } from "./tolerance.js"
import { mulberry32 as makeRandom } from "./sequence.js"

/**
 * The WebGPU backend against the CPU backend, kernel by kernel: the same call with the same random inputs on
 * both, outputs compared within the tolerance of the op's class (tolerance.ts), int/bool and uniform random
 * bits exactly. Inputs are deliberately awkward views — transposed, broadcast (stride 0), offset, size-1 dims —
 * and outputs start out as garbage so that an unwritten element shows.
 */

let gpu: Backend
let cpu: Backend

beforeAll(async () => {
  gpu = await createWebGpuBackend()
  cpu = createCpuBackend()
})

afterAll(() => {
  gpu?.destroy()
  cpu?.destroy()
})

// ---------------------------------------------------------------------------------------------------------
// Host-side tensors: a buffer's contents plus the view into it, uploaded identically to each backend.

type Elements = Float32Array | Int32Array | Uint32Array

interface HostTensor {
  readonly dtype: DType
  /** The whole buffer, not just the view's elements. */
  readonly data: Elements
  readonly shape: readonly number[]
  readonly strides: readonly number[]
  readonly offset: number
}

const rand = makeRandom(1234)

const contiguousStrides = (shape: readonly number[]) => {
  const strides: number[] = []
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s
    s *= shape[i]
  }
  return strides
}
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

type Fill = (i: number) => number
const normal: Fill = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
const uniformIn = (lo: number, hi: number): Fill => () => lo + (hi - lo) * rand()
const ints = (lo: number, hi: number): Fill => () => lo + Math.floor((hi - lo) * rand())
const bools: Fill = () => (rand() < 0.5 ? 1 : 0)

function hostArray(dtype: DType, n: number, fill: Fill): Elements {
  const a = storageArray(dtype, new ArrayBuffer(Math.max(1, n) * 4), 0, n)
  for (let i = 0; i < n; i++) a[i] = fill(i)
  return a
}

interface Layout {
  /** Extra elements before the view. */
  offset?: number
  /** A permutation: the view is the transpose of a contiguous buffer laid out in this order of dims. */
  order?: readonly number[]
  /** Dims read with stride 0 (broadcast). */
  broadcast?: readonly number[]
}

/** A view of `shape` over a random buffer laid out as described. */
function tensor(shape: readonly number[], fill: Fill = normal, dtype: DType = "float32", layout: Layout = {}): HostTensor {
  const rank = shape.length
  const order = layout.order ?? shape.map((_, i) => i)
  const broadcast = new Set(layout.broadcast ?? [])
  // Lay the stored dims out in `order`, skipping broadcast dims (they occupy no memory).
  const strides = new Array<number>(rank).fill(0)
  let s = 1
  for (let k = rank - 1; k >= 0; k--) {
    const d = order[k]
    if (broadcast.has(d)) continue
    strides[d] = s
    s *= shape[d]
  }
  const offset = layout.offset ?? 0
  const n = offset + (sizeOf(shape) === 0 ? 0 : shape.reduce((acc, dim, d) => acc + (dim - 1) * strides[d], 0) + 1)
  return { dtype, data: hostArray(dtype, n + 3, fill), shape, strides, offset }
}

/** A contiguous output full of garbage (NaN bits), so that a skipped element cannot pass. */
function output(shape: readonly number[], dtype: DType = "float32", offset = 0): HostTensor {
  const n = offset + sizeOf(shape)
  const data = hostArray(dtype, n, () => 0)
  new Uint32Array(data.buffer).fill(0x7fc0dead)
  return { dtype, data, shape, strides: contiguousStrides(shape), offset }
}

/** Upload a host tensor into a fresh buffer of `backend`: the tiny helper every test goes through. */
function upload(backend: Backend, t: HostTensor): View {
  const buffer = backend.alloc(Math.max(4, t.data.byteLength))
  backend.write(buffer, t.data)
  return { buffer, dtype: t.dtype, shape: t.shape, strides: t.strides, offset: t.offset }
}

/** Read a contiguous view back as its typed array. */
async function download(backend: Backend, v: View): Promise<Elements> {
  const n = sizeOf(v.shape)
  const bytes = await backend.read(v.buffer, v.offset * 4, n * 4)
  return storageArray(v.dtype, bytes.slice().buffer, 0, n)
}

type Up = (t: HostTensor) => View

/** Run `make` on a backend (its tensors uploaded there), return the named output views' contents. */
async function runOn(backend: Backend, make: (up: Up) => KernelCall, outputs: readonly string[]): Promise<Elements[]> {
  const views: View[] = []
  const call = make((t) => {
    const v = upload(backend, t)
    views.push(v)
    return v
  })
  backend.dispatch(backend.compile(specOf(call)), call)
  const record = call as unknown as Record<string, View>
  const results = await Promise.all(outputs.map((name) => download(backend, record[name])))
  for (const v of views) backend.free(v.buffer)
  return results
}

/** The cross-check: same call on both backends, every listed output within `tol` (exact for int/bool). */
async function check(what: string, make: (up: Up) => KernelCall, outputs: readonly string[], tol: Tolerance): Promise<Elements[]> {
  const [ours, reference] = await Promise.all([runOn(gpu, make, outputs), runOn(cpu, make, outputs)])
  outputs.forEach((name, i) => {
    const exact = !(ours[i] instanceof Float32Array)
    assertClose(`${what}: ${name}`, ours[i], reference[i], exact ? EXACT : tol)
  })
  return ours
}

// ---------------------------------------------------------------------------------------------------------

describe("webgpu backend basics", () => {
  it("reports an adapter, features and limits", () => {
    expect(gpu.name).toBe("webgpu")
    expect(gpu.info.device.length).toBeGreaterThan(0)
    expect(gpu.info.limits.maxBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024)
  })

  it("round-trips bytes, including unaligned reads", async () => {
    const data = new Float32Array([1.5, -2, 3.25, 4, 5])
    const buffer = gpu.alloc(20)
    gpu.write(buffer, data)
    expect(Array.from(new Float32Array((await gpu.read(buffer, 0, 20)).buffer))).toEqual([1.5, -2, 3.25, 4, 5])
    gpu.write(buffer, new Float32Array([9]), 8)
    const bytes = await gpu.read(buffer, 6, 9)
    expect(Array.from(bytes)).toEqual(Array.from(new Uint8Array(new Float32Array([-2, 9, 4]).buffer).slice(2, 11)))
    expect((await gpu.read(buffer, 4, 0)).length).toBe(0)
    gpu.free(buffer)
  })

  it("computes hand-checked values (binary add, transposed matmul)", async () => {
    const a: HostTensor = { dtype: "float32", data: new Float32Array([1, 2, 3, 4, 5, 6]), shape: [2, 3], strides: [3, 1], offset: 0 }
    const b: HostTensor = { dtype: "float32", data: new Float32Array([10, 20, 30, 40, 50, 60]), shape: [2, 3], strides: [3, 1], offset: 0 }
    const [sum] = await runOn(gpu, (up) => ({ kind: "binary", op: "add", a: up(a), b: up(b), out: up(output([2, 3])) }), ["out"])
    expect(Array.from(sum)).toEqual([11, 22, 33, 44, 55, 66])
    const bT = { ...b, shape: [3, 2], strides: [1, 3] }
    const [prod] = await runOn(gpu, (up) => ({ kind: "matmul", a: up(a), b: up(bT), out: up(output([2, 2])) }), ["out"])
    expect(Array.from(prod)).toEqual([140, 320, 320, 770])
  })

  it("orders a write after earlier dispatches that read the same buffer", async () => {
    const x = upload(gpu, tensor([1000]))
    const before = await download(gpu, x)
    const out = upload(gpu, output([1000]))
    const copy: KernelCall = { kind: "copy", x, out }
    gpu.dispatch(gpu.compile(specOf(copy)), copy)
    gpu.write(x.buffer, new Float32Array(1000).fill(7))
    expect(Array.from(await download(gpu, out))).toEqual(Array.from(before))
    gpu.free(x.buffer)
    gpu.free(out.buffer)
  })

  it("chains more dispatches than one command buffer holds", async () => {
    const one = upload(gpu, tensor([64], () => 1))
    let acc = upload(gpu, tensor([64], () => 0))
    for (let i = 0; i < 700; i++) {
      const next = upload(gpu, output([64]))
      const call: KernelCall = { kind: "binary", op: "add", a: acc, b: one, out: next }
      gpu.dispatch(gpu.compile(specOf(call)), call)
      gpu.free(acc.buffer)
      acc = next
    }
    await gpu.flush()
    expect(Array.from(await download(gpu, acc)).every((v) => v === 700)).toBe(true)
  })

  it("surfaces a device error on the next flush, then keeps working", async () => {
    // exp of an int32 is outside the contract (float ops are float32 only) and fails WGSL validation: the error
    // arrives asynchronously and must come out of flush rather than vanish into a log.
    const x = upload(gpu, tensor([8], ints(0, 5), "int32"))
    const out = upload(gpu, output([8], "int32"))
    const bad: KernelCall = { kind: "unary", op: "exp", x, out }
    gpu.dispatch(gpu.compile(specOf(bad)), bad)
    await expect(gpu.flush()).rejects.toThrow(/device error/)
    const copy: KernelCall = { kind: "copy", x, out }
    gpu.dispatch(gpu.compile(specOf(copy)), copy)
    expect(Array.from(await download(gpu, out))).toEqual(Array.from(await download(gpu, x)))
    gpu.free(x.buffer)
    gpu.free(out.buffer)
  })

  it("refuses a view whose buffer exceeds the storage binding limit", () => {
    const limit = gpu.info.limits.maxBindingSize
    const buffer = gpu.alloc(limit + 4)
    const x: View = { buffer, dtype: "float32", shape: [4], strides: [1], offset: 0 }
    const out = gpu.alloc(16)
    const call: KernelCall = { kind: "unary", op: "neg", x, out: { buffer: out, dtype: "float32", shape: [4], strides: [1], offset: 0 } }
    let error: unknown
    try {
      gpu.dispatch(gpu.compile(specOf(call)), call)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(BufferLimitError)
    expect((error as BufferLimitError).op).toBe("unary")
    expect((error as BufferLimitError).bytes).toBe(limit + 4)
    expect((error as BufferLimitError).message).toContain(String(limit + 4))
    gpu.free(buffer)
    gpu.free(out)
  })
})

describe("elementwise kernels match the cpu backend", () => {
  const shape = [3, 1, 5, 7]
  const awkward: Layout = { order: [2, 0, 3, 1], offset: 5 }

  for (const op of ["neg", "reciprocal", "exp", "log", "sqrt", "sin", "cos"] as const) {
    it(`unary ${op} on a transposed, offset view`, async () => {
      const fill = op === "log" || op === "sqrt" || op === "reciprocal" ? uniformIn(0.1, 4) : uniformIn(-4, 4)
      const x = tensor(shape, fill, "float32", awkward)
      await check(`unary ${op}`, (up) => ({ kind: "unary", op, x: up(x), out: up(output(shape)) }), ["out"], ELEMENTWISE)
    })
  }

  const fills: Record<DType, Fill> = {
    float32: () => (rand() < 0.2 ? 0 : (rand() - 0.5) * 20),
    int32: () => (rand() < 0.2 ? 0 : ints(-1000, 1000)(0)),
    bool: bools,
  }
  for (const from of ["float32", "int32", "bool"] as const)
    for (const to of ["float32", "int32", "bool"] as const)
      it(`cast ${from} → ${to}`, async () => {
        const x = tensor([4, 6], fills[from], from, { order: [1, 0], offset: 2 })
        await check(`cast ${from}→${to}`, (up) => ({ kind: "unary", op: "cast", x: up(x), out: up(output([4, 6], to)) }), ["out"], EXACT)
      })

  const binaryCases = [
    ["add", "float32"],
    ["mul", "float32"],
    ["max", "float32"],
    ["add", "int32"],
    ["mul", "int32"],
    ["max", "int32"],
    ["cmplt", "float32"],
    ["cmpeq", "float32"],
    ["cmplt", "int32"],
    ["cmpeq", "int32"],
    ["cmplt", "bool"],
    ["cmpeq", "bool"],
  ] as const
  for (const [op, dtype] of binaryCases)
    it(`binary ${op} ${dtype}, transposed a and broadcast b`, async () => {
      // Small integers make cmpeq hit both outcomes, for every dtype.
      const fill = dtype === "bool" ? bools : dtype === "int32" ? ints(-3, 4) : () => ints(-3, 4)(0) * 0.5
      const a = tensor(shape, fill, dtype, awkward)
      const b = tensor(shape, fill, dtype, { broadcast: [0, 3], offset: 1 })
      const outType = op === "cmplt" || op === "cmpeq" ? "bool" : dtype
      await check(`binary ${op}`, (up) => ({ kind: "binary", op, a: up(a), b: up(b), out: up(output(shape, outType)) }), ["out"], ELEMENTWISE)
    })

  it("binary on rank 0 and rank 6 views", async () => {
    const [s1, s2] = [tensor([]), tensor([], normal, "float32", { offset: 2 })]
    await check("rank 0", (up) => ({ kind: "binary", op: "mul", a: up(s1), b: up(s2), out: up(output([])) }), ["out"], ELEMENTWISE)
    const s6 = [2, 1, 3, 1, 2, 4]
    const a = tensor(s6, normal, "float32", { order: [5, 4, 3, 2, 1, 0], offset: 3 })
    const b = tensor(s6, normal, "float32", { broadcast: [1, 2, 5] })
    await check("rank 6", (up) => ({ kind: "binary", op: "add", a: up(a), b: up(b), out: up(output(s6)) }), ["out"], ELEMENTWISE)
  })

  for (const dtype of ["float32", "int32", "bool"] as const)
    it(`where ${dtype}`, async () => {
      const cond = tensor(shape, bools, "bool", { broadcast: [2] })
      const a = tensor(shape, fills[dtype], dtype, awkward)
      const b = tensor(shape, fills[dtype], dtype, { offset: 4 })
      await check("where", (up) => ({ kind: "where", cond: up(cond), a: up(a), b: up(b), out: up(output(shape, dtype)) }), ["out"], EXACT)
    })

  for (const dtype of ["float32", "int32", "bool"] as const)
    it(`copy ${dtype} materialises a strided view`, async () => {
      const x = tensor([2, 3, 4, 5], fills[dtype], dtype, { order: [3, 1, 0, 2], offset: 7 })
      await check("copy", (up) => ({ kind: "copy", x: up(x), out: up(output([2, 3, 4, 5], dtype)) }), ["out"], EXACT)
    })

  for (const dtype of ["float32", "int32", "bool"] as const)
    it(`fill ${dtype}`, async () => {
      for (const value of [2.7, -0.5, 0, -3])
        await check(`fill ${value}`, (up) => ({ kind: "fill", value, out: up(output([5, 67], dtype)) }), ["out"], EXACT)
    })

  for (const dtype of ["float32", "int32", "bool"] as const)
    it(`pad ${dtype}`, async () => {
      const x = tensor([3, 4, 2], fills[dtype], dtype, { order: [1, 2, 0], offset: 3 })
      const before = [1, 0, 2]
      const outShape = [3 + 1 + 2, 4 + 0 + 1, 2 + 2 + 0]
      await check("pad", (up) => ({ kind: "pad", x: up(x), before, value: -1.5, out: up(output(outShape, dtype)) }), ["out"], EXACT)
    })

  it("siluMul and siluMulBackward, including saturated gates", async () => {
    const gateFill: Fill = (i) => (i % 17 === 0 ? (i % 2 ? 120 : -120) : normal(i) * 4)
    const gate = tensor([6, 50], gateFill)
    const up_ = tensor([6, 50])
    const g = tensor([6, 50])
    await check("siluMul", (up) => ({ kind: "siluMul", gate: up(gate), up: up(up_), out: up(output([6, 50])) }), ["out"], ELEMENTWISE)
    await check(
      "siluMulBackward",
      (up) => ({ kind: "siluMulBackward", gate: up(gate), up: up(up_), g: up(g), dGate: up(output([6, 50])), dUp: up(output([6, 50])) }),
      ["dGate", "dUp"],
      ELEMENTWISE,
    )
  })
})

describe("reduce matches the cpu backend", () => {
  const cases: Array<[string, readonly number[], number, Layout]> = [
    ["last axis", [7, 9, 13], 2, {}],
    ["middle axis, transposed", [7, 9, 13], 1, { order: [2, 1, 0], offset: 3 }],
    ["first axis", [7, 9, 13], 0, {}],
    ["size-1 axis", [4, 1, 5], 1, {}],
    ["empty axis", [4, 0, 5], 1, {}],
    ["long axis (workgroup per output)", [3, 5000], 1, {}],
    ["few medium axes", [2, 300], 1, { order: [1, 0] }],
    ["many outputs, long strided axis", [3000, 7], 0, {}],
    ["a whole rank-1 tensor", [1234], 0, { offset: 9 }],
  ]
  for (const [name, shape, axis, layout] of cases)
    for (const op of ["sum", "max"] as const)
      for (const dtype of ["float32", "int32"] as const)
        it(`${op} ${dtype}: ${name}`, async () => {
          const x = tensor(shape, dtype === "int32" ? ints(-50, 50) : normal, dtype, layout)
          const outShape = shape.map((d, i) => (i === axis ? 1 : d))
          await check(`reduce ${op}`, (up) => ({ kind: "reduce", op, axis, x: up(x), out: up(output(outShape, dtype)) }), ["out"], ACCUMULATING)
        })
})

describe("matmul matches the cpu backend", () => {
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1],
    [17, 33, 65],
    [3, 4, 0],
    [64, 64, 64],
    [130, 70, 45],
    [5, 129, 3],
    [200, 40, 260],
  ]
  for (const [M, K, N] of shapes)
    it(`${M}x${K} @ ${K}x${N}`, async () => {
      const a = tensor([M, K])
      const b = tensor([K, N], normal, "float32", { offset: 11 })
      await check("matmul", (up) => ({ kind: "matmul", a: up(a), b: up(b), out: up(output([M, N])) }), ["out"], ACCUMULATING)
    })

  it("transposed operands", async () => {
    const [M, K, N] = [37, 50, 29]
    const a = tensor([M, K], normal, "float32", { order: [1, 0] })
    const b = tensor([K, N], normal, "float32", { order: [1, 0], offset: 2 })
    await check("matmul aᵀbᵀ", (up) => ({ kind: "matmul", a: up(a), b: up(b), out: up(output([M, N])) }), ["out"], ACCUMULATING)
  })

  it("batched with a broadcast batch dim and batch rank 4", async () => {
    const a = tensor([2, 3, 20, 31], normal, "float32", { broadcast: [1], offset: 1 })
    const b = tensor([2, 3, 31, 18], normal, "float32", { order: [1, 0, 3, 2] })
    await check("matmul batched", (up) => ({ kind: "matmul", a: up(a), b: up(b), out: up(output([2, 3, 20, 18])) }), ["out"], ACCUMULATING)
    const a4 = tensor([2, 1, 3, 2, 9, 10])
    const b4 = tensor([2, 1, 3, 2, 10, 11], normal, "float32", { broadcast: [0, 3] })
    await check("matmul batch rank 4", (up) => ({ kind: "matmul", a: up(a4), b: up(b4), out: up(output([2, 1, 3, 2, 9, 11])) }), ["out"], ACCUMULATING)
  })

  // 66000 tiny workgroups of 256 invocations: ~10 s on lavapipe, worth it — it is the grid-overflow path.
  it("more batches than one grid dimension holds", async () => {
    const batch = 66000
    const a = tensor([batch, 1, 2])
    const b = tensor([batch, 2, 1], normal, "float32", { order: [0, 2, 1] })
    await check("matmul 66000 batches", (up) => ({ kind: "matmul", a: up(a), b: up(b), out: up(output([batch, 1, 1])) }), ["out"], ACCUMULATING)
  })

  it("reports its speed at 512³ (informational)", async () => {
    const n = 512
    const a = upload(gpu, tensor([n, n]))
    const b = upload(gpu, tensor([n, n]))
    const out = upload(gpu, output([n, n]))
    const call: KernelCall = { kind: "matmul", a, b, out }
    const program = gpu.compile(specOf(call))
    gpu.dispatch(program, call)
    await gpu.flush()
    const reps = 5
    const start = performance.now()
    for (let i = 0; i < reps; i++) gpu.dispatch(program, call)
    await gpu.flush()
    const seconds = (performance.now() - start) / 1000
    const gflops = (2 * n * n * n * reps) / seconds / 1e9
    console.log(`matmul ${n}³ on ${gpu.info.device}: ${gflops.toFixed(2)} GFLOP/s`)
    expect(gflops).toBeGreaterThan(0)
    for (const v of [a, b, out]) gpu.free(v.buffer)
  })
})

describe("gather and scatterAdd match the cpu backend", () => {
  const [V, D, N] = [10, 37, 23]
  // Make host tensors outside the call builders: a builder runs once per backend and must see the same data.
  const index = tensor([N], (i) => (i % 7 === 3 ? (i % 2 ? -1 : V) : ints(0, V)(0)), "int32")

  it("gather, out-of-range rows are zero", async () => {
    const table = tensor([V, D])
    await check("gather", (up) => ({ kind: "gather", table: up(table), index: up(index), out: up(output([N, D])) }), ["out"], EXACT)
  })

  it("scatterAdd with repeated and out-of-range indices", async () => {
    const src = tensor([N, D])
    await check("scatterAdd", (up) => ({ kind: "scatterAdd", src: up(src), index: up(index), out: up(output([V, D])) }), ["out"], ELEMENTWISE)
  })
})

describe("random matches the cpu backend", () => {
  const cases: Array<[string, readonly [number, number], readonly [number, number], number]> = [
    ["small", [42, 0], [0, 0], 0],
    ["high words", [0xdeadbeef, 0x12345678], [7, 0xffffffff], 123456],
    ["counter wrap-around", [1, 2], [3, 4], 2 ** 32 - 100],
  ]
  for (const [name, seed, stream, offset] of cases) {
    it(`uniform is bit-exact (${name})`, async () => {
      await check("uniform", (up) => ({ kind: "random", dist: "uniform", seed, stream, offset, out: up(output([3, 1000])) }), ["out"], EXACT)
    })
    it(`normal within 1e-5 (${name})`, async () => {
      await check("normal", (up) => ({ kind: "random", dist: "normal", seed, stream, offset, out: up(output([3, 1000])) }), ["out"], ELEMENTWISE)
    })
  }
})

describe("composite kernels match the cpu backend", () => {
  it("rmsNorm and its backward", async () => {
    const [R, D] = [5, 300]
    const x = tensor([R, D])
    const weight = tensor([D], uniformIn(0.5, 1.5))
    await check(
      "rmsNorm",
      (up) => ({ kind: "rmsNorm", eps: 1e-5, x: up(x), weight: up(weight), out: up(output([R, D])), rstd: up(output([R])) }),
      ["out", "rstd"],
      ACCUMULATING,
    )
    const rstd = tensor([R], uniformIn(0.5, 2))
    const g = tensor([R, D])
    await check(
      "rmsNormBackward",
      (up) => ({ kind: "rmsNormBackward", x: up(x), weight: up(weight), rstd: up(rstd), g: up(g), dx: up(output([R, D])) }),
      ["dx"],
      ACCUMULATING,
    )
  })

  it("rmsNorm over more rows than one grid dimension holds", async () => {
    const [R, D] = [70000, 3]
    const x = tensor([R, D])
    const weight = tensor([D])
    await check(
      "rmsNorm many rows",
      (up) => ({ kind: "rmsNorm", eps: 1e-6, x: up(x), weight: up(weight), out: up(output([R, D])), rstd: up(output([R])) }),
      ["out", "rstd"],
      ACCUMULATING,
    )
  })

  for (const backward of [false, true])
    for (const Bc of [1, 2])
      it(`rope ${backward ? "backward" : "forward"}, cos/sin batch ${Bc}`, async () => {
        const [B, H, T, Dh] = [2, 3, 5, 8]
        const x = tensor([B, H, T, Dh])
        const cos = tensor([Bc, T, Dh], uniformIn(-1, 1))
        const sin = tensor([Bc, T, Dh], uniformIn(-1, 1))
        await check("rope", (up) => ({ kind: "rope", backward, x: up(x), cos: up(cos), sin: up(sin), out: up(output([B, H, T, Dh])) }), ["out"], ELEMENTWISE)
      })

  it("plain softmax with a scale", async () => {
    const x = tensor([6, 33], (i) => normal(i) * 10)
    await check(
      "softmax",
      (up) => ({ kind: "softmax", scale: 0.7, causal: false, window: 0, tq: 0, heads: 0, qOffset: 0, x: up(x), keyMask: null, out: up(output([6, 33])) }),
      ["out"],
      ACCUMULATING,
    )
  })

  it("masked softmax: causal, window, key mask, a fully masked row", async () => {
    const [B, Hq, Tq, Tk] = [2, 2, 4, 9]
    const x = tensor([B * Hq * Tq, Tk])
    // Batch 1 masks every key: its rows must come out all zero.
    const keyMask = tensor([B, Tk], (i) => (i >= Tk ? 0 : i % 3 === 0 ? 0 : 1), "bool")
    for (const [causal, window] of [
      [true, 0],
      [true, 3],
      [false, 2],
      [false, 0],
    ] as const)
      await check(
        `softmax causal=${causal} window=${window}`,
        (up) => ({ kind: "softmax", scale: 0.5, causal, window, tq: Tq, heads: Hq, qOffset: 3, x: up(x), keyMask: up(keyMask), out: up(output([B * Hq * Tq, Tk])) }),
        ["out"],
        ACCUMULATING,
      )
  })

  it("softmax over a 49152-wide row, and its backward", async () => {
    const C = 49152
    const x = tensor([2, C], (i) => normal(i) * 5)
    const [p] = await check(
      "softmax long",
      (up) => ({ kind: "softmax", scale: 1, causal: false, window: 0, tq: 1, heads: 1, qOffset: 0, x: up(x), keyMask: null, out: up(output([2, C])) }),
      ["out"],
      ACCUMULATING,
    )
    const pt: HostTensor = { dtype: "float32", data: p, shape: [2, C], strides: [C, 1], offset: 0 }
    const g = tensor([2, C])
    await check("softmaxBackward", (up) => ({ kind: "softmaxBackward", scale: 0.3, p: up(pt), g: up(g), dx: up(output([2, C])) }), ["dx"], ACCUMULATING)
  })

  it("crossEntropy and its backward, with ignored and out-of-range targets", async () => {
    for (const V of [11, 49152]) {
      const N = 5
      const logits = tensor([N, V], (i) => normal(i) * 3)
      const target = tensor([N], (i) => [2, -100, V - 1, V, 0][i] ?? 0, "int32")
      const [, lse] = await check(
        `crossEntropy V=${V}`,
        (up) => ({ kind: "crossEntropy", ignoreIndex: -100, logits: up(logits), target: up(target), loss: up(output([N])), lse: up(output([N])) }),
        ["loss", "lse"],
        ACCUMULATING,
      )
      const lseT: HostTensor = { dtype: "float32", data: lse, shape: [N], strides: [1], offset: 0 }
      const g = tensor([N])
      await check(
        `crossEntropyBackward V=${V}`,
        (up) => ({ kind: "crossEntropyBackward", ignoreIndex: -100, logits: up(logits), target: up(target), lse: up(lseT), g: up(g), dlogits: up(output([N, V])) }),
        ["dlogits"],
        ACCUMULATING,
      )
    }
  })
})

describe("optimizers match the cpu backend", () => {
  it("adamw in place, on offset views", async () => {
    const n = 1000
    const p = tensor([n], normal, "float32", { offset: 3 })
    const m = tensor([n], (i) => normal(i) * 0.1)
    const v = tensor([n], uniformIn(0, 0.01), "float32", { offset: 1 })
    const g = tensor([n])
    await check(
      "adamw",
      (up) => ({ kind: "adamw", lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, bc1: 1 - 0.9 ** 3, bc2: 1 - 0.999 ** 3, p: up(p), m: up(m), v: up(v), g: up(g) }),
      ["p", "m", "v"],
      ELEMENTWISE,
    )
  })

  for (const [first, momentum] of [
    [true, 0.9],
    [false, 0.9],
    [false, 0],
  ] as const)
    it(`sgd first=${first} momentum=${momentum}`, async () => {
      const n = 777
      const p = tensor([n])
      const buf = tensor([n], normal, "float32", { offset: 2 })
      const g = tensor([n])
      await check(
        "sgd",
        (up) => ({ kind: "sgd", lr: 0.05, momentum, weightDecay: 1e-4, first, p: up(p), buf: up(buf), g: up(g) }),
        ["p", "buf"],
        ELEMENTWISE,
      )
    })
})

describe("tensors above 64 MiB", () => {
  const n = 20_000_000 // 80 MB of float32, past the 65535-workgroup grid limit in one dimension

  it("binary add over 20M elements", async () => {
    const a = tensor([n], uniformIn(-1, 1))
    const b = tensor([n], uniformIn(-1, 1))
    await check("big add", (up) => ({ kind: "binary", op: "add", a: up(a), b: up(b), out: up(output([n])) }), ["out"], ELEMENTWISE)
  })

  it("reduce over 20M elements, both along rows and down columns", async () => {
    const x = tensor([5000, 4000], uniformIn(0, 1))
    for (const axis of [0, 1]) {
      const outShape = axis === 0 ? [1, 4000] : [5000, 1]
      await check(`big reduce axis ${axis}`, (up) => ({ kind: "reduce", op: "sum", axis, x: up(x), out: up(output(outShape)) }), ["out"], ACCUMULATING)
    }
    const flat = { ...x, shape: [n], strides: [1] }
    await check("big full sum", (up) => ({ kind: "reduce", op: "sum", axis: 0, x: up(flat), out: up(output([1])) }), ["out"], ACCUMULATING)
  })
})
