import { expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { initParams, type ModelConfig, type Params } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import { type ChannelSelection, disposeCreated, PurifyError, reinitChannels, zeroChannels } from "../src/index.js"
import { cpuDevice, disposeAll, type HostParams, sameBits, snapshot, tinyConfig } from "./helpers.js"

/**
 * The contract, written out independently of edits.ts: for every tensor, which elements a selection touches.
 * Returns name → predicate(row, col).
 */
function touched(config: ModelConfig, selection: ChannelSelection): Map<string, (r: number, c: number) => boolean> {
  const map = new Map<string, (r: number, c: number) => boolean>()
  const d = config.headDim
  const perGroup = config.numAttentionHeads / config.numKeyValueHeads
  for (const { layer, channels } of selection.mlp) {
    const s = new Set(channels)
    const p = `model.layers.${layer}.mlp`
    map.set(`${p}.gate_proj.weight`, (r) => s.has(r))
    map.set(`${p}.up_proj.weight`, (r) => s.has(r))
    map.set(`${p}.down_proj.weight`, (_r, c) => s.has(c))
    if (config.mlpBias) for (const m of ["gate_proj", "up_proj"]) map.set(`${p}.${m}.bias`, (r) => s.has(r))
  }
  for (const { layer, heads } of selection.heads) {
    const s = new Set(heads)
    const p = `model.layers.${layer}.self_attn`
    const groupFull = (g: number) => Array.from({ length: perGroup }, (_, k) => g * perGroup + k).every((h) => s.has(h))
    map.set(`${p}.q_proj.weight`, (r) => s.has(Math.floor(r / d)))
    map.set(`${p}.o_proj.weight`, (_r, c) => s.has(Math.floor(c / d)))
    if (config.attentionBias) map.set(`${p}.q_proj.bias`, (r) => s.has(Math.floor(r / d)))
    for (const m of ["k_proj", "v_proj"]) {
      if (!Array.from({ length: config.numKeyValueHeads }, (_, g) => g).some(groupFull)) continue
      map.set(`${p}.${m}.weight`, (r) => groupFull(Math.floor(r / d)))
      if (config.attentionBias) map.set(`${p}.${m}.bias`, (r) => groupFull(Math.floor(r / d)))
    }
  }
  return map
}

/** Check `out` against `before`: untouched tensors are the caller's own objects; in touched ones every
 *  unselected element is bit-identical and every selected one satisfies `selected`. Returns the selected values. */
async function checkEdit(
  config: ModelConfig,
  params: Params,
  out: Params,
  before: HostParams,
  selection: ChannelSelection,
  selected: (value: number, old: number, isBias: boolean) => boolean,
): Promise<number[]> {
  const map = touched(config, selection)
  const values: number[] = []
  expect(Object.keys(out).sort()).toEqual(Object.keys(params).sort())
  for (const name of Object.keys(params)) {
    const pred = map.get(name)
    if (pred === undefined) {
      expect(out[name], name).toBe(params[name])
      continue
    }
    expect(out[name], name).not.toBe(params[name])
    const got = (await out[name].data()) as Float32Array
    const old = before[name].data
    const cols = before[name].shape.length === 2 ? before[name].shape[1] : 1
    const gotBits = new Uint32Array(got.buffer, got.byteOffset, got.length)
    const oldBits = new Uint32Array(old.buffer, old.byteOffset, old.length)
    let bad = 0
    for (let i = 0; i < got.length; i++) {
      const r = Math.floor(i / cols)
      const c = i % cols
      if (pred(r, c)) {
        if (!selected(got[i], old[i], name.endsWith(".bias"))) bad++
        else if (!name.endsWith(".bias")) values.push(got[i])
      } else if (gotBits[i] !== oldBits[i]) bad++
    }
    expect(bad, `${name}: wrong elements`).toBe(0)
  }
  return values
}

async function expectUnchanged(params: Params, before: HostParams): Promise<void> {
  const after = await snapshot(params)
  for (const n of Object.keys(before)) expect(sameBits(after[n].data, before[n].data), n).toBe(true)
}

describe("reinitChannels", () => {
  it("redraws exactly the selected MLP rows/columns from N(0, initializer_range²); the rest is bit-identical", async () => {
    const config = tinyConfig({ intermediateSize: 64 })
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(1))
    const before = await snapshot(params)
    const even = Array.from({ length: 32 }, (_, k) => 2 * k)
    const selection: ChannelSelection = { mlp: [{ layer: 0, channels: even }, { layer: 1, channels: even.map((c) => c + 1) }], heads: [] }
    await expectNoLeaks(dev.account, async () => {
      const out = reinitChannels(config, params, selection, new Rng(99))
      const drawn = await checkEdit(config, params, out, before, selection, (v, old) => v !== old && Number.isFinite(v))
      // 2 layers × (32 gate rows + 32 up rows + 32 down columns) × 32 values
      expect(drawn.length).toBe(6144)
      const mean = drawn.reduce((a, b) => a + b, 0) / drawn.length
      const std = Math.sqrt(drawn.reduce((a, b) => a + (b - mean) ** 2, 0) / (drawn.length - 1))
      // Standard errors: 0.2/√6144 ≈ 0.0026 for the mean, 0.2/√(2·6144) ≈ 0.0018 for the std.
      expect(Math.abs(mean)).toBeLessThan(0.013)
      expect(Math.abs(std - config.initializerRange)).toBeLessThan(0.01)
      disposeCreated(out, params)
    })
    await expectUnchanged(params, before)
    disposeAll(params)
  })

  it("heads: q rows and o columns of each head; k/v rows only for a fully selected KV group", async () => {
    const config = tinyConfig({ numHiddenLayers: 3 })
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(2))
    const before = await snapshot(params)
    // Layer 0: heads 0, 1 (all of group 0) and 2 (half of group 1); layer 2: head 3 only (no full group).
    const selection: ChannelSelection = { mlp: [{ layer: 1, channels: [0, 47] }], heads: [{ layer: 0, heads: [0, 1, 2] }, { layer: 2, heads: [3] }] }
    await expectNoLeaks(dev.account, async () => {
      const out = reinitChannels(config, params, selection, new Rng(5))
      await checkEdit(config, params, out, before, selection, (v, old) => v !== old)
      // The spelled-out consequences of the GQA rule:
      const k0 = (await out["model.layers.0.self_attn.k_proj.weight"].data()) as Float32Array
      const k0old = before["model.layers.0.self_attn.k_proj.weight"].data
      expect(sameBits(k0.slice(0, 8 * 32), k0old.slice(0, 8 * 32))).toBe(false) // group 0: redrawn
      expect(sameBits(k0.slice(8 * 32), k0old.slice(8 * 32))).toBe(true) // group 1: head 3 unselected, kept
      expect(out["model.layers.2.self_attn.k_proj.weight"]).toBe(params["model.layers.2.self_attn.k_proj.weight"])
      expect(out["model.layers.2.self_attn.v_proj.weight"]).toBe(params["model.layers.2.self_attn.v_proj.weight"])
      disposeCreated(out, params)
    })
    await expectUnchanged(params, before)
    disposeAll(params)
  })

  it("resets the selected bias entries to 0 (Hugging Face's _init_weights) when the model has biases", async () => {
    const config = tinyConfig({ attentionBias: true, mlpBias: true })
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(3))
    // initParams zeroes biases; give them values so the reset is visible.
    for (const n of Object.keys(params).filter((n) => n.endsWith(".bias"))) {
      const old = params[n]
      params[n] = old.add(0.5)
      old.dispose()
    }
    const before = await snapshot(params)
    const selection: ChannelSelection = { mlp: [{ layer: 0, channels: [3, 4] }], heads: [{ layer: 1, heads: [2, 3] }] }
    const out = reinitChannels(config, params, selection, new Rng(5))
    await checkEdit(config, params, out, before, selection, (v, old, isBias) => (isBias ? v === 0 : v !== old))
    disposeCreated(out, params)
    disposeAll(params)
  })

  it("is deterministic in the rng seed", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(4))
    const selection: ChannelSelection = { mlp: [{ layer: 1, channels: [7] }], heads: [] }
    const name = "model.layers.1.mlp.up_proj.weight"
    const a = reinitChannels(config, params, selection, new Rng(11))
    const b = reinitChannels(config, params, selection, new Rng(11))
    const c = reinitChannels(config, params, selection, new Rng(12))
    expect(sameBits((await a[name].data()) as Float32Array, (await b[name].data()) as Float32Array)).toBe(true)
    expect(sameBits((await a[name].data()) as Float32Array, (await c[name].data()) as Float32Array)).toBe(false)
    for (const r of [a, b, c]) disposeCreated(r, params)
    disposeAll(params)
  })
})

describe("zeroChannels", () => {
  it("zeroes exactly the selected rows/columns", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(6))
    const before = await snapshot(params)
    const selection: ChannelSelection = { mlp: [{ layer: 0, channels: [0, 10, 20] }], heads: [{ layer: 1, heads: [0, 1] }] }
    await expectNoLeaks(dev.account, async () => {
      const out = zeroChannels(config, params, selection)
      await checkEdit(config, params, out, before, selection, (v) => v === 0)
      disposeCreated(out, params)
    })
    await expectUnchanged(params, before)
    disposeAll(params)
  })
})

describe("bad input", () => {
  it("names the selection entry or tensor at fault", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(7))
    const fail = (selection: ChannelSelection, p: Params = params) => {
      try {
        zeroChannels(config, p, selection)
      } catch (e) {
        return e as PurifyError
      }
      throw new Error("expected a PurifyError")
    }
    const outOfRange = fail({ mlp: [{ layer: 0, channels: [1, 48] }], heads: [] })
    expect(outOfRange).toBeInstanceOf(PurifyError)
    expect(outOfRange.reason).toBe("range")
    expect(outOfRange.field).toBe("selection.mlp[0].channels[1]")
    expect(outOfRange.message).toContain("[0, 48)")
    expect(fail({ mlp: [{ layer: 0, channels: [5, 2] }], heads: [] }).field).toBe("selection.mlp[0].channels[1]")
    expect(fail({ mlp: [{ layer: 2, channels: [1] }], heads: [] }).field).toBe("selection.mlp[0].layer")
    expect(fail({ mlp: [{ layer: 1, channels: [1] }, { layer: 1, channels: [2] }], heads: [] }).field).toBe("selection.mlp[1].layer")
    expect(fail({ mlp: [{ layer: 0, channels: [] }], heads: [] }).field).toBe("selection.mlp[0].channels")
    expect(fail({ mlp: [], heads: [{ layer: 0, heads: [4] }] }).field).toBe("selection.heads[0].heads[0]")
    const wrong = { ...params, "model.layers.0.mlp.up_proj.weight": dev.zeros([47, 32]) }
    const shape = fail({ mlp: [{ layer: 0, channels: [1] }], heads: [] }, wrong)
    expect(shape.reason).toBe("shape")
    expect(shape.message).toContain("model.layers.0.mlp.up_proj.weight")
    expect(shape.message).toContain("[47, 32]")
    wrong["model.layers.0.mlp.up_proj.weight"].dispose()
    const { ["model.layers.1.mlp.down_proj.weight"]: _gone, ...missing } = params
    expect(fail({ mlp: [{ layer: 1, channels: [1] }], heads: [] }, missing).message).toContain('params["model.layers.1.mlp.down_proj.weight"]: is missing')
    disposeAll(params)
  })
})
