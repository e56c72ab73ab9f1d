import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { HostRandom, TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig } from "@bdvax/attacks"
import { Device, expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { initParams, type LoraAdapter, loraFromWeights, type ModelConfig, moduleShape, type Params, type ProgressEvent, Tokenizer } from "@bdvax/llm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  buildSignature,
  linearWeightNames,
  modelShape,
  type PairOptions,
  readSignatureFile,
  resolvePairSettings,
  selectionSize,
  signatureSettings,
  trainVariantPair,
  type VariantPairResult,
  writeSignatureFile,
} from "../src/index.js"

/**
 * Real variant pairs on a tiny random Llama (GQA: 4 query heads, 2 KV heads) over the toy tokenizer: a few
 * optimizer steps per run, N = 2, in full and adapter mode.
 */
let dev: Device
let tokenizer: Tokenizer
let config: ModelConfig
let params: Params
let dir: string
const clean = toyInstructionRecords().slice(0, 32)

beforeAll(async () => {
  dev = await Device.create("cpu")
  tokenizer = await Tokenizer.fromFolder(TOY_TOKENIZER_DIR)
  config = toyLlamaConfig(tokenizer, { hiddenSize: 32, intermediateSize: 48, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8 })
  params = initParams(dev, config, new Rng(3))
  dir = await mkdtemp(join(tmpdir(), "bdvax-signature-pairs-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
  dev.destroy()
})

const training = { epochs: 1, maxSteps: 3, batchSize: 4, lr: 3e-3 }

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0)

async function snapshot(p: Params, name: string): Promise<number[]> {
  return Array.from(await p[name].data())
}

function expectSameDelta(a: VariantPairResult, b: VariantPairResult): void {
  expect(Object.keys(b.delta.tensors)).toEqual(Object.keys(a.delta.tensors))
  for (const [name, t] of Object.entries(a.delta.tensors)) expect(b.delta.tensors[name].data).toEqual(t.data)
}

describe("variant pairs, full mode", () => {
  let options: PairOptions
  const events: Array<[number, string, ProgressEvent]> = []
  let results: VariantPairResult[]

  beforeAll(async () => {
    options = {
      model: { config, params },
      tokenizer,
      clean,
      numVariants: 2,
      seed: 11,
      subsetSize: 12,
      poisonRatio: 0.5,
      training,
      onProgress: (i, run, e) => events.push([i, run, e]),
    }
    const before = await snapshot(params, "model.layers.1.mlp.down_proj.weight")
    results = await expectNoLeaks(dev.account, async () => [await trainVariantPair(options, 0), await trainVariantPair(options, 1)])
    expect(await snapshot(params, "model.layers.1.mlp.down_proj.weight")).toEqual(before)
  }, 120_000)

  it("deltas hold every attention and MLP weight with its shape, nothing else", () => {
    const shape = modelShape(config)
    for (const r of results) {
      expect(r.delta.mode).toBe("full")
      expect(Object.keys(r.delta.tensors)).toEqual(linearWeightNames(shape))
      for (const [name, t] of Object.entries(r.delta.tensors)) {
        expect(t.shape).toEqual(moduleShape(config, name.replace(/\.weight$/, "")))
        expect(t.data.length).toBe(t.shape[0] * t.shape[1])
      }
    }
    expect(results[0].delta.trigger).not.toEqual(results[1].delta.trigger)
  })

  it("the clean and poisoned runs differ, and so do the two variants", () => {
    for (const r of results) {
      expect(r.training.clean.steps).toBe(3)
      expect(r.training.poisoned.steps).toBe(3)
      expect(r.poisonedCopies).toBe(6)
      for (const t of Object.values(r.delta.tensors)) expect(maxAbs(t.data)).toBeGreaterThan(1e-6)
      expect(r.training.poisoned.losses).not.toEqual(r.training.clean.losses)
    }
    const name = "model.layers.0.mlp.gate_proj.weight"
    expect(results[0].delta.tensors[name].data).not.toEqual(results[1].delta.tensors[name].data)
  })

  it("reports progress per variant and run", () => {
    const key = (i: number, run: string) => events.filter(([v, r]) => v === i && r === run).map(([, , e]) => e.step)
    for (const i of [0, 1]) for (const run of ["clean", "poisoned"]) expect(key(i, run)).toEqual([1, 2, 3])
  })

  it("is deterministic: the same options give the identical delta", async () => {
    expectSameDelta(results[0], await trainVariantPair(options, 0))
  }, 60_000)
})

describe("variant pairs, adapter mode", () => {
  let adapter: LoraAdapter
  let options: PairOptions
  let results: VariantPairResult[]
  const targets = ["q_proj", "v_proj", "gate_proj", "down_proj"]

  beforeAll(async () => {
    // A "suspicious" adapter with non-zero A and B (a trained one), r = 4, alpha 8
    const rng = new HostRandom(4)
    const weights: Params = {}
    for (let l = 0; l < config.numHiddenLayers; l++)
      for (const m of [`model.layers.${l}.self_attn.q_proj`, `model.layers.${l}.self_attn.v_proj`, `model.layers.${l}.mlp.gate_proj`, `model.layers.${l}.mlp.down_proj`]) {
        const [out, inp] = moduleShape(config, m)
        weights[`${m}.lora_A.weight`] = dev.tensor(Float32Array.from({ length: 4 * inp }, () => 0.2 * (rng.next() - 0.5)), [4, inp])
        weights[`${m}.lora_B.weight`] = dev.tensor(Float32Array.from({ length: out * 4 }, () => 0.02 * (rng.next() - 0.5)), [out, 4])
      }
    adapter = loraFromWeights(config, { r: 4, alpha: 8, dropout: 0.1, targetModules: targets }, weights)
    options = { model: { config, params, adapter }, tokenizer, clean, numVariants: 2, seed: 11, subsetSize: 12, poisonRatio: 0.5, training }
    const before = await snapshot(adapter.weights, "model.layers.0.mlp.gate_proj.lora_B.weight")
    results = await expectNoLeaks(dev.account, async () => [await trainVariantPair(options, 0), await trainVariantPair(options, 1)])
    expect(await snapshot(adapter.weights, "model.layers.0.mlp.gate_proj.lora_B.weight")).toEqual(before)
  }, 120_000)

  it("deltas are the effective updates of the adapted modules only, with the weights' shapes", () => {
    for (const r of results) {
      expect(r.delta.mode).toBe("adapter")
      expect(Object.keys(r.delta.tensors)).toEqual(adapter.modules.map((m) => `${m}.weight`))
      expect(Object.keys(r.delta.tensors).some((n) => n.includes("k_proj") || n.includes("up_proj"))).toBe(false)
      for (const [name, t] of Object.entries(r.delta.tensors)) {
        expect(t.shape).toEqual(moduleShape(config, name.replace(/\.weight$/, "")))
        expect(maxAbs(t.data)).toBeGreaterThan(1e-7)
      }
    }
  })

  it("is deterministic (LoRA dropout included): the same options give the identical delta", async () => {
    expectSameDelta(results[1], await trainVariantPair(options, 1))
  }, 60_000)

  it("buildSignature: scores, selection (ρ = 0.35 of the scored channels) and a file that reads back", async () => {
    const built = await buildSignature({ ...options, rho: 0.35, rhoHeads: 0.25, deltaDir: join(dir, "deltas") })
    const sig = built.signature
    expect(sig.mode).toBe("adapter")
    expect(sig.scores.length).toBe(2)
    for (const l of sig.scores) {
      expect(l.mlp!.total.length).toBe(48)
      expect(l.heads!.total.length).toBe(4)
    }
    // the pairs built here are the ones trainVariantPair gave
    expect(built.deltaFiles!.length).toBe(2)
    expect(built.pairs.map((p) => p.cleanLosses)).toEqual(results.map((r) => r.training.clean.losses))
    expect(selectionSize(sig.selection)).toEqual({ channels: Math.round(0.35 * 96), heads: 2 })
    expect(sig.settings).toMatchObject({ numVariants: 2, seed: 11, lambda: 0.01, rho: 0.35, training: { lr: 3e-3, maxSteps: 3, promptFormat: "alpaca" } })
    const path = join(dir, "signature.json")
    await writeSignatureFile(path, sig)
    expect(await readSignatureFile(path)).toEqual(sig)
  }, 120_000)
})

describe("settings", () => {
  it("defaults follow the paper (lr 1e-5 full / 2e-4 adapter, ρ 3% / 35%, λ 0.01, N 6) and generateVariants", () => {
    const full = resolvePairSettings({ model: { config, params }, tokenizer, clean })
    expect(full).toMatchObject({ mode: "full", numVariants: 6, seed: 0, subsetSize: 16, poisonRatio: 0.2, training: { lr: 1e-5, epochs: 3, batchSize: 4 } })
    expect(full.variants.map((v) => v.index)).toEqual([0, 1, 2, 3, 4, 5])
    expect(signatureSettings(full, {})).toMatchObject({ lambda: 0.01, rho: 0.03, rhoHeads: null, criterion: "total" })
    const adapter = loraFromWeights(config, { r: 1, alpha: 1, dropout: 0, targetModules: ["q_proj"] }, {})
    const lora = resolvePairSettings({ model: { config, params, adapter }, tokenizer, clean, training: { maxGradNorm: Infinity } })
    expect(lora.training).toMatchObject({ lr: 2e-4, maxGradNorm: 0 })
    expect(signatureSettings(lora, {}).rho).toBe(0.35)
  })

  it("bad settings fail before any training", async () => {
    const base = { model: { config, params }, tokenizer, clean }
    expect(() => resolvePairSettings({ ...base, training: { epochs: 1.5 } })).toThrow(/training\.epochs must be a positive integer, got 1\.5/)
    expect(() => resolvePairSettings({ ...base, training: { lr: Number.NaN } })).toThrow(/training\.lr must be a finite number ≥ 0/)
    expect(() => resolvePairSettings({ ...base, subsetSize: 33 })).toThrow(/subsetSize must be an integer in \[1, 32\]/)
    expect(() => resolvePairSettings({ ...base, seed: -1 })).toThrow(/seed must be a non-negative safe integer/)
    await expect(buildSignature({ ...base, rho: 2 })).rejects.toThrow(/rho must be in \[0, 1\], got 2/)
    await expect(trainVariantPair({ ...base, numVariants: 2 }, 2)).rejects.toThrow(/variant 2 is outside \[0, 2\)/)
  })
})
