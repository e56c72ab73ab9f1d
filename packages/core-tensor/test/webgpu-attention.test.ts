import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Backend, type KernelCall, specOf, type View } from "../src/backend.js"
import { createCpuBackend } from "../src/backends/cpu/cpu-backend.js"
import { createWebGpuBackend, type WebGpuBackend } from "../src/backends/webgpu/webgpu-backend.js"
import { ACCUMULATING, assertClose } from "./tolerance.js"
import { mulberry32 as makeRandom } from "./sequence.js"

/**
 * The fused attention kernels, WebGPU against the CPU reference (cpu/attention.ts), on shapes the golden
 * fixture's tiny cases do not reach: several query and key blocks, a realistic head dim, GQA 9/3 (the
 * SmolLM2 layout), sliding windows, padding masks, a KV cache (Tk > T), a head dim that is not a multiple of 4
 * (the scalar path), and rows with no allowed key.
 */

let gpu: Backend
/** The loop shape a discrete GPU gets (compile-time bounds, unrolled by the driver), on this adapter. */
let gpuUnrolled: Backend
let cpu: Backend

beforeAll(async () => {
  gpu = await createWebGpuBackend()
  const t = (gpu as WebGpuBackend).tuning
  gpuUnrolled = await createWebGpuBackend({ tuning: { ...t, source: "options", attention: { blocks: [[16, 8]], threads: 64, unroll: true } } })
  cpu = createCpuBackend()
})

afterAll(() => {
  gpu?.destroy()
  gpuUnrolled?.destroy()
  cpu?.destroy()
})

const rand = makeRandom(99)
const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())

interface Host {
  readonly data: Float32Array | Uint32Array
  readonly shape: readonly number[]
  readonly dtype: "float32" | "bool"
  readonly offset: number
}

const contiguous = (shape: readonly number[]) => {
  const strides: number[] = []
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s
    s *= shape[i]
  }
  return strides
}
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

const floats = (shape: readonly number[], offset = 0, scale = 1): Host => {
  const data = new Float32Array(offset + sizeOf(shape))
  for (let i = offset; i < data.length; i++) data[i] = normal() * scale
  return { data, shape, dtype: "float32", offset }
}
const garbage = (shape: readonly number[]): Host => {
  const data = new Float32Array(sizeOf(shape))
  new Uint32Array(data.buffer).fill(0x7fc0dead)
  return { data, shape, dtype: "float32", offset: 0 }
}

function upload(backend: Backend, t: Host): View {
  const buffer = backend.alloc(Math.max(16, t.data.byteLength))
  backend.write(buffer, t.data)
  return { buffer, dtype: t.dtype, shape: t.shape, strides: contiguous(t.shape), offset: t.offset }
}

async function download(backend: Backend, v: View): Promise<Float32Array> {
  const bytes = await backend.read(v.buffer, v.offset * 4, sizeOf(v.shape) * 4)
  return new Float32Array(bytes.slice().buffer)
}

type Up = (t: Host) => View

async function runOn(backend: Backend, make: (up: Up) => KernelCall, outputs: readonly string[]): Promise<Float32Array[]> {
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

async function check(what: string, make: (up: Up) => KernelCall, outputs: readonly string[], backend = gpu): Promise<Float32Array[]> {
  const [ours, reference] = await Promise.all([runOn(backend, make, outputs), runOn(cpu, make, outputs)])
  outputs.forEach((name, i) => assertClose(`${what}: ${name}`, ours[i], reference[i], ACCUMULATING))
  return reference
}

interface Case {
  readonly name: string
  readonly B: number
  readonly Hq: number
  readonly Hkv: number
  readonly T: number
  readonly Tk: number
  readonly D: number
  readonly causal: boolean
  readonly window: number
  /** keyMask[b, j] for the case, or none. */
  readonly mask?: (b: number, j: number) => boolean
  /** Element offset of every operand (exercises offsets; 0 keeps the vec4 path). */
  readonly offset?: number
  /** Run on the backend with GPU-style unrolled loops instead. */
  readonly unrolled?: boolean
}

const CASES: readonly Case[] = [
  { name: "SmolLM2 block: causal GQA 9/3, T=128, D=64", B: 2, Hq: 9, Hkv: 3, T: 128, Tk: 128, D: 64, causal: true, window: 0 },
  { name: "sliding window 40, GQA 9/3", B: 1, Hq: 9, Hkv: 3, T: 128, Tk: 128, D: 64, causal: true, window: 40 },
  {
    name: "KV cache Tk > T with a padding mask, one batch fully masked",
    B: 2,
    Hq: 4,
    Hkv: 2,
    T: 37,
    Tk: 150,
    D: 64,
    causal: true,
    window: 0,
    mask: (b, j) => b === 0 && j % 7 !== 3,
  },
  { name: "non-causal with a key mask and a window, Tk > T", B: 2, Hq: 6, Hkv: 3, T: 50, Tk: 77, D: 32, causal: false, window: 19, mask: (b, j) => (j + b) % 5 !== 0 },
  { name: "head dim 6 (scalar path), offsets, odd sizes", B: 1, Hq: 3, Hkv: 1, T: 29, Tk: 45, D: 6, causal: true, window: 7, offset: 3 },
  { name: "head dim 128, MHA", B: 1, Hq: 2, Hkv: 2, T: 70, Tk: 70, D: 128, causal: true, window: 0 },
  {
    name: "GPU-style unrolled loops, 16×8 blocks, GQA 4/2, window, mask",
    B: 2,
    Hq: 4,
    Hkv: 2,
    T: 45,
    Tk: 61,
    D: 8,
    causal: true,
    window: 20,
    mask: (b, j) => (j * 3 + b) % 7 !== 0,
    unrolled: true,
  },
]

describe("fused attention matches the cpu reference", () => {
  for (const c of CASES)
    it(c.name, async () => {
      const off = c.offset ?? 0
      const q = floats([c.B, c.Hq, c.T, c.D], off)
      const k = floats([c.B, c.Hkv, c.Tk, c.D], off)
      const v = floats([c.B, c.Hkv, c.Tk, c.D], off)
      let keyMask: Host | null = null
      if (c.mask !== undefined) {
        const data = new Uint32Array(c.B * c.Tk)
        for (let b = 0; b < c.B; b++) for (let j = 0; j < c.Tk; j++) data[b * c.Tk + j] = c.mask(b, j) ? 1 : 0
        keyMask = { data, shape: [c.B, c.Tk], dtype: "bool", offset: 0 }
      }
      const scale = 1 / Math.sqrt(c.D)
      const attrs = { scale, causal: c.causal, window: c.window }
      const [out, lse] = await check(
        `${c.name} forward`,
        (up) => ({
          kind: "attention",
          ...attrs,
          q: up(q),
          k: up(k),
          v: up(v),
          keyMask: keyMask === null ? null : up(keyMask),
          out: up(garbage([c.B, c.Hq, c.T, c.D])),
          lse: up(garbage([c.B, c.Hq, c.T])),
        }),
        ["out", "lse"],
        c.unrolled ? gpuUnrolled : gpu,
      )
      if (c.mask !== undefined && c.B > 1 && c.name.includes("fully masked")) {
        // Batch 1 has no allowed key: zeros and −∞.
        const rows = c.Hq * c.T
        expect(Array.from(lse.slice(rows, 2 * rows)).every((x) => x === -Infinity)).toBe(true)
        expect(Array.from(out.slice(rows * c.D)).every((x) => x === 0)).toBe(true)
      }
      const outH: Host = { data: out, shape: [c.B, c.Hq, c.T, c.D], dtype: "float32", offset: 0 }
      const lseH: Host = { data: lse, shape: [c.B, c.Hq, c.T], dtype: "float32", offset: 0 }
      const dOut = floats([c.B, c.Hq, c.T, c.D], off)
      await check(
        `${c.name} backward`,
        (up) => ({
          kind: "attentionBackward",
          ...attrs,
          q: up(q),
          k: up(k),
          v: up(v),
          keyMask: keyMask === null ? null : up(keyMask),
          out: up(outH),
          lse: up(lseH),
          dOut: up(dOut),
          dq: up(garbage([c.B, c.Hq, c.T, c.D])),
          dk: up(garbage([c.B, c.Hkv, c.Tk, c.D])),
          dv: up(garbage([c.B, c.Hkv, c.Tk, c.D])),
        }),
        ["dq", "dk", "dv"],
        c.unrolled ? gpuUnrolled : gpu,
      )
    })

  it("agrees with the unfused path (matmul + masked softmax) on the forward", async () => {
    // The reference kernel itself against the softmax kernel's definition of the mask: P = softmax(scale·QKᵀ).
    const [B, H, T, Tk, D] = [1, 2, 9, 13, 8]
    const q = floats([B, H, T, D])
    const k = floats([B, H, Tk, D])
    const v = floats([B, H, Tk, D])
    const scale = 0.4
    const [out] = await runOn(
      cpu,
      (up) => ({ kind: "attention", scale, causal: true, window: 3, q: up(q), k: up(k), v: up(v), keyMask: null, out: up(garbage([B, H, T, D])), lse: up(garbage([B, H, T])) }),
      ["out"],
    )
    const expected = new Float32Array(B * H * T * D)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < T; t++) {
        const pos = t + Tk - T
        const s: number[] = []
        for (let j = 0; j < Tk; j++) {
          let dot = 0
          for (let d = 0; d < D; d++) dot += q.data[(h * T + t) * D + d] * k.data[(h * Tk + j) * D + d]
          s.push(j <= pos && j > pos - 3 ? dot * scale : -Infinity)
        }
        const mx = Math.max(...s)
        const e = s.map((x) => Math.exp(x - mx))
        const sum = e.reduce((a, b) => a + b, 0)
        for (let d = 0; d < D; d++) {
          let acc = 0
          for (let j = 0; j < Tk; j++) acc += (e[j] / sum) * v.data[(h * Tk + j) * D + d]
          expected[(h * T + t) * D + d] = acc
        }
      }
    assertClose("reference attention vs softmax definition", out, expected, ACCUMULATING)
  })
})
