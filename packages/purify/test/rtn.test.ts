import { expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { createLora, disposeLora, initParams } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import { disposeCreated, disposeDefense, PurifyError, quantizeRtn, quantizeWeightRtn, rtnBaseline } from "../src/index.js"
import { cpuDevice, disposeAll, sameBits, tinyConfig } from "./helpers.js"

const f = Math.fround

/**
 * Group-wise asymmetric RTN written directly on the host, one group at a time, in f32 arithmetic (each operation
 * rounded as the device does it): lo/hi include 0, scale = (hi − lo)·(1/maxq), zero = ⌊−lo/scale + ½⌋,
 * q = clamp(⌊w/scale + zero + ½⌋, 0, maxq), ŵ = (q − zero)·scale. Also returns each element's scale.
 */
function rtnReference(w: Float32Array, rows: number, cols: number, bits: number, groupSize: number) {
  const maxq = 2 ** bits - 1
  const g = groupSize >= cols ? cols : groupSize
  const out = new Float32Array(w.length)
  const scales = new Float32Array(w.length)
  for (let r = 0; r < rows; r++)
    for (let start = 0; start < cols; start += g) {
      const group = w.subarray(r * cols + start, r * cols + start + g)
      const lo = Math.min(0, ...group)
      const hi = Math.max(0, ...group)
      const raw = f(f(hi - lo) * f(1 / maxq))
      const scale = raw === 0 ? 1 : raw
      const inv = f(1 / scale)
      const zero = Math.trunc(f(f(-lo * inv) + 0.5))
      group.forEach((x, k) => {
        const q = Math.min(maxq, Math.max(0, Math.trunc(f(f(f(x * inv) + zero) + 0.5))))
        out[r * cols + start + k] = f(f(q - zero) * scale)
        scales[r * cols + start + k] = scale
      })
    }
  return { out, scales }
}

describe("RTN fake quantization", () => {
  it("matches the host reference bit for bit; |error| ≤ scale/2; ≤ 16 levels per group", async () => {
    const dev = await cpuDevice()
    const rows = 6
    const cols = 64
    const host = new Float32Array(rows * cols)
    const rng = dev.randn([rows * cols], new Rng(3))
    host.set((await rng.data()) as Float32Array)
    rng.dispose()
    host.fill(0, 0, 16) // an all-zero group (scale 0 → 1, stays 0)
    for (let k = 16; k < 32; k++) host[k] = 1 + k / 100 // all positive: the range still includes 0
    for (let k = 32; k < 48; k++) host[k] = -3 - k / 50 // all negative
    host[100] = 7.5 // an outlier
    const w = dev.tensor(host, [rows, cols])
    await expectNoLeaks(dev.account, async () => {
      const q = quantizeWeightRtn(w, 4, 16)
      const got = (await q.data()) as Float32Array
      q.dispose()
      const { out, scales } = rtnReference(host, rows, cols, 4, 16)
      expect(sameBits(got, out)).toBe(true)
      let worst = 0
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - host[i]) / scales[i])
      // Half a step, up to the f32 rounding of w/scale and of (q − zero)·scale (a few ulp of values ≤ 16 steps).
      expect(worst).toBeLessThanOrEqual(0.5 + 1e-5)
      expect(got.subarray(0, 16).every((v) => v === 0)).toBe(true)
      for (let start = 0; start < got.length; start += 16) expect(new Set(got.subarray(start, start + 16)).size).toBeLessThanOrEqual(16)
    })
    w.dispose()
  })

  it("quantizes every linear weight of a model (and only those), group 128 ≥ in → one group per row", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(8))
    const out = quantizeRtn(params)
    let quantized = 0
    for (const [name, t] of Object.entries(params)) {
      if (!/_proj\.weight$/.test(name)) {
        expect(out[name], name).toBe(t)
        continue
      }
      quantized++
      const [rows, cols] = t.shape
      const { out: ref } = rtnReference((await t.data()) as Float32Array, rows, cols, 4, 128)
      expect(sameBits((await out[name].data()) as Float32Array, ref), name).toBe(true)
      // 4 bits: at most 16 distinct values per row (a row is one group here).
      const got = (await out[name].data()) as Float32Array
      for (let r = 0; r < rows; r++) expect(new Set(got.subarray(r * cols, (r + 1) * cols)).size).toBeLessThanOrEqual(16)
    }
    expect(quantized).toBe(2 * 7)
    expect(out["lm_head.weight"]).toBe(params["lm_head.weight"])
    disposeCreated(out, params)

    // 3 bits, groups of 16 along the input dimension.
    const out3 = quantizeRtn(params, { bits: 3, groupSize: 16 })
    const down = params["model.layers.1.mlp.down_proj.weight"]
    const { out: ref3 } = rtnReference((await down.data()) as Float32Array, 32, 48, 3, 16)
    expect(sameBits((await out3["model.layers.1.mlp.down_proj.weight"].data()) as Float32Array, ref3)).toBe(true)
    disposeCreated(out3, params)
    disposeAll(params)
  })

  it("typed errors: groups that do not tile the input dimension, bad bits, adapter mode", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(9))
    expect(() => quantizeRtn(params, { groupSize: 20 })).toThrow(/input dimension 32 is not a multiple of groupSize 20/)
    expect(() => quantizeRtn(params, { bits: 0 })).toThrow(PurifyError)
    const adapter = createLora(dev, config, { r: 2, alpha: 4, dropout: 0, targetModules: ["q_proj"], rng: new Rng(1) })
    const err = (() => {
      try {
        rtnBaseline({ mode: "adapter", config, params, adapter })
      } catch (e) {
        return e as PurifyError
      }
    })()
    expect(err).toBeInstanceOf(PurifyError)
    expect(err?.reason).toBe("mode")
    const full = rtnBaseline({ mode: "full", config, params })
    expect(full.mode === "full" && full.params["model.norm.weight"] !== params["model.norm.weight"]).toBe(true) // owned copy
    disposeDefense(full)
    disposeLora(adapter)
    disposeAll(params)
  })
})
