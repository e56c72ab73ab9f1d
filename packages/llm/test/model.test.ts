import { Device, ops, Rng, type Tensor } from "@bdvax/core-tensor"
import { describe, expect, it } from "vitest"
import { forward, initParams, KVCache, type ModelConfig, validateParams } from "../src/index.js"
import { tinyConfig } from "./tiny-config.js"

/**
 * Self-consistency of the forward (the transformers parity tests live in parity.test.ts): a KV-cached decode
 * equals the full forward, left padding with a key mask does not change a row's logits, and a sliding window
 * changes exactly the positions it should.
 */
const base: ModelConfig = tinyConfig({ vocabSize: 50 })

const ids = [5, 9, 13, 7, 22, 31, 8, 4]

async function logitsOf(dev: Device, config: ModelConfig, params: Record<string, Tensor>, rows: number[][], opts = {}): Promise<Float32Array> {
  const input = dev.tensor(rows.flat(), [rows.length, rows[0].length], "int32")
  const { logits } = forward(config, params, input, opts)
  const data = (await logits.data()) as Float32Array
  logits.dispose()
  input.dispose()
  return data
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

describe("llama forward self-consistency (cpu)", () => {
  it("has the parameters config.json implies and the padding row of the embedding is zero", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, base, new Rng(0))
    expect(validateParams(base, params, "init")).toEqual([])
    const row0 = await ops.slice(params["model.embed_tokens.weight"], [0, 0], [1, 32]).toArray()
    expect(row0.every((v) => v === 0)).toBe(true)
    dev.destroy()
  })

  it("a KV-cached decode reproduces the full forward", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, base, new Rng(1))
    const full = await logitsOf(dev, base, params, [ids])
    const cache = new KVCache(base.numHiddenLayers)
    const prefix = await logitsOf(dev, base, params, [ids.slice(0, 5)], { cache })
    const steps: Float32Array[] = []
    for (let j = 5; j < ids.length; j++) steps.push(await logitsOf(dev, base, params, [[ids[j]]], { cache }))
    const v = base.vocabSize
    expect(maxDiff(prefix, full.slice(0, 5 * v))).toBeLessThan(1e-5)
    steps.forEach((s, k) => expect(maxDiff(s, full.slice((5 + k) * v, (6 + k) * v))).toBeLessThan(1e-5))
    cache.dispose()
    dev.destroy()
  })

  it("left padding with a key mask leaves a row's logits unchanged", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, base, new Rng(2))
    const short = ids.slice(0, 5)
    const alone = await logitsOf(dev, base, params, [short])
    const padded = [0, 0, 0, ...short]
    const keyMask = dev.tensor([0, 0, 0, 1, 1, 1, 1, 1, ...ids.map(() => 1)], [2, 8], "bool")
    const positions = [[0, 0, 0, 0, 1, 2, 3, 4], ids.map((_, j) => j)]
    const batch = await logitsOf(dev, base, params, [padded, ids], { keyMask, positions })
    const v = base.vocabSize
    expect(maxDiff(batch.slice(3 * v, 8 * v), alone)).toBeLessThan(1e-5)
    expect(maxDiff(batch.slice(8 * v), await logitsOf(dev, base, params, [ids]))).toBeLessThan(1e-5)
    dev.destroy()
  })

  it("a sliding window only changes positions beyond the window", async () => {
    const dev = await Device.create("cpu")
    const windowed: ModelConfig = { ...base, architecture: "mistral", slidingWindow: 3 }
    const params = initParams(dev, base, new Rng(3))
    const a = await logitsOf(dev, base, params, [ids])
    const w = await logitsOf(dev, windowed, params, [ids])
    const v = base.vocabSize
    // positions 0..2 see at most 3 keys either way; position 3 onwards loses keys
    expect(maxDiff(a.slice(0, 3 * v), w.slice(0, 3 * v))).toBeLessThan(1e-6)
    expect(maxDiff(a.slice(3 * v, 4 * v), w.slice(3 * v, 4 * v))).toBeGreaterThan(1e-4)
    dev.destroy()
  })
})
