import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createWebGpuBackend } from "../src/backends/webgpu/webgpu-backend.js"
import { AdamW, Device, DTypeError, expectNoLeaks, fromHalfBits, ops, type Tensor, tidy, toHalfBits, valueAndGrad } from "../src/index.js"
import { device } from "./devices.js"
import { values } from "./sequence.js"

/**
 * float16 storage: float32 values kept as IEEE halves on WebGPU (where the adapter has shader-f16), read by
 * matmul with f32 accumulation; converted to float32 on write on the CPU.
 *
 * Tolerances. A half has a unit roundoff of u = 2⁻¹¹ ≈ 4.9e-4, so a stored input is within u·|x| of the float32
 * value. A product over K terms with rounded inputs therefore moves by at most Σ_k |a_k||b_k|·(2u + u²) from the
 * float32 result (both inputs rounded); we check |Δ| ≤ 2.1·u·Σ|a_k b_k| + 1e-5·(1 + |ref|), the last term being the
 * f32 accumulation (K ≤ 200 terms, in different orders). Against a float64 product of the *rounded* values the
 * only error left is that f32 accumulation: 1e-5·(1 + Σ|a_k b_k|).
 */


const U16 = 2 ** -11
const roundHalf = (x: number) => fromHalfBits(toHalfBits(x))

/** Every finite non-negative half, ascending (the bit patterns 0 … 0x7bff are in increasing order). */
const HALVES = Array.from({ length: 0x7c00 }, (_, h) => fromHalfBits(h))

/** The nearest half to x by binary search over HALVES, ties to even (independent of toHalfBits' bit tricks). */
function nearestHalfBits(x: number): number {
  const f = Math.fround(x)
  if (Number.isNaN(f)) return 0x7e00
  const sign = f < 0 || Object.is(f, -0) ? 0x8000 : 0
  const a = Math.abs(f)
  if (a >= 65520) return sign | 0x7c00 // halfway to 2^16, which is even: rounds to infinity
  let lo = 0
  let hi = HALVES.length - 1
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1
    if (HALVES[mid] <= a) lo = mid
    else hi = mid
  }
  const dLo = a - HALVES[lo]
  const dHi = HALVES[hi] - a
  return sign | (dLo < dHi || (dLo === dHi && (lo & 1) === 0) ? lo : hi)
}

/** C = A·B in float64 with the sum of |a||b| per entry. a: [M, K], b: [K, N] row-major. */
function reference(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number) {
  const value = new Float64Array(m * n)
  const magnitude = new Float64Array(m * n)
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++)
      for (let p = 0; p < k; p++) {
        value[i * n + j] += a[i * k + p] * b[p * n + j]
        magnitude[i * n + j] += Math.abs(a[i * k + p] * b[p * n + j])
      }
  return { value, magnitude }
}

function expectWithin(what: string, got: ArrayLike<number>, want: Float64Array, bound: (i: number) => number): void {
  let worst = 0
  let at = -1
  for (let i = 0; i < want.length; i++) {
    const ratio = Math.abs(got[i] - want[i]) / bound(i)
    if (!(ratio <= worst)) {
      worst = ratio
      at = i
    }
  }
  expect(worst, `${what}: worst at ${at}: got ${got[at]}, want ${want[at]}, bound ${bound(at)}`).toBeLessThanOrEqual(1)
}

describe("float16 host conversion", () => {
  it("rounds to the nearest half, ties to even, over edge cases and random values", () => {
    const edge = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e6, -1e6, 2 ** -14, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26, 3 * 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049, 2051, 0.1, 1 / 3]
    for (const x of [...edge, ...values(300, 1, -70000, 70000), ...values(300, 2, -1e-4, 1e-4)]) expect(toHalfBits(x), `x = ${x}`).toBe(nearestHalfBits(x))
    expect(toHalfBits(Infinity)).toBe(0x7c00)
    expect(toHalfBits(-Infinity)).toBe(0xfc00)
    expect(Number.isNaN(fromHalfBits(toHalfBits(Number.NaN)))).toBe(true)
  })
})

describe("float16 storage on the CPU", () => {
  it("is float32 storage: values converted on write, unrounded, and matmul reads them", async () => {
    const dev = await device("cpu")
    const w = dev!.tensor([0.1, 0.2, 0.3, 0.4], [2, 2], "float16")
    expect(w.storageDType).toBe("float32")
    expect(Array.from(await w.data())).toEqual([0.1, 0.2, 0.3, 0.4].map(Math.fround))
    const y = ops.matmul(dev!.tensor([1, 1], [1, 2]), w)
    expect(Array.from(await y.data())).toEqual([Math.fround(Math.fround(0.1) + Math.fround(0.3)), Math.fround(Math.fround(0.2) + Math.fround(0.4))])
    for (const t of [w, y]) t.dispose()
  })
})

describe("float16 storage on webgpu", () => {
  let dev: Device
  let f16 = false

  beforeAll(async () => {
    dev = new Device(await createWebGpuBackend())
    f16 = dev.float16Storage
    if (!f16) console.warn(`\n*** float16 storage tests SKIPPED: this adapter (${dev.backend.info.device}) lacks shader-f16\n`)
  })
  afterAll(() => dev?.destroy())

  it("stores halves: half the bytes, values rounded to nearest even", async ({ skip }) => {
    if (!f16) skip()
    const xs = [...values(999, 3, -300, 300), 65504, 70000, 2 ** -20, -0]
    const before = dev.memory().liveBytes
    const h = dev.tensor(xs, [xs.length], "float16")
    expect(h.storageDType).toBe("float16")
    expect(h.dtype).toBe("float32")
    expect(dev.memory().liveBytes - before).toBe(Math.ceil(xs.length / 2) * 4)
    expect(Array.from(await h.data())).toEqual(xs.map(roundHalf))
    h.dispose()
  })

  it("casts float32 → float16 on the device bit for bit as the host rounds, and back exactly", async ({ skip }) => {
    if (!f16) skip()
    const xs = [...values(2001, 4, -70000, 70000), ...values(500, 5, -1e-4, 1e-4), 65519, 65520, 2 ** -25, 1.5 * 2 ** -25, -(2 ** -24)]
    const x = dev.tensor(xs, [xs.length])
    const h = ops.cast(x, "float16")
    expect(h.storageDType).toBe("float16")
    const back = ops.cast(h, "float32")
    expect(back.storageDType).toBe("float32")
    expect(Array.from(await h.data())).toEqual(xs.map(roundHalf))
    expect(Array.from(await back.data())).toEqual(xs.map(roundHalf))
    // through a transposed view: the cast reads strides, the halves come back in row-major order
    const m = dev.tensor(values(6 * 5, 6), [6, 5])
    const ht = ops.cast(ops.transpose(m), "float16")
    const want = await ops.transpose(m).data()
    expect(Array.from(await ht.data())).toEqual(Array.from(want, roundHalf))
    // a view of float16 storage (a transpose, an odd offset) reads back through a float32 cast
    const view = ops.slice(ops.transpose(ht), [1, 1], [6, 4])
    const wantView = await ops.slice(m, [1, 1], [6, 4]).data()
    expect(Array.from(await view.data())).toEqual(Array.from(wantView, roundHalf))
    for (const t of [x, h, back, m, ht, view]) t.dispose()
  })

  for (const [name, halfA, halfB] of [
    ["f16 weight (B = Wᵀ, a linear layer)", false, true],
    ["f16 activations (A)", true, false],
    ["both f16", true, true],
  ] as const)
    it(`matmul with ${name}, f32 accumulation, against the float32 product`, async ({ skip }) => {
      if (!f16) skip()
      const [M, K, N] = [37, 200, 61]
      const a = values(M * K, 7)
      const w = values(N * K, 8) // stored [N, K] as a linear layer's weight; B = Wᵀ
      const b = Array.from({ length: K * N }, (_, i) => w[(i % N) * K + Math.floor(i / N)])
      await expectNoLeaks(dev.account, async () => {
        const A = dev.tensor(a, [M, K], halfA ? "float16" : "float32")
        const W = dev.tensor(w, [N, K], halfB ? "float16" : "float32")
        const out = tidy(() => (halfB ? ops.linear(A, W) : ops.matmul(A, ops.transpose(W))))
        const got = await out.data()
        for (const t of [A, W, out]) t.dispose()
        // vs the float32 inputs: the rounding of the inputs bounds the difference
        const exact = reference(a.map(Math.fround), b.map(Math.fround), M, K, N)
        const inputs = (halfA ? 1 : 0) + (halfB ? 1 : 0)
        expectWithin(name, got, exact.value, (i) => 1.05 * inputs * U16 * exact.magnitude[i] + 1e-5 * (1 + Math.abs(exact.value[i])))
        // vs the rounded inputs: f32 accumulation only
        const rounded = reference(halfA ? a.map(roundHalf) : a.map(Math.fround), halfB ? b.map(roundHalf) : b.map(Math.fround), M, K, N)
        expectWithin(`${name} (rounded inputs)`, got, rounded.value, (i) => 1e-5 * (1 + rounded.magnitude[i]))
      })
    })

  it("trains through a frozen float16 weight (LoRA-style): gradients w.r.t. the f32 input and adapter", async ({ skip }) => {
    if (!f16) skip()
    const run = async (d: Device, baseValues: number[], dtype: "float16" | "float32") => {
      const base = d.tensor(baseValues, [24, 16], dtype) // frozen [out, in]
      const adapter = d.tensor(values(24 * 16, 10, -0.1, 0.1), [24, 16])
      const x = d.tensor(values(5 * 16, 11), [5, 16])
      const loss = (p: { adapter: Tensor; x: Tensor }) => ops.mean(ops.square(ops.add(ops.linear(p.x, base), ops.linear(p.x, p.adapter))))
      const [value, grads] = valueAndGrad(loss)({ adapter, x })
      const out = { value: await value.item(), adapter: await grads.adapter.data(), x: await grads.x.data() }
      for (const t of [base, adapter, x, value, grads.adapter, grads.x]) t.dispose()
      return out
    }
    const gpu = await expectNoLeaks(dev.account, () => run(dev, values(24 * 16, 9), "float16"))
    // the CPU with the base weight rounded to halves on the host is the same computation, all in f32
    const cpu = await run((await device("cpu"))!, values(24 * 16, 9).map(roundHalf), "float32")
    expect(Math.abs(gpu.value - cpu.value)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(cpu.value)))
    const close = (g: ArrayLike<number>, c: ArrayLike<number>) => Array.from(g).every((v, i) => Math.abs(v - c[i]) <= 1e-4 * (1 + Math.abs(c[i])))
    expect(close(gpu.adapter, cpu.adapter)).toBe(true)
    expect(close(gpu.x, cpu.x)).toBe(true)
  })

  it("rejects float16 storage where only float32 is read, naming the op and the fix", async ({ skip }) => {
    if (!f16) skip()
    await expectNoLeaks(dev.account, async () => {
      const h = dev.tensor([1, 2, 3, 4], [4], "float16")
      const g = dev.zeros([4])
      const ints = dev.tensor([1], [1], "int32")
      const opt = new AdamW({ lr: 0.1 })
      expect(() => ops.add(h, 1)).toThrow(DTypeError)
      expect(() => ops.exp(h)).toThrow(/exp: this tensor is stored as float16.*ops\.cast\(x, "float32"\)/)
      expect(() => opt.step([h], [g])).toThrow(/float16/)
      expect(() => ops.cast(h, "int32")).toThrow(DTypeError)
      expect(() => ops.cast(ints, "float16")).toThrow(DTypeError)
      // the failed calls left the device usable
      const back = ops.cast(h, "float32")
      expect(Array.from(await back.data())).toEqual([1, 2, 3, 4])
      for (const t of [h, g, ints, back]) t.dispose()
      opt.dispose()
    })
  })
})
