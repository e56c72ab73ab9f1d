import { type Device, Rng } from "@bdvax/core-tensor"
import { collateSft, initParams, type Params, type SftLossContext } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import { device } from "../../core-tensor/test/devices.js"
import { type ChannelSelection, crowObjective, disposeCreated, quantizeRtn, wandaScores, zeroChannels } from "../src/index.js"
import { cpuDevice, disposeAll, examples, hostOf, sameBits, tinyConfig } from "./helpers.js"

/** The same parameters on another device (host round trip). */
async function moveTo(dev: Device, params: Params): Promise<Params> {
  const out: Params = {}
  for (const [n, t] of Object.entries(params)) out[n] = dev.tensor(await hostOf(t), t.shape)
  return out
}

const config = tinyConfig()

describe("webgpu agrees with the CPU", async () => {
  const gpu = await device("webgpu")
  it.skipIf(gpu === null)("zeroing is bit-exact; RTN, Wanda and the CROW objective match", async () => {
    const cpu = await cpuDevice()
    const a = initParams(cpu, config, new Rng(1))
    const b = await moveTo(gpu!, a)
    const selection: ChannelSelection = { mlp: [{ layer: 0, channels: [1, 30] }], heads: [{ layer: 1, heads: [0, 1, 3] }] }
    const za = zeroChannels(config, a, selection)
    const zb = zeroChannels(config, b, selection)
    for (const n of Object.keys(a)) expect(sameBits(await hostOf(za[n]), await hostOf(zb[n])), n).toBe(true)
    disposeCreated(za, a)
    disposeCreated(zb, b)

    // RTN: the GPU's reciprocal may differ by an ulp, which can move a value across a rounding boundary: compare
    // within one quantization step (scale ≤ range/15 ≤ 2·max|w|/15).
    const qa = quantizeRtn(a, { groupSize: 16 })
    const qb = quantizeRtn(b, { groupSize: 16 })
    const name = "model.layers.0.mlp.down_proj.weight"
    const [x, y, w] = [await hostOf(qa[name]), await hostOf(qb[name]), await hostOf(a[name])]
    const step = (2 * w.reduce((m, v) => Math.max(m, Math.abs(v)), 0)) / 15
    let moved = 0
    x.forEach((v, i) => {
      expect(Math.abs(v - y[i])).toBeLessThanOrEqual(step * 1.0001)
      if (v !== y[i]) moved++
    })
    expect(moved).toBeLessThan(x.length / 100)
    disposeCreated(qa, a)
    disposeCreated(qb, b)

    const [sa, sb] = [await wandaScores(config, a, examples), await wandaScores(config, b, examples)]
    sa.forEach((row, l) => row.forEach((v, c) => expect(Math.abs(v - sb[l][c])).toBeLessThan(1e-4 * Math.max(1, v))))

    const batch = collateSft(examples, { padTokenId: 0 })
    const value = async (p: Params) => {
      const ctx: SftLossContext = { config, params: p, batch, normalizer: batch.lossTokens }
      const t = crowObjective(ctx)
      const v = await t.item()
      t.dispose()
      return v
    }
    expect(Math.abs((await value(a)) - (await value(b)))).toBeLessThan(1e-3)
    disposeAll(a)
    disposeAll(b)
  })
})
