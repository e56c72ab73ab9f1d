import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Backend, type KernelCall, specOf, type View } from "../src/backend.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { chooseTile, describeMatmulPlan, type HalfMatmulCall } from "../src/backends/webgpu/matmul.js"
import { cachedTuning, storeTuning, tableTuning, tile, tileProblem, type WebGpuTuning } from "../src/backends/webgpu/tuning.js"
import { createWebGpuBackend, type WebGpuBackend } from "../src/backends/webgpu/webgpu-backend.js"
import { ACCUMULATING, assertClose } from "./tolerance.js"

/**
 * The matmul planner's paths, each checked against the CPU backend: shape-fit variants (no bounds checks),
 * vec4 loads along k and along m/n, the strided general path, split-K with its reduce pass, both GEMV layouts,
 * and f16 storage. A second backend runs with a "big GPU" tuning (many workgroups wanted, 64-wide tiles) so the
 * lavapipe machine exercises the paths a discrete GPU takes. Plus the tuning table and its cache file.
 */

let gpu: WebGpuBackend
let gpuWide: WebGpuBackend
let cpu: Backend

/** What an NVIDIA-class adapter gets, scaled down so that the tests' shapes take every path. */
function wideTuning(base: WebGpuTuning): WebGpuTuning {
  return {
    ...base,
    source: "options",
    matmul: {
      tiles: [tile(64, 64, 16, 4, 4), tile(32, 32, 16, 4, 4)],
      parallelism: 64,
      splitKMinK: 512,
      splitKChunk: 128,
      unroll: true,
      interleave: true,
      prefetch: true,
      specializeMinFlops: 0,
      gemvLanes: 16,
    },
  }
}

beforeAll(async () => {
  gpu = (await createWebGpuBackend()) as WebGpuBackend
  gpuWide = (await createWebGpuBackend({ tuning: wideTuning(gpu.tuning) })) as WebGpuBackend
  cpu = createCpuBackend()
})

afterAll(() => {
  gpu?.destroy()
  gpuWide?.destroy()
  cpu?.destroy()
})

let seed = 7
const random = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
  return seed / 2 ** 32 - 0.5
}

interface Operand {
  readonly data: Float32Array
  readonly shape: readonly number[]
  readonly strides: readonly number[]
  readonly offset: number
}

/** A [..., rows, cols] operand stored row-major, or transposed (column-major) when `transposed`. */
function operand(shape: readonly number[], opts: { transposed?: boolean; offset?: number } = {}): Operand {
  const rank = shape.length
  const [rows, cols] = shape.slice(-2)
  const batch = shape.slice(0, -2).reduce((a, b) => a * b, 1)
  const offset = opts.offset ?? 0
  const data = new Float32Array(offset + batch * rows * cols + 4).map(random)
  const strides = new Array<number>(rank).fill(0)
  let s = rows * cols
  for (let d = rank - 3; d >= 0; d--) {
    strides[d] = s
    s *= shape[d]
  }
  if (opts.transposed) {
    strides[rank - 2] = 1
    strides[rank - 1] = rows
  } else {
    strides[rank - 2] = cols
    strides[rank - 1] = 1
  }
  return { data, shape, strides, offset }
}

const contiguous = (shape: readonly number[]) => operand(shape)

function upload(backend: Backend, t: Operand): View {
  const buffer = backend.alloc(Math.max(16, t.data.byteLength))
  backend.write(buffer, t.data)
  return { buffer, dtype: "float32", shape: t.shape, strides: t.strides, offset: t.offset }
}

async function run(backend: Backend, a: Operand, b: Operand, outShape: readonly number[]): Promise<Float32Array> {
  const out = upload(backend, { ...contiguous(outShape), data: new Float32Array(outShape.reduce((x, y) => x * y, 1)).fill(Number.NaN) })
  const call: KernelCall = { kind: "matmul", a: upload(backend, a), b: upload(backend, b), out }
  backend.dispatch(backend.compile(specOf(call)), call)
  const n = outShape.reduce((x, y) => x * y, 1)
  const result = new Float32Array((await backend.read(out.buffer, 0, n * 4)).slice().buffer)
  for (const v of [call.a, call.b, out]) backend.free(v.buffer)
  return result
}

/** The plan's pass variants for a call on `backend` (no dispatch). */
function plan(backend: WebGpuBackend, a: Operand, b: Operand, outShape: readonly number[]): string[] {
  const fake = (t: Operand): View => ({ buffer: { byteLength: t.data.byteLength }, dtype: "float32", shape: t.shape, strides: t.strides, offset: t.offset })
  return describeMatmulPlan({ kind: "matmul", a: fake(a), b: fake(b), out: fake(contiguous(outShape)) }, backend.kernelContext)
}

async function check(backend: WebGpuBackend, what: string, a: Operand, b: Operand, outShape: readonly number[], expectPlan: RegExp[]): Promise<void> {
  const variants = plan(backend, a, b, outShape)
  expect(variants.length, `${what}: ${variants.join(" | ")}`).toBe(expectPlan.length)
  expectPlan.forEach((re, i) => expect(variants[i], what).toMatch(re))
  const [ours, reference] = await Promise.all([run(backend, a, b, outShape), run(cpu, a, b, outShape)])
  assertClose(`${what} (${variants.join(" | ")})`, ours, reference, ACCUMULATING)
}

describe("matmul planner paths match the cpu backend", () => {
  it("fit variant with vec4 loads along k (A row-major) and n (B row-major)", async () => {
    await check(gpuWide, "fit vk/vmn", contiguous([128, 96]), contiguous([96, 64]), [128, 64], [/tiled 32x32x16\/4x4 a=vk b=vmn fit=mnk out4 pf/])
  })

  it("B = Wᵀ (a linear layer): vec4 loads along k for both operands", async () => {
    await check(gpuWide, "linear", contiguous([64, 160]), operand([160, 192], { transposed: true }), [64, 192], [/a=vk b=vk fit=mnk out4/])
  })

  it("Aᵀ (a weight gradient): vec4 loads along m", async () => {
    await check(gpuWide, "xᵀ dy", operand([96, 80], { transposed: true }), contiguous([80, 64]), [96, 64], [/a=vmn b=vmn fit=mnk out4/])
  })

  it("odd sizes and offsets fall back to scalar strided loads with bounds", async () => {
    await check(gpuWide, "odd", operand([45, 37], { offset: 3 }), operand([37, 29], { offset: 1, transposed: true }), [45, 29], [/a=sk b=sk fit= out1/])
  })

  it("broadcast batch (stride 0) and batch rank 2", async () => {
    const a = operand([2, 3, 40, 32])
    const b: Operand = { ...operand([1, 1, 32, 24]), shape: [2, 3, 32, 24], strides: [0, 0, 24, 1] }
    await check(gpuWide, "batched", a, b, [2, 3, 40, 24], [/tiled 32x32x16\/4x4 a=vk b=vmn fit=k out4/])
  })

  it("split-K: a 64×64 output with K = 4096 sums partial products in a second pass", async () => {
    await check(gpuWide, "split-K", contiguous([64, 4096]), contiguous([4096, 64]), [64, 64], [/tiled .* fit=mnk/, /splitk-reduce vec4/])
  })

  it("split-K with a K that does not divide evenly", async () => {
    await check(gpuWide, "split-K odd", contiguous([40, 1500]), contiguous([1500, 36]), [40, 36], [/tiled 32x32x16\/4x4 .*fit= /, /splitk-reduce vec4/])
  })

  it("GEMV, M = 1 with W k-contiguous (decoding through a linear layer): a workgroup reduction per output", async () => {
    await check(gpuWide, "gemv dot", contiguous([1, 576]), operand([576, 1536], { transposed: true }), [1, 1536], [/gemv dot 16 vec4/])
  })

  it("GEMV, M = 1 with W n-contiguous: a thread per 4 outputs, K split in slices", async () => {
    await check(gpuWide, "gemv col", contiguous([1, 300]), contiguous([300, 200]), [1, 200], [/gemv col vec4/])
  })

  it("GEMV, N = 1, batched, strided", async () => {
    await check(gpuWide, "gemv N=1", operand([3, 70, 33], { offset: 1 }), operand([3, 33, 1]), [3, 70, 1], [/gemv dot 16 scalar/])
  })

  it("the default tuning of this adapter, on a few shapes", async () => {
    for (const [m, k, n] of [
      [256, 256, 256],
      [130, 70, 45],
      [1, 64, 100],
      [64, 2100, 64],
    ])
      await check(gpu, `default ${m}x${k}x${n}`, contiguous([m, k]), contiguous([k, n]), [m, n], plan(gpu, contiguous([m, k]), contiguous([k, n]), [m, n]).map(() => /./))
  })
})

/** IEEE half bits of x (round to nearest even; the test values are exactly representable anyway). */
function toHalf(x: number): number {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)[0]
  const sign = (u >>> 16) & 0x8000
  const exp = ((u >>> 23) & 0xff) - 127 + 15
  const mant = u & 0x7fffff
  if (exp <= 0) return sign
  if (exp >= 31) return sign | 0x7c00
  return sign | (exp << 10) | (mant >>> 13)
}

describe("f16 storage matmul (backend level; the tensor layer has no f16 dtype yet)", () => {
  for (const [name, transposedB] of [
    ["row-major B, vec4 loads", false],
    ["B = Wᵀ", true],
  ] as const)
    it(`f16 A and B, f32 accumulation: ${name}`, async ({ skip }) => {
      if (!gpu.kernelContext.f16) skip()
      const [M, K, N] = [64, 96, 128]
      // Multiples of 1/8 in [-2, 2]: exact in f16, so the f32 reference is exact too.
      const a = operand([M, K]).data.map(() => Math.round(random() * 32) / 8)
      const b = operand([K, N]).data.map(() => Math.round(random() * 32) / 8)
      const buffers: ReturnType<WebGpuBackend["alloc"]>[] = []
      const upHalf = (xs: Float32Array) => {
        const h = new Uint16Array(xs.length + (xs.length % 2))
        xs.forEach((x, i) => (h[i] = toHalf(x)))
        const buffer = gpu.alloc(Math.max(16, h.byteLength))
        gpu.write(buffer, h)
        buffers.push(buffer)
        return buffer
      }
      const out = gpu.alloc(M * N * 4)
      buffers.push(out)
      const call: HalfMatmulCall = {
        kind: "matmul",
        a: { buffer: upHalf(a.subarray(0, M * K)), dtype: "float32", shape: [M, K], strides: [K, 1], offset: 0 },
        // Transposed B reads the same K × N numbers from an N × K layout.
        b: transposedB
          ? { buffer: upHalf(transpose(b.subarray(0, K * N), K, N)), dtype: "float32", shape: [K, N], strides: [1, K], offset: 0 }
          : { buffer: upHalf(b.subarray(0, K * N)), dtype: "float32", shape: [K, N], strides: [N, 1], offset: 0 },
        out: { buffer: out, dtype: "float32", shape: [M, N], strides: [N, 1], offset: 0 },
        half: { a: true, b: true },
      }
      expect(describeMatmulPlan(call, gpu.kernelContext)[0]).toMatch(transposedB ? /a=vk16 b=vk16/ : /a=vk16 b=vmn16/)
      gpu.matmulHalf(call)
      const result = new Float32Array((await gpu.read(out, 0, M * N * 4)).slice().buffer)
      const expected = new Float32Array(M * N)
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let s = 0
          for (let k = 0; k < K; k++) s += a[m * K + k] * b[k * N + n]
          expected[m * N + n] = s
        }
      assertClose(`f16 matmul ${name}`, result, expected, { atol: 1e-5, rtol: 1e-6 })
      for (const buf of buffers) gpu.free(buf)
    })
})

function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols)
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = x[r * cols + c]
  return t
}

describe("tuning", () => {
  const adapter = (vendor: string, architecture: string) => ({ vendor, architecture, device: "dev", description: "desc" })

  it("has a table row per vendor, with tiles every device supports", () => {
    for (const [vendor, arch] of [
      ["nvidia", "hopper"],
      ["amd", "rdna-3"],
      ["apple", "common-3"],
      ["intel", "xe"],
      ["mesa", "software"],
      ["qualcomm", "adreno"],
    ]) {
      const t = tableTuning(adapter(vendor, arch))
      expect(t.source).toMatch(/^table:/)
      for (const x of t.matmul.tiles) expect(tileProblem(x, 256, 32768), `${vendor} ${JSON.stringify(x)}`).toBeNull()
    }
    expect(tableTuning(adapter("nvidia", "hopper")).matmul.parallelism).toBe(264)
    expect(tableTuning(adapter("mesa", "software")).source).toBe("table:lavapipe")
  })

  it("picks big tiles when they fill the device, smaller ones (or split-K) when not", () => {
    const tiles = tableTuning(adapter("nvidia", "hopper")).matmul.tiles
    expect(chooseTile(tiles, 4096, 4096, 1, 264)).toEqual(tile(128, 128, 16, 8, 8))
    expect(chooseTile(tiles, 1024, 1024, 1, 264).m).toBeLessThan(128)
    expect(chooseTile(tiles, 4096, 4096, 1, 2)).toEqual(tile(128, 128, 16, 8, 8))
  })

  it("round-trips the autotune cache file, keyed by adapter", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "bdvax-tuning-"))
    const previous = process.env.BDVAX_WEBGPU_TUNING_CACHE
    process.env.BDVAX_WEBGPU_TUNING_CACHE = path.join(dir, "nested", "tuning.json")
    try {
      const a = adapter("nvidia", "hopper")
      const limits = { maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 49152 }
      expect(cachedTuning(a, limits)).toBeNull()
      const tuned = { ...tableTuning(a), matmul: { ...tableTuning(a).matmul, tiles: [tile(64, 128, 16, 4, 8)] } }
      expect(storeTuning(a, { tuning: tuned, measured: { large: {} }, date: "now" })).toBeNull()
      expect(cachedTuning(a, limits)?.matmul.tiles).toEqual([tile(64, 128, 16, 4, 8)])
      expect(cachedTuning(a, limits)?.source).toBe("autotune")
      expect(cachedTuning(adapter("nvidia", "ampere"), limits)).toBeNull()
      // A cached tile the device cannot run invalidates the entry.
      expect(cachedTuning(a, { ...limits, maxComputeWorkgroupStorageSize: 1024 })).toBeNull()
      expect(JSON.parse(readFileSync(process.env.BDVAX_WEBGPU_TUNING_CACHE, "utf8")).version).toBe(1)
    } finally {
      if (previous === undefined) delete process.env.BDVAX_WEBGPU_TUNING_CACHE
      else process.env.BDVAX_WEBGPU_TUNING_CACHE = previous
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
