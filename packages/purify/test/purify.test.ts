import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Device, expectNoLeaks, Rng, type Tensor } from "@bdvax/core-tensor"
import { createLora, disposeLora, evaluateSft, initParams, type LoraAdapter, loadModelFolder, loadPeftAdapter, loraFromWeights, loraWeights, moduleShape, type Params, targetedModules } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import {
  type ChannelSelection,
  disposeDefense,
  finePrune,
  finetuneBaseline,
  lightFinetune,
  magnitudePruneBaseline,
  PAPER_FINETUNE,
  parseChannelSelection,
  PurifyError,
  purifyAdapter,
  purifyModel,
  reinitChannels,
  savePurified,
  selectionSize,
} from "../src/index.js"
import { cpuDevice, disposeAll, examples, sameBits, snapshot, tinyConfig } from "./helpers.js"

const config = tinyConfig()

async function randomAdapter(dev: Device, seed: number): Promise<LoraAdapter> {
  const rng = new Rng(seed)
  const weights: Params = {}
  for (const m of targetedModules(config, "all-linear")) {
    const [out, inp] = moduleShape(config, m)
    weights[`${m}.lora_A.weight`] = dev.randn([4, inp], rng, 0, 0.1)
    weights[`${m}.lora_B.weight`] = dev.randn([out, 4], rng, 0, 0.1)
  }
  return loraFromWeights(config, { r: 4, alpha: 8, dropout: 0, targetModules: "all-linear" }, weights)
}

const storages = (record: Params) => new Set(Object.values(record).map((t: Tensor) => t.storage))

describe("lightFinetune", () => {
  it("applies the paper's defaults (5 epochs, lr 1e-5 full / 2e-4 LoRA) and lowers the clean loss", async () => {
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(1))
    const before = await evaluateSft(config, params, examples)
    const full = await lightFinetune(config, params, examples)
    expect(full.steps).toBe(PAPER_FINETUNE.epochs * Math.ceil(examples.length / PAPER_FINETUNE.batchSize)) // 5 × 2
    expect(full.lrs[0]).toBe(1e-5)
    const afterDefault = await evaluateSft(config, params, examples)
    expect(afterDefault).toBeLessThan(before)
    // A rate a tiny random model can use shows the learning clearly.
    await lightFinetune(config, params, examples, { lr: 1e-2, epochs: 10 })
    const afterFast = await evaluateSft(config, params, examples)
    expect(afterFast).toBeLessThan(before - 1)

    const adapter = createLora(dev, config, { r: 4, alpha: 8, dropout: 0, targetModules: "all-linear", rng: new Rng(2) })
    const loraBefore = await evaluateSft(config, params, examples, { lora: loraWeights(adapter) })
    const lora = await lightFinetune(config, params, examples, { adapter, maxSteps: 3 })
    expect(lora.steps).toBe(3)
    expect(lora.lrs[0]).toBe(2e-4)
    expect(await evaluateSft(config, params, examples, { lora: loraWeights(adapter) })).toBeLessThan(loraBefore)
    await expect(lightFinetune(config, params, [], {})).rejects.toThrow(PurifyError)
    await expect(lightFinetune(config, params, examples, { epochs: 0 })).rejects.toThrow(/finetune.epochs/)
    disposeLora(adapter)
    disposeAll(params)
  })
})

describe("purifyModel / purifyAdapter", () => {
  const selection: ChannelSelection = { mlp: [{ layer: 0, channels: [2, 9] }, { layer: 1, channels: [40] }], heads: [{ layer: 1, heads: [0, 1] }] }

  it("full: reinit (heads only on request) then finetune, on copies; the input is untouched", async () => {
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(3))
    const before = await snapshot(params)
    // Surgery only: identical to reinitChannels with the same seed, heads ignored by default.
    const surgery = await purifyModel({ mode: "full", config, params, selection, clean: examples, finetune: false, reinitSeed: 4 })
    const reference = reinitChannels(config, params, { ...selection, heads: [] }, new Rng(4))
    for (const n of Object.keys(params)) {
      expect(sameBits((await surgery.params[n].data()) as Float32Array, (await reference[n].data()) as Float32Array), n).toBe(true)
      expect(surgery.params[n]).not.toBe(params[n])
    }
    expect([...storages(surgery.params)].some((s) => storages(params).has(s))).toBe(false)
    const q = "model.layers.1.self_attn.q_proj.weight"
    expect(sameBits((await surgery.params[q].data()) as Float32Array, before[q].data)).toBe(true)
    disposeDefense(surgery)
    for (const [n, t] of Object.entries(reference)) if (t !== params[n]) t.dispose()

    const withHeads = await purifyModel({ mode: "full", config, params, selection, clean: examples, finetune: false, suppressHeads: true })
    expect(sameBits((await withHeads.params[q].data()) as Float32Array, before[q].data)).toBe(false)
    disposeDefense(withHeads)

    const trained = await expectNoLeaks(dev.account, () =>
      purifyModel({ mode: "full", config, params, selection, clean: examples, finetune: { lr: 1e-3, maxSteps: 2 } }),
    )
    expect(trained.training?.steps).toBe(2)
    expect(trained.selection).toEqual({ ...selection, heads: [] })
    const after = await snapshot(params)
    for (const n of Object.keys(before)) expect(sameBits(after[n].data, before[n].data), n).toBe(true)

    const dir = await mkdtemp(join(tmpdir(), "purify-"))
    try {
      await savePurified(dir, config, trained)
      const loaded = await loadModelFolder(dev, dir)
      const name = "model.layers.0.mlp.gate_proj.weight"
      expect(sameBits((await loaded.params[name].data()) as Float32Array, (await trained.params[name].data()) as Float32Array)).toBe(true)
      disposeAll(loaded.params)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    disposeDefense(trained)
    await expect(purifyModel({ mode: "full", config, params, selection, clean: [] })).rejects.toThrow(/clean: no clean examples/)
    disposeAll(params)
  })

  it("adapter: zero the contract's rows/columns then finetune the copy; base and input adapter untouched", async () => {
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(5))
    const adapter = await randomAdapter(dev, 6)
    const before = await snapshot(adapter.weights)
    const surgery = await purifyAdapter({ config, params, adapter, selection, clean: examples, finetune: false })
    const b = (await surgery.adapter.weights["model.layers.0.mlp.up_proj.lora_B.weight"].data()) as Float32Array
    expect(b.subarray(2 * 4, 3 * 4).every((v) => v === 0)).toBe(true)
    expect(b.subarray(3 * 4, 4 * 4).some((v) => v !== 0)).toBe(true)
    const qB = "model.layers.1.self_attn.q_proj.lora_B.weight"
    expect(sameBits((await surgery.adapter.weights[qB].data()) as Float32Array, before[qB].data)).toBe(true) // heads off
    disposeDefense(surgery)

    const trained = await purifyAdapter({ config, params, adapter, selection, clean: examples, suppressHeads: true, finetune: { maxSteps: 2 } })
    expect(trained.training?.steps).toBe(2)
    expect(trained.training?.lrs[0]).toBe(2e-4)
    const after = await snapshot(adapter.weights)
    for (const n of Object.keys(before)) expect(sameBits(after[n].data, before[n].data), n).toBe(true)
    const dir = await mkdtemp(join(tmpdir(), "purify-"))
    try {
      await savePurified(dir, config, trained)
      const loaded = await loadPeftAdapter(dev, dir, config)
      expect(sameBits((await loaded.adapter.weights[qB].data()) as Float32Array, (await trained.adapter.weights[qB].data()) as Float32Array)).toBe(true)
      disposeLora(loaded.adapter)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    disposeDefense(trained)
    await expect(purifyAdapter({ mode: "full" as "adapter", config, params, adapter, selection, clean: examples })).rejects.toThrow(PurifyError)
    disposeLora(adapter)
    disposeAll(params)
  })
})

describe("trained baselines at the same budget", () => {
  it("finetune, magnitude pruning and fine-pruning run in both modes and report what they pruned", async () => {
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(7))
    const adapter = await randomAdapter(dev, 8)
    const finetune = { maxSteps: 1, lr: 1e-3 }
    const full = { mode: "full", config, params, clean: examples, finetune } as const
    const lora = { mode: "adapter", config, params, adapter, clean: examples, finetune } as const
    const before = await snapshot(params)
    for (const run of [
      () => finetuneBaseline(full),
      () => finetuneBaseline(lora),
      () => magnitudePruneBaseline({ ...full, ratio: 0.1 }),
      () => magnitudePruneBaseline({ ...lora, ratio: 0.1 }),
      () => finePrune({ ...full, ratio: 0.1 }),
      () => finePrune({ ...lora, ratio: 0.1, seed: 3 }),
    ]) {
      const result = await run()
      expect(result.training?.steps).toBe(1)
      if (result.selection !== null) expect(selectionSize(result.selection).channels).toBe(Math.round(0.1 * 96))
      disposeDefense(result)
    }
    const after = await snapshot(params)
    for (const n of Object.keys(before)) expect(sameBits(after[n].data, before[n].data), n).toBe(true)
    disposeLora(adapter)
    disposeAll(params)
  })
})

describe("parseChannelSelection", () => {
  it("accepts the contract's JSON and names the entry at fault otherwise", () => {
    const good = { mlp: [{ layer: 0, channels: [1, 2] }], heads: [{ layer: 1, heads: [3] }] }
    expect(parseChannelSelection(good, config, "sig.json")).toEqual(good)
    expect(() => parseChannelSelection({ mlp: [{ layer: 0, channels: [1, "x"] }], heads: [] }, config, "sig.json")).toThrow(/sig\.json\.mlp\[0\]\.channels\[1\]/)
    expect(() => parseChannelSelection({ mlp: [] }, config, "sig.json")).toThrow(/sig\.json\.heads/)
    expect(() => parseChannelSelection({ mlp: [{ layer: 0, channels: [60] }], heads: [] }, config, "sig.json")).toThrow(/sig\.json\.mlp\[0\]\.channels\[0\]: 60 is not a channel index in \[0, 48\)/)
  })
})
