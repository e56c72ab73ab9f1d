import { describe, expect, it } from "vitest"
import { specOf, type KernelCall, type View } from "../src/backend.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { storageArray, type DType } from "../src/dtype.js"
import { fillRandom } from "../src/rng.js"
import { contiguousStrides } from "../src/shape.js"

/**
 * Kernel-level tests of the CPU backend: each kernel against small hand-computed expectations (or, for the
 * backward kernels, finite differences of a double-precision forward written out in the test).
 */
const backend = createCpuBackend()

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** A buffer holding `values`, preceded by `pad` junk elements so that views with offsets are exercised. */
function tensor(dtype: DType, values: readonly number[], shape: readonly number[], options: { strides?: number[]; pad?: number } = {}): View {
  const pad = options.pad ?? 0
  const buffer = backend.alloc((values.length + pad) * 4)
  const host = storageArray(dtype, new ArrayBuffer((values.length + pad) * 4))
  host.fill(dtype === "float32" ? 12345 : 7) // junk before the view; kernels must not read it
  host.set(values, pad)
  backend.write(buffer, host)
  return { buffer, dtype, shape, strides: options.strides ?? contiguousStrides(shape), offset: pad }
}

const f32 = (values: readonly number[], shape: readonly number[], options?: { strides?: number[]; pad?: number }) =>
  tensor("float32", values, shape, options)
const i32 = (values: readonly number[], shape: readonly number[]) => tensor("int32", values, shape)
const bool = (values: readonly number[], shape: readonly number[]) => tensor("bool", values, shape)

/** A fresh contiguous output, pre-filled with NaN-ish garbage to catch elements a kernel forgets to write. */
function output(dtype: DType, shape: readonly number[]): View {
  const n = size(shape)
  const buffer = backend.alloc(n * 4)
  backend.write(buffer, new Uint32Array(n).fill(0x7fc00001))
  return { buffer, dtype, shape, strides: contiguousStrides(shape), offset: 0 }
}

async function values(view: View): Promise<number[]> {
  const n = size(view.shape)
  const bytes = await backend.read(view.buffer, view.offset * 4, n * 4)
  return Array.from(storageArray(view.dtype, bytes.buffer, bytes.byteOffset, n))
}

function run(call: KernelCall): void {
  backend.dispatch(backend.compile(specOf(call)), call)
}

function expectClose(actual: readonly number[], expected: readonly number[], tolerance = 1e-5): void {
  expect(actual.length).toBe(expected.length)
  actual.forEach((a, i) => {
    if (Math.abs(a - expected[i]) > tolerance * Math.max(1, Math.abs(expected[i])))
      throw new Error(`element ${i}: got ${a}, expected ${expected[i]} (all: ${actual.join(", ")})`)
  })
}

/** A small deterministic pseudo-random sequence for the larger cases. */
function sequence(n: number, seed = 1): number[] {
  let s = seed
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return ((s >>> 8) / 16777216) * 2 - 1
  })
}

describe("cpu backend buffers", () => {
  it("writes, reads back copies, and reports its info", async () => {
    expect(backend.name).toBe("cpu")
    expect(backend.info.device.startsWith("cpu (")).toBe(true)
    expect(backend.info.limits.maxBufferSize).toBe(2 ** 31 - 1)
    const buffer = backend.alloc(10)
    expect(buffer.byteLength).toBe(10)
    backend.write(buffer, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    backend.write(buffer, new Uint8Array([42]), 9)
    const copy = await backend.read(buffer, 2, 8)
    expect(Array.from(copy)).toEqual([3, 4, 5, 6, 7, 8, 9, 42])
    backend.write(buffer, new Uint8Array([0]), 2)
    expect(copy[0]).toBe(3)
    await expect(backend.read(buffer, 8, 4)).rejects.toThrow(RangeError)
    backend.free(buffer)
    expect(() => backend.write(buffer, new Uint8Array(1))).toThrow(/freed/)
  })

  it("hands out pooled storage under a fresh handle", () => {
    const first = backend.alloc(64)
    backend.free(first)
    const second = backend.alloc(62) // same rounded size
    expect(second).not.toBe(first)
    expect(second.byteLength).toBe(62)
    backend.free(second)
  })

  it("caches programs by key and rejects a mismatched call", () => {
    const call: KernelCall = { kind: "fill", value: 1, out: output("float32", [2]) }
    const program = backend.compile(specOf(call))
    expect(backend.compile(specOf(call))).toBe(program)
    const other: KernelCall = { kind: "copy", x: f32([1], [1]), out: output("float32", [1]) }
    expect(() => backend.dispatch(program, other)).toThrow(/cannot run/)
  })

  it("refuses work after destroy", async () => {
    const local = createCpuBackend()
    local.alloc(4)
    local.destroy()
    expect(() => local.alloc(4)).toThrow(/destroyed/)
    await local.flush()
  })
})

describe("elementwise kernels", () => {
  it("unary float ops over a transposed view with an offset", async () => {
    // x is the transpose of [[1, 4], [9, 16]] stored row-major after two junk elements.
    const x = f32([1, 4, 9, 16], [2, 2], { strides: [1, 2], pad: 2 })
    const expected: Record<string, number[]> = {
      neg: [-1, -9, -4, -16],
      reciprocal: [1, 1 / 9, 1 / 4, 1 / 16],
      sqrt: [1, 3, 2, 4],
      exp: [Math.E, Math.exp(9), Math.exp(4), Math.exp(16)],
      log: [0, Math.log(9), Math.log(4), Math.log(16)],
      sin: [Math.sin(1), Math.sin(9), Math.sin(4), Math.sin(16)],
      cos: [Math.cos(1), Math.cos(9), Math.cos(4), Math.cos(16)],
    }
    for (const [op, want] of Object.entries(expected)) {
      const out = output("float32", [2, 2])
      run({ kind: "unary", op: op as "neg", x, out })
      expectClose(await values(out), want, 1e-6)
    }
  })

  it("casts between every dtype pair as documented", async () => {
    const floats = f32([2.7, -2.7, 0, -0.5, 3e9, NaN], [6])
    const toInt = output("int32", [6])
    run({ kind: "unary", op: "cast", x: floats, out: toInt })
    // Truncation toward zero; out-of-range values wrap mod 2^32 (3e9 - 2^32), NaN becomes 0.
    expect(await values(toInt)).toEqual([2, -2, 0, 0, 3e9 - 2 ** 32, 0])
    const toBool = output("bool", [6])
    run({ kind: "unary", op: "cast", x: floats, out: toBool })
    expect(await values(toBool)).toEqual([1, 1, 0, 1, 1, 1])
    const ints = i32([-3, 0, 16777217], [3])
    const intToFloat = output("float32", [3])
    run({ kind: "unary", op: "cast", x: ints, out: intToFloat })
    expect(await values(intToFloat)).toEqual([-3, 0, 16777216])
    const intToBool = output("bool", [3])
    run({ kind: "unary", op: "cast", x: ints, out: intToBool })
    expect(await values(intToBool)).toEqual([1, 0, 1])
    const bools = bool([1, 0], [2])
    const boolToFloat = output("float32", [2])
    run({ kind: "unary", op: "cast", x: bools, out: boolToFloat })
    expect(await values(boolToFloat)).toEqual([1, 0])
    const boolToInt = output("int32", [2])
    run({ kind: "unary", op: "cast", x: bools, out: boolToInt })
    expect(await values(boolToInt)).toEqual([1, 0])
  })

  it("binary ops broadcast through stride-0 views", async () => {
    // a: [2, 3]; b: a row [10, 20, 30] broadcast over rows (stride 0); c: a column [1, 2] broadcast over columns.
    const a = f32([1, 2, 3, 4, 5, 6], [2, 3])
    const row = f32([10, 20, 30], [2, 3], { strides: [0, 1] })
    const column = f32([1, 2], [2, 3], { strides: [1, 0], pad: 1 })
    const sum = output("float32", [2, 3])
    run({ kind: "binary", op: "add", a, b: row, out: sum })
    expect(await values(sum)).toEqual([11, 22, 33, 14, 25, 36])
    const product = output("float32", [2, 3])
    run({ kind: "binary", op: "mul", a, b: column, out: product })
    expect(await values(product)).toEqual([1, 2, 3, 8, 10, 12])
    const max = output("float32", [2, 3])
    run({ kind: "binary", op: "max", a, b: f32([3.5], [2, 3], { strides: [0, 0] }), out: max })
    expect(await values(max)).toEqual([3.5, 3.5, 3.5, 4, 5, 6])
    const less = output("bool", [2, 3])
    run({ kind: "binary", op: "cmplt", a, b: f32([3], [2, 3], { strides: [0, 0] }), out: less })
    expect(await values(less)).toEqual([1, 1, 0, 0, 0, 0])
    const equal = output("bool", [2, 3])
    run({ kind: "binary", op: "cmpeq", a, b: f32([3, 5], [2, 3], { strides: [0, 1] }), out: equal })
    expect(await values(equal)).toEqual([0, 0, 0, 0, 1, 0])
  })

  it("int32 add and mul wrap like int32 arithmetic", async () => {
    const a = i32([2147483647, 65536, -7], [3])
    const b = i32([1, 65536, 3], [3])
    const sum = output("int32", [3])
    run({ kind: "binary", op: "add", a, b, out: sum })
    expect(await values(sum)).toEqual([-2147483648, 131072, -4])
    const product = output("int32", [3])
    run({ kind: "binary", op: "mul", a, b, out: product })
    expect(await values(product)).toEqual([2147483647, 0, -21])
    const equal = output("bool", [3])
    run({ kind: "binary", op: "cmpeq", a, b: i32([2147483647, 0, -7], [3]), out: equal })
    expect(await values(equal)).toEqual([1, 0, 1])
  })

  it("where selects bits, with a broadcast condition", async () => {
    const cond = tensor("bool", [1, 0], [2, 2], { strides: [0, 1] }) // column mask [1, 0] for every row
    const out = output("float32", [2, 2])
    run({ kind: "where", cond, a: f32([1, 2, 3, 4], [2, 2]), b: f32([-0, -1, -2, -3], [2, 2]), out })
    expect(await values(out)).toEqual([1, -1, 3, -3])
  })

  it("handles rank-0 operands", async () => {
    const out = output("float32", [])
    run({ kind: "binary", op: "mul", a: f32([3], []), b: f32([-2], [], { pad: 1 }), out })
    expect(await values(out)).toEqual([-6])
  })

  it("copy materialises a strided 3-d view", async () => {
    // x[i, j, k] = 100 i + 10 j + k stored as [k, i, j]-major; view it as [2, 3, 2].
    const stored: number[] = []
    for (let k = 0; k < 2; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) stored.push(100 * i + 10 * j + k)
    const x = f32(stored, [2, 3, 2], { strides: [3, 1, 6], pad: 5 })
    const out = output("float32", [2, 3, 2])
    run({ kind: "copy", x, out })
    expect(await values(out)).toEqual([0, 1, 10, 11, 20, 21, 100, 101, 110, 111, 120, 121])
  })

  it("fill casts the value to the output dtype", async () => {
    const floats = output("float32", [3])
    run({ kind: "fill", value: 0.1, out: floats })
    expect(await values(floats)).toEqual([Math.fround(0.1), Math.fround(0.1), Math.fround(0.1)])
    const ints = output("int32", [2])
    run({ kind: "fill", value: -2.9, out: ints })
    expect(await values(ints)).toEqual([-2, -2])
    const bools = output("bool", [2])
    run({ kind: "fill", value: 0.5, out: bools })
    expect(await values(bools)).toEqual([1, 1])
  })

  it("pad surrounds a (transposed) input with a constant", async () => {
    const x = f32([1, 2, 3, 4], [2, 2], { strides: [1, 2] }) // [[1, 3], [2, 4]]
    const out = output("float32", [3, 5])
    run({ kind: "pad", x, before: [1, 2], value: -1, out })
    expect(await values(out)).toEqual([-1, -1, -1, -1, -1, -1, -1, 1, 3, -1, -1, -1, 2, 4, -1])
  })
})

describe("strided iteration", () => {
  /** Element `flat` (row-major over `shape`) of a strided view, by div/mod: the slow, obvious definition. */
  function at(data: readonly number[], shape: readonly number[], strides: readonly number[], offset: number, flat: number): number {
    let index = offset
    for (let d = shape.length - 1; d >= 0; d--) {
      index += (flat % shape[d]) * strides[d]
      flat = Math.floor(flat / shape[d])
    }
    return data[index]
  }

  it("copy, binary and reduce agree with a div/mod reference on random views", async () => {
    const random = sequence(4000, 21).map((v) => (v + 1) / 2)
    let next = 0
    const pick = (n: number) => Math.floor(random[next++ % random.length] * n)
    for (let trial = 0; trial < 40; trial++) {
      const rank = 1 + pick(4)
      const shape = Array.from({ length: rank }, () => 1 + pick(4))
      // A random permutation of a padded row-major layout, with some dims broadcast (stride 0).
      // Storage order `order` (outermost first) of the logical dims, each padded by 0 or 1 elements.
      const padded = shape.map((d) => d + pick(2))
      const order = shape.map((_, d) => d).sort(() => random[next++ % random.length] - 0.5)
      const layoutStrides = contiguousStrides(order.map((d) => padded[d]))
      const strides = new Array<number>(rank)
      order.forEach((d, position) => (strides[d] = pick(5) === 0 ? 0 : layoutStrides[position]))
      const offset = pick(3)
      const data = Array.from({ length: size(padded) + offset }, (_, i) => i - 17)
      const x = f32(data, shape, { strides })
      const viewX = { ...x, offset: x.offset + offset }
      const expected = Array.from({ length: size(shape) }, (_, i) => at(data, shape, strides, offset, i))

      const copied = output("float32", shape)
      run({ kind: "copy", x: viewX, out: copied })
      expect(await values(copied)).toEqual(expected)

      const doubled = output("float32", shape)
      run({ kind: "binary", op: "add", a: viewX, b: { ...viewX, strides: viewX.strides }, out: doubled })
      expect(await values(doubled)).toEqual(expected.map((v) => 2 * v))

      const axis = pick(rank)
      const reducedShape = shape.map((d, i) => (i === axis ? 1 : d))
      const reduced = output("float32", reducedShape)
      run({ kind: "reduce", op: "sum", axis, x: viewX, out: reduced })
      const want = new Array<number>(size(reducedShape)).fill(0)
      const outStrides = contiguousStrides(reducedShape)
      expected.forEach((v, flat) => {
        let o = 0
        for (let d = rank - 1, rest = flat; d >= 0; d--) {
          if (d !== axis) o += (rest % shape[d]) * outStrides[d]
          rest = Math.floor(rest / shape[d])
        }
        want[o] += v
      })
      expect(await values(reduced)).toEqual(want)
    }
  })
})

describe("reduce", () => {
  const x = f32([1, 2, 3, 4, 5, 6], [2, 3])
  it("sums and maxes along either axis", async () => {
    const cases: [op: "sum" | "max", axis: number, shape: number[], want: number[]][] = [
      ["sum", 0, [1, 3], [5, 7, 9]],
      ["sum", 1, [2, 1], [6, 15]],
      ["max", 0, [1, 3], [4, 5, 6]],
      ["max", 1, [2, 1], [3, 6]],
    ]
    for (const [op, axis, shape, want] of cases) {
      const out = output("float32", shape)
      run({ kind: "reduce", op, axis, x, out })
      expect(await values(out)).toEqual(want)
    }
  })

  it("reduces a transposed, offset view and int32 data", async () => {
    const transposed = f32([1, 2, 3, 4, 5, 6], [3, 2], { strides: [1, 3], pad: 3 }) // [[1, 4], [2, 5], [3, 6]]
    const out = output("float32", [3, 1])
    run({ kind: "reduce", op: "sum", axis: 1, x: transposed, out })
    expect(await values(out)).toEqual([5, 7, 9])
    const ints = i32([2147483647, 1, -5, 9], [4])
    const intSum = output("int32", [1])
    run({ kind: "reduce", op: "sum", axis: 0, x: ints, out: intSum })
    expect(await values(intSum)).toEqual([-2147483648 + 4])
    const intMax = output("int32", [1])
    run({ kind: "reduce", op: "max", axis: 0, x: ints, out: intMax })
    expect(await values(intMax)).toEqual([2147483647])
  })

  it("reduces the middle axis of a 3-d tensor and a vector to a scalar", async () => {
    // x[i, j, k] = 100 i + 10 j + k, shape [2, 3, 2]; summing j gives 3·(100 i + k) + 30.
    const xs: number[] = []
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 2; k++) xs.push(100 * i + 10 * j + k)
    const out = output("float32", [2, 1, 2])
    run({ kind: "reduce", op: "sum", axis: 1, x: f32(xs, [2, 3, 2]), out })
    expect(await values(out)).toEqual([30, 33, 330, 333])
    const max = output("float32", [1])
    run({ kind: "reduce", op: "max", axis: 0, x: f32([-3, 7, 2], [3]), out: max })
    expect(await values(max)).toEqual([7])
  })

  it("reduces an empty axis to the identity", async () => {
    const empty = f32([], [2, 0])
    const sum = output("float32", [2, 1])
    run({ kind: "reduce", op: "sum", axis: 1, x: empty, out: sum })
    expect(await values(sum)).toEqual([0, 0])
    const max = output("float32", [2, 1])
    run({ kind: "reduce", op: "max", axis: 1, x: empty, out: max })
    expect(await values(max)).toEqual([-Infinity, -Infinity])
    const intMax = output("int32", [1])
    run({ kind: "reduce", op: "max", axis: 0, x: i32([], [0]), out: intMax })
    expect(await values(intMax)).toEqual([-2147483648])
  })
})

describe("matmul", () => {
  /** Plain triple loop over logical [M, K] × [K, N] arrays, in doubles. */
  function reference(a: number[], b: number[], M: number, K: number, N: number): number[] {
    const out = new Array<number>(M * N).fill(0)
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) for (let k = 0; k < K; k++) out[i * N + j] += a[i * K + k] * b[k * N + j]
    return out
  }
  const transpose = (m: number[], rows: number, cols: number) =>
    Array.from({ length: rows * cols }, (_, t) => m[(t % rows) * cols + Math.floor(t / rows)])

  it("multiplies small matrices", async () => {
    const out = output("float32", [2, 2])
    run({ kind: "matmul", a: f32([1, 2, 3, 4, 5, 6], [2, 3]), b: f32([7, 8, 9, 10, 11, 12], [3, 2]), out })
    expect(await values(out)).toEqual([58, 64, 139, 154])
  })

  it("reads transposed operands through their strides", async () => {
    // a = [[1, 2, 3], [4, 5, 6]] stored as its transpose; b = [[7, 8], [9, 10], [11, 12]] stored as its transpose.
    const a = f32([1, 4, 2, 5, 3, 6], [2, 3], { strides: [1, 2], pad: 1 })
    const b = f32([7, 9, 11, 8, 10, 12], [3, 2], { strides: [1, 3], pad: 2 })
    const out = output("float32", [2, 2])
    run({ kind: "matmul", a, b, out })
    expect(await values(out)).toEqual([58, 64, 139, 154])
  })

  it("broadcasts a batch dim with stride 0 and handles K = 0", async () => {
    // Two batches of a (2 × 2) against one shared b.
    const a = f32([1, 0, 0, 1, 2, 0, 0, 3], [2, 2, 2])
    const b = f32([1, 2, 3, 4], [2, 2, 2], { strides: [0, 2, 1] })
    const out = output("float32", [2, 2, 2])
    run({ kind: "matmul", a, b, out })
    expect(await values(out)).toEqual([1, 2, 3, 4, 2, 4, 9, 12])
    const empty = output("float32", [2, 3])
    run({ kind: "matmul", a: f32([], [2, 0]), b: f32([], [0, 3]), out: empty })
    expect(await values(empty)).toEqual([0, 0, 0, 0, 0, 0])
  })

  it("matches a reference across tile edges, transposed B, rank-4 batch", async () => {
    const [M, K, N] = [7, 33, 300] // N crosses the 256-column tile; M leaves a partial row group
    const a = sequence(M * K, 3)
    const b = sequence(K * N, 4)
    const want = reference(a, b, M, K, N)
    const plain = output("float32", [M, N])
    run({ kind: "matmul", a: f32(a, [M, K]), b: f32(b, [K, N]), out: plain })
    expectClose(await values(plain), want, 1e-5)
    const transposedB = output("float32", [M, N])
    run({ kind: "matmul", a: f32(a, [M, K]), b: f32(transpose(b, K, N), [K, N], { strides: [1, K] }), out: transposedB })
    expectClose(await values(transposedB), want, 1e-5)
    // [1, 2, 1, 2] batch of the same product: batch dims of size 1 and stride-0 broadcasts on both sides.
    const batched = output("float32", [1, 2, 1, 2, M, N])
    const a4 = f32(a, [1, 2, 1, 2, M, K], { strides: [0, 0, 0, 0, K, 1] })
    const b4 = f32(b, [1, 2, 1, 2, K, N], { strides: [0, 0, 0, 0, N, 1] })
    run({ kind: "matmul", a: a4, b: b4, out: batched })
    const got = await values(batched)
    for (let batch = 0; batch < 4; batch++) expectClose(got.slice(batch * M * N, (batch + 1) * M * N), want, 1e-5)
  })
})

describe("gather and scatterAdd", () => {
  it("gathers rows, zeros for out-of-range indices", async () => {
    const table = f32([1, 2, 3, 4, 5, 6], [3, 2])
    const out = output("float32", [4, 2])
    run({ kind: "gather", table, index: i32([2, 0, 3, -1], [4]), out })
    expect(await values(out)).toEqual([5, 6, 1, 2, 0, 0, 0, 0])
  })

  it("scatters in index order, skipping out-of-range rows", async () => {
    const src = f32([1, 2, 10, 20, 100, 200, 7, 7], [4, 2])
    const out = output("float32", [3, 2])
    run({ kind: "scatterAdd", src, index: i32([1, 1, 0, 5], [4]), out })
    expect(await values(out)).toEqual([100, 200, 11, 22, 0, 0])
  })
})

describe("random", () => {
  it("reproduces fillRandom bit for bit", async () => {
    for (const dist of ["uniform", "normal"] as const) {
      const seed: [number, number] = [1234, 5]
      const stream: [number, number] = [7, 0]
      const out = output("float32", [37])
      run({ kind: "random", dist, seed, stream, offset: 100, out })
      const want = new Float32Array(37)
      fillRandom(want, dist, seed, stream, 100)
      expect(await values(out)).toEqual(Array.from(want))
    }
  })
})

describe("rmsNorm", () => {
  it("normalises rows and writes rstd", async () => {
    // Row [3, 4]: mean of squares 12.5, rstd = 1/sqrt(12.5 + 0.5) = 1/sqrt(13).
    const out = output("float32", [2, 2])
    const rstd = output("float32", [2])
    run({ kind: "rmsNorm", eps: 0.5, x: f32([3, 4, 0, 0], [2, 2]), weight: f32([1, 2], [2]), out, rstd })
    const r = 1 / Math.sqrt(13)
    expectClose(await values(rstd), [r, 1 / Math.sqrt(0.5)])
    expectClose(await values(out), [3 * r, 8 * r, 0, 0])
  })

  it("backward matches finite differences", async () => {
    const [R, D, eps] = [2, 3, 1e-3]
    const x = [0.5, -1, 2, 0.3, 0.1, -0.7]
    const w = [1.5, -0.5, 2]
    const g = [0.2, -1, 0.7, 1, 0.4, -0.3]
    const loss = (xs: number[]) => {
      let total = 0
      for (let r = 0; r < R; r++) {
        const row = xs.slice(r * D, r * D + D)
        const s = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / D + eps)
        row.forEach((v, d) => (total += g[r * D + d] * w[d] * v * s))
      }
      return total
    }
    const rstd = output("float32", [R])
    run({ kind: "rmsNorm", eps, x: f32(x, [R, D]), weight: f32(w, [D]), out: output("float32", [R, D]), rstd })
    const dx = output("float32", [R, D])
    run({ kind: "rmsNormBackward", x: f32(x, [R, D]), weight: f32(w, [D]), rstd, g: f32(g, [R, D]), dx })
    expectClose(await values(dx), numericGradient(loss, x), 1e-4)
  })
})

/** Central differences of a double-precision scalar function. */
function numericGradient(f: (xs: number[]) => number, at: number[], h = 1e-6): number[] {
  return at.map((_, i) => {
    const plus = at.slice()
    const minus = at.slice()
    plus[i] += h
    minus[i] -= h
    return (f(plus) - f(minus)) / (2 * h)
  })
}

describe("rope", () => {
  const [B, H, T, Dh] = [1, 2, 2, 4]
  const x = sequence(B * H * T * Dh, 9)

  it("rotates pairs (d, d + half) by the table's angles", async () => {
    // One head, one position, Dh = 2: angle θ, so out = (x0 cos θ − x1 sin θ, x1 cos θ + x0 sin θ).
    const θ = 0.3
    const out = output("float32", [1, 1, 1, 2])
    const table = (fn: (v: number) => number) => f32([fn(θ), fn(θ)], [1, 1, 2])
    run({ kind: "rope", backward: false, x: f32([1, 2], [1, 1, 1, 2]), cos: table(Math.cos), sin: table(Math.sin), out })
    expectClose(await values(out), [Math.cos(θ) - 2 * Math.sin(θ), 2 * Math.cos(θ) + Math.sin(θ)], 1e-6)
  })

  it("backward equals forward with −sin for HF tables, and undoes the forward", async () => {
    // HF tables: angles θ_t,i = t / 10^i for i < half, duplicated into both halves.
    const angles: number[] = []
    for (let t = 0; t < T; t++) for (let d = 0; d < Dh; d++) angles.push((t + 1) / 10 ** (d % (Dh / 2)))
    const cos = f32(angles.map(Math.cos), [1, T, Dh])
    const sin = f32(angles.map(Math.sin), [1, T, Dh])
    const negSin = f32(angles.map((a) => -Math.sin(a)), [1, T, Dh])
    const shape = [B, H, T, Dh]
    const forward = output("float32", shape)
    run({ kind: "rope", backward: false, x: f32(x, shape), cos, sin, out: forward })
    const backward = output("float32", shape)
    run({ kind: "rope", backward: true, x: f32(x, shape), cos, sin, out: backward })
    const forwardNegSin = output("float32", shape)
    run({ kind: "rope", backward: false, x: f32(x, shape), cos, sin: negSin, out: forwardNegSin })
    expectClose(await values(backward), await values(forwardNegSin), 1e-6)
    // A rotation's transpose is its inverse: backward(forward(x)) = x.
    const roundTrip = output("float32", shape)
    run({ kind: "rope", backward: true, x: forward, cos, sin, out: roundTrip })
    expectClose(await values(roundTrip), x, 1e-5)
  })

  it("backward is the transpose of forward for arbitrary per-batch tables", async () => {
    const shape = [2, 1, T, Dh]
    const xs = sequence(size(shape), 11)
    const gs = sequence(size(shape), 12)
    const cos = f32(sequence(2 * T * Dh, 13), [2, T, Dh])
    const sin = f32(sequence(2 * T * Dh, 14), [2, T, Dh])
    const forward = output("float32", shape)
    run({ kind: "rope", backward: false, x: f32(xs, shape), cos, sin, out: forward })
    const backward = output("float32", shape)
    run({ kind: "rope", backward: true, x: f32(gs, shape), cos, sin, out: backward })
    const dot = (p: number[], q: number[]) => p.reduce((s, v, i) => s + v * q[i], 0)
    expect(dot(await values(forward), gs)).toBeCloseTo(dot(xs, await values(backward)), 5)
  })
})

describe("siluMul", () => {
  const silu = (z: number) => z / (1 + Math.exp(-z))
  it("forward", async () => {
    const out = output("float32", [3])
    run({ kind: "siluMul", gate: f32([0, 1, -2], [3]), up: f32([5, 2, 3], [3]), out })
    expectClose(await values(out), [0, 2 * silu(1), 3 * silu(-2)])
  })

  it("backward matches finite differences", async () => {
    const gate = [0.5, -1.5, 2]
    const up = [1.2, -0.3, 0.8]
    const g = [1, 2, -0.5]
    const dGate = output("float32", [3])
    const dUp = output("float32", [3])
    run({ kind: "siluMulBackward", gate: f32(gate, [3]), up: f32(up, [3]), g: f32(g, [3]), dGate, dUp })
    const loss = (gs: number[], us: number[]) => gs.reduce((s, z, i) => s + g[i] * silu(z) * us[i], 0)
    expectClose(await values(dGate), numericGradient((zs) => loss(zs, up), gate), 1e-4)
    expectClose(await values(dUp), numericGradient((us) => loss(gate, us), up), 1e-4)
  })
})

describe("softmax", () => {
  it("plain softmax with scale ignores heads/tq", async () => {
    const out = output("float32", [1, 3])
    run({ kind: "softmax", scale: 2, causal: false, window: 0, tq: 0, heads: 0, qOffset: 0, x: f32([0, 0.5, 1], [1, 3]), keyMask: null, out })
    const e = [1, Math.E, Math.E ** 2]
    const total = e.reduce((a, b) => a + b)
    expectClose(await values(out), e.map((v) => v / total))
  })

  it("applies causal + sliding window + key mask per row", async () => {
    // B = 2, heads = 1, tq = 2, C = 4 keys, qOffset = 1, window = 2: query i sees keys j with
    // j ≤ i + 1 and j > i + 1 − 2, i.e. i = 0 → {0, 1}, i = 1 → {1, 2}. keyMask drops key 1 in batch 0
    // and keys 1, 2 in batch 1 (so batch 1, query 1 has no key left: an all-zero row).
    const x = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]
    const keyMask = bool([1, 0, 1, 1, 1, 0, 0, 1], [2, 4])
    const out = output("float32", [4, 4])
    run({ kind: "softmax", scale: 1, causal: true, window: 2, tq: 2, heads: 1, qOffset: 1, x: f32(x, [4, 4]), keyMask, out })
    const pair = 1 / (1 + Math.E) // softmax of scores [1, 2]: first entry
    expectClose(await values(out), [1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    // Without the mask, the same rows are a two-key softmax each.
    const unmasked = output("float32", [4, 4])
    run({ kind: "softmax", scale: 1, causal: true, window: 2, tq: 2, heads: 1, qOffset: 1, x: f32(x, [4, 4]), keyMask: null, out: unmasked })
    const first = [pair, 1 - pair, 0, 0]
    const second = [0, pair, 1 - pair, 0]
    expectClose(await values(unmasked), [...first, ...second, ...first, ...second])
  })

  it("stays finite for huge logits (max-subtracted)", async () => {
    const out = output("float32", [1, 2])
    run({ kind: "softmax", scale: 1, causal: false, window: 0, tq: 1, heads: 1, qOffset: 0, x: f32([1e30, 1e30], [1, 2]), keyMask: null, out })
    expect(await values(out)).toEqual([0.5, 0.5])
  })

  it("backward matches finite differences", async () => {
    const [scale, C] = [0.5, 3]
    const x = [0.1, -0.4, 0.9]
    const g = [1, -2, 0.5]
    const softmaxOf = (xs: number[]) => {
      const e = xs.map((v) => Math.exp(v * scale))
      const total = e.reduce((a, b) => a + b)
      return e.map((v) => v / total)
    }
    const p = f32(softmaxOf(x), [1, C])
    const dx = output("float32", [1, C])
    run({ kind: "softmaxBackward", scale, p, g: f32(g, [1, C]), dx })
    const loss = (xs: number[]) => softmaxOf(xs).reduce((s, v, i) => s + g[i] * v, 0)
    expectClose(await values(dx), numericGradient(loss, x), 1e-4)
  })
})

describe("crossEntropy", () => {
  const logits = [1, 2, 3, 0, 0, 0, 5, 5, 5]
  const lse = [Math.log(Math.E + Math.E ** 2 + Math.E ** 3), Math.log(3), 5 + Math.log(3)]

  it("computes loss and lse, zero loss for ignored and out-of-range targets", async () => {
    const loss = output("float32", [3])
    const lseOut = output("float32", [3])
    run({ kind: "crossEntropy", ignoreIndex: -100, logits: f32(logits, [3, 3]), target: i32([2, -100, 3], [3]), loss, lse: lseOut })
    expectClose(await values(lseOut), lse)
    expectClose(await values(loss), [lse[0] - 3, 0, 0])
  })

  it("backward is g · (softmax − onehot), zero rows when ignored", async () => {
    const dlogits = output("float32", [3, 3])
    run({
      kind: "crossEntropyBackward",
      ignoreIndex: -100,
      logits: f32(logits, [3, 3]),
      target: i32([0, -100, 1], [3]),
      lse: f32(lse, [3]),
      g: f32([2, 1, 0.5], [3]),
      dlogits,
    })
    const p0 = [1, 2, 3].map((v) => Math.exp(v - lse[0]))
    expectClose(await values(dlogits), [2 * (p0[0] - 1), 2 * p0[1], 2 * p0[2], 0, 0, 0, 0.5 / 3, 0.5 * (1 / 3 - 1), 0.5 / 3])
  })
})

describe("optimizers", () => {
  it("adamw takes one PyTorch-ordered step in place", async () => {
    const [lr, beta1, beta2, eps, wd] = [0.1, 0.9, 0.999, 1e-8, 0.01]
    const p = f32([1, -2], [2])
    const m = f32([0, 0.5], [2])
    const v = f32([0, 0.04], [2])
    // Step t = 2: bc1 = 1 − 0.9² = 0.19, bc2 = 1 − 0.999² = 0.001999.
    const [bc1, bc2] = [0.19, 0.001999]
    run({ kind: "adamw", lr, beta1, beta2, eps, weightDecay: wd, bc1, bc2, p, m, v, g: f32([0.5, 1], [2]) })
    // Element 0: p = 1 − 0.001 = 0.999; m = 0.05; v = 0.00025; step = 0.1 · (0.05/0.19) / (sqrt(0.00025/0.001999) + 1e-8).
    // Element 1: p = −2 + 0.002 = −1.998; m = 0.45 + 0.1 = 0.55; v = 0.03996 + 0.001 = 0.04096.
    const step = (mi: number, vi: number) => (lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + eps)
    expectClose(await values(m), [0.05, 0.55], 1e-6)
    expectClose(await values(v), [0.00025, 0.04096], 1e-6)
    expectClose(await values(p), [0.999 - step(0.05, 0.00025), -1.998 - step(0.55, 0.04096)], 1e-6)
  })

  it("sgd with momentum: first step seeds buf, second accumulates", async () => {
    const p = f32([1, 2], [2])
    const buf = output("float32", [2]) // garbage: the first step must not read it
    const g = f32([0.5, -1], [2])
    run({ kind: "sgd", lr: 0.1, momentum: 0.9, weightDecay: 0.1, first: true, p, buf, g })
    // d = g + 0.1 p = [0.6, −0.8]; buf = d; p = p − 0.1 d = [0.94, 2.08].
    expectClose(await values(buf), [0.6, -0.8])
    expectClose(await values(p), [0.94, 2.08])
    run({ kind: "sgd", lr: 0.1, momentum: 0.9, weightDecay: 0.1, first: false, p, buf, g })
    // d = [0.594, −0.792]; buf = 0.9·[0.6, −0.8] + d = [1.134, −1.512]; p = [0.94 − 0.1134, 2.08 + 0.1512].
    expectClose(await values(buf), [1.134, -1.512])
    expectClose(await values(p), [0.8266, 2.2312])
  })

  it("sgd without momentum still writes buf", async () => {
    const p = f32([1], [1])
    const buf = f32([3], [1]) // a previous step's buffer; momentum 0 makes it buf · 0 + d = d
    run({ kind: "sgd", lr: 0.5, momentum: 0, weightDecay: 0, first: false, p, buf, g: f32([2], [1]) })
    expect(await values(buf)).toEqual([2])
    expect(await values(p)).toEqual([0])
  })
})
