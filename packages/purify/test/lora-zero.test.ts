import { expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { disposeLora, effectiveDelta, type LoraAdapter, loraFromWeights, type ModelConfig, moduleShape, targetedModules, type TargetModules } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import { type ChannelSelection, copyAdapter, disposeCreated, PurifyError, zeroLoraChannels } from "../src/index.js"
import { cpuDevice, sameBits, snapshot, tinyConfig } from "./helpers.js"

/** An adapter with random A and B (a fresh PEFT adapter has B = 0, which would hide the zeroing). */
async function randomAdapter(config: ModelConfig, targetModules: TargetModules, seed: number): Promise<LoraAdapter> {
  const dev = await cpuDevice()
  const rng = new Rng(seed)
  const r = 4
  const weights: Record<string, ReturnType<typeof dev.randn>> = {}
  for (const m of targetedModules(config, targetModules)) {
    const [out, inp] = moduleShape(config, m)
    weights[`${m}.lora_A.weight`] = dev.randn([r, inp], rng)
    weights[`${m}.lora_B.weight`] = dev.randn([out, r], rng)
  }
  return loraFromWeights(config, { r, alpha: 8, dropout: 0, targetModules }, weights)
}

/** The contract's zero set, spelled out: which (row, col) of each adapter tensor must become 0. */
function zeroSet(config: ModelConfig, selection: ChannelSelection): Map<string, (r: number, c: number) => boolean> {
  const d = config.headDim
  const per = config.numAttentionHeads / config.numKeyValueHeads
  const map = new Map<string, (r: number, c: number) => boolean>()
  for (const { layer, channels } of selection.mlp) {
    const s = new Set(channels)
    map.set(`model.layers.${layer}.mlp.gate_proj.lora_B.weight`, (r) => s.has(r))
    map.set(`model.layers.${layer}.mlp.up_proj.lora_B.weight`, (r) => s.has(r))
    map.set(`model.layers.${layer}.mlp.down_proj.lora_A.weight`, (_r, c) => s.has(c))
  }
  for (const { layer, heads } of selection.heads) {
    const s = new Set(heads)
    const full = (g: number) => Array.from({ length: per }, (_, k) => s.has(g * per + k)).every(Boolean)
    map.set(`model.layers.${layer}.self_attn.q_proj.lora_B.weight`, (r) => s.has(Math.floor(r / d)))
    map.set(`model.layers.${layer}.self_attn.o_proj.lora_A.weight`, (_r, c) => s.has(Math.floor(c / d)))
    map.set(`model.layers.${layer}.self_attn.k_proj.lora_B.weight`, (r) => full(Math.floor(r / d)))
    map.set(`model.layers.${layer}.self_attn.v_proj.lora_B.weight`, (r) => full(Math.floor(r / d)))
  }
  return map
}

describe("zeroLoraChannels", () => {
  it("zeroes exactly B rows / A columns of the contract (GQA: k/v rows only for a full group), copy-on-write", async () => {
    const config = tinyConfig({ numHiddenLayers: 3 })
    const dev = await cpuDevice()
    const adapter = await randomAdapter(config, "all-linear", 1)
    const before = await snapshot(adapter.weights)
    const selection: ChannelSelection = {
      mlp: [{ layer: 0, channels: [0, 5, 47] }, { layer: 2, channels: [12] }],
      heads: [{ layer: 1, heads: [2, 3] }, { layer: 2, heads: [0] }], // layer 1: group 1 full; layer 2: group 0 half
    }
    const expected = zeroSet(config, selection)
    await expectNoLeaks(dev.account, async () => {
      const out = zeroLoraChannels(config, adapter, selection)
      expect(out.modules).toEqual(adapter.modules)
      let zeroed = 0
      for (const name of Object.keys(adapter.weights)) {
        const pred = expected.get(name)
        const got = (await out.weights[name].data()) as Float32Array
        const old = before[name].data
        const cols = before[name].shape[1]
        const anySelected = pred !== undefined && got.some((_, i) => pred(Math.floor(i / cols), i % cols))
        if (!anySelected) expect(out.weights[name], name).toBe(adapter.weights[name])
        for (let i = 0; i < got.length; i++) {
          const sel = pred?.(Math.floor(i / cols), i % cols) ?? false
          if (sel) {
            expect(got[i], `${name}[${i}]`).toBe(0)
            zeroed++
          } else expect(sameBits(got.subarray(i, i + 1), old.subarray(i, i + 1)), `${name}[${i}]`).toBe(true)
        }
      }
      // gate+up B: (3 + 1) rows × r 4 each; down A: 4 columns × r 4; q B: 3 heads × 8 rows × 4; k,v B: 1 group × 8 × 4;
      // o A: 3 heads × 8 columns × 4.
      expect(zeroed).toBe(2 * 4 * 4 + 4 * 4 + 3 * 8 * 4 + 2 * 8 * 4 + 3 * 8 * 4)
      // Layer 2 selects head 0 only: its k/v B are untouched objects.
      expect(out.weights["model.layers.2.self_attn.k_proj.lora_B.weight"]).toBe(adapter.weights["model.layers.2.self_attn.k_proj.lora_B.weight"])
      // The effective update loses exactly those rows/columns.
      const gate = effectiveDelta(out, "model.layers.0.mlp.gate_proj")
      const gateOld = effectiveDelta(adapter, "model.layers.0.mlp.gate_proj")
      const g = (await gate.data()) as Float32Array
      const go = (await gateOld.data()) as Float32Array
      for (let r = 0; r < 48; r++) {
        const row = g.subarray(r * 32, (r + 1) * 32)
        if ([0, 5, 47].includes(r)) expect(row.every((v) => v === 0)).toBe(true)
        else expect(sameBits(row, go.subarray(r * 32, (r + 1) * 32))).toBe(true)
      }
      const downDelta = effectiveDelta(out, "model.layers.0.mlp.down_proj")
      const down = (await downDelta.data()) as Float32Array
      downDelta.dispose()
      for (let i = 0; i < 32; i++) for (const c of [0, 5, 47]) expect(down[i * 48 + c]).toBe(0)
      gate.dispose()
      gateOld.dispose()
      disposeCreated(out.weights, adapter.weights)
    })
    const after = await snapshot(adapter.weights)
    for (const n of Object.keys(before)) expect(sameBits(after[n].data, before[n].data), n).toBe(true)
    disposeLora(adapter)
  })

  it("skips modules the adapter does not target", async () => {
    const config = tinyConfig()
    const adapter = await randomAdapter(config, ["q_proj", "down_proj"], 2)
    const selection: ChannelSelection = { mlp: [{ layer: 1, channels: [3] }], heads: [{ layer: 0, heads: [0, 1] }] }
    const out = zeroLoraChannels(config, adapter, selection)
    expect(Object.keys(out.weights).sort()).toEqual(Object.keys(adapter.weights).sort())
    const a = (await out.weights["model.layers.1.mlp.down_proj.lora_A.weight"].data()) as Float32Array
    for (let r = 0; r < 4; r++) expect(a[r * 48 + 3]).toBe(0)
    const q = (await out.weights["model.layers.0.self_attn.q_proj.lora_B.weight"].data()) as Float32Array
    expect(q.subarray(0, 16 * 4).every((v) => v === 0)).toBe(true)
    expect(q.subarray(16 * 4).some((v) => v !== 0)).toBe(true)
    disposeCreated(out.weights, adapter.weights)
    disposeLora(adapter)
  })

  it("rejects an adapter tensor whose shape disagrees with the model, naming it", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const adapter = await randomAdapter(config, ["up_proj"], 3)
    const name = "model.layers.0.mlp.up_proj.lora_B.weight"
    const bad: LoraAdapter = { ...adapter, weights: { ...adapter.weights, [name]: dev.zeros([40, 4]) } }
    const err = (() => {
      try {
        zeroLoraChannels(config, bad, { mlp: [{ layer: 0, channels: [1] }], heads: [] })
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(PurifyError)
    expect((err as PurifyError).message).toContain(name)
    expect((err as PurifyError).message).toContain("[48, 4]")
    bad.weights[name].dispose()
    disposeLora(adapter)
  })

  it("copyAdapter makes new storage (training the copy cannot reach the original)", async () => {
    const config = tinyConfig()
    const adapter = await randomAdapter(config, ["v_proj"], 4)
    const copy = copyAdapter(adapter)
    for (const n of Object.keys(adapter.weights)) {
      expect(copy.weights[n]).not.toBe(adapter.weights[n])
      expect(copy.weights[n].storage).not.toBe(adapter.weights[n].storage)
      expect(sameBits((await copy.weights[n].data()) as Float32Array, (await adapter.weights[n].data()) as Float32Array)).toBe(true)
    }
    disposeLora(copy)
    disposeLora(adapter)
  })
})
