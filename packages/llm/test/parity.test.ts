import { readFileSync } from "node:fs"
import { join } from "node:path"
import { AdamW, Device, ops, type Tensor, valueAndGrad } from "@bdvax/core-tensor"
import { describe, expect, it } from "vitest"
import { loadModelFolder } from "../src/checkpoint.js"
import { generate } from "../src/generate.js"
import { KVCache } from "../src/kv-cache.js"
import { loraWeights } from "../src/lora.js"
import { forward, type LoraWeights, type Params } from "../src/model.js"
import { loadPeftAdapter, peftTensorName } from "../src/peft.js"
import { readSafetensors } from "../src/safetensors.js"
import { BACKENDS, device } from "./devices.js"

/**
 * Parity with Hugging Face transformers 5.24 + peft 0.21 (torch 2.13) on three tiny random models built by
 * tests/parity/make_llm_fixtures.py: Llama with GQA (untied), Llama tied with llama3 rope scaling, and Mistral
 * with a sliding window shorter than the sequence. The references are float64 ("truth") unless noted.
 *
 * Tolerances (float32 compute against float64 truth, 2 layers, hidden 64):
 *   logits:            max |ours − ref| ≤ 1e-4 (the bound; torch's own float32 lands at ~2e-6)
 *   loss:              |ours − ref| ≤ 1e-5
 *   gradients:         |ours − ref| ≤ 1e-5 + 1e-3·|ref| elementwise
 *   greedy generation: identical ids (the fixture guarantees a top-2 logit margin > 1e-3 at every step)
 *   3 AdamW steps:     parameters within 1e-5 of the float64 trajectory
 */
const FIXTURES = join(import.meta.dirname, "fixtures/parity")
const MODELS = ["llama-gqa-untied", "llama-tied-llama3rope", "mistral-window"] as const

interface Expected {
  inputs: { input_ids: number[][]; labels: number[][] }
  logits: { f64: string }
  loss_grads: { loss: number; grads: Record<string, string> }
  generation: { single: { prompt: number[]; new_ids: number[] }; left_padded: { input_ids: number[][]; attention_mask: number[][]; pad_token_id: number; new_ids: number[][] } }
  kv_cache: { prompt: number[]; next_id: number; decode_logits: string }
  lora: null | { dir: string; loss: number; logits: { f64: string }; merged_logits: { f32: string }; grads: Record<string, string> }
  sft: null | { lr: number; betas: [number, number]; eps: number; steps: number; losses: number[]; final_params: Record<string, string> }
}

function load(model: string): { expected: Expected; arrays: Map<string, { data: Float32Array; shape: number[] }> } {
  const expected = JSON.parse(readFileSync(join(FIXTURES, model, "expected.json"), "utf8")) as Expected
  return { expected, arrays: new Map() }
}

async function arraysOf(model: string) {
  return readSafetensors(join(FIXTURES, model, "expected.safetensors"))
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

function expectGrad(name: string, ours: ArrayLike<number>, ref: ArrayLike<number>): void {
  expect(ours.length, name).toBe(ref.length)
  let worst = 0
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i] - ref[i]) / (1e-5 + 1e-3 * Math.abs(ref[i])))
  expect(worst, `${name}: worst error / tolerance`).toBeLessThanOrEqual(1)
}

/** HF's causal-LM loss: CE(logits[:, :-1], labels[:, 1:]), mean over all non-ignored labels of the batch. */
function sftLoss(config: Parameters<typeof forward>[0], params: Params, ids: Tensor, labels: Tensor, lora?: LoraWeights): Tensor {
  const [b, t] = ids.shape
  const { logits } = forward(config, params, ids, { lora })
  const shifted = ops.slice(logits, [0, 0, 0], [b, t - 1, config.vocabSize])
  const targets = ops.slice(labels, [0, 1], [b, t])
  return ops.softmaxCrossEntropy(shifted, targets, { ignoreIndex: -100 })
}

for (const backend of BACKENDS) {
  describe(`transformers parity [${backend}]`, () => {
    for (const model of MODELS) {
      it(`${model}: logits, loss gradients of every parameter, KV cache, greedy generation`, async () => {
        const dev = (await device(backend)) as Device | null
        if (dev === null) return
        const { expected } = load(model)
        const arrays = await arraysOf(model)
        const { config, params } = await loadModelFolder(dev, join(FIXTURES, model))
        const [b, t] = [expected.inputs.input_ids.length, expected.inputs.input_ids[0].length]
        const ids = dev.tensor(expected.inputs.input_ids.flat(), [b, t], "int32")
        const labels = dev.tensor(expected.inputs.labels.flat(), [b, t], "int32")

        // logits
        const { logits } = forward(config, params, ids)
        expect(maxAbs(await logits.data(), arrays.get(expected.logits.f64)!.data)).toBeLessThanOrEqual(1e-4)
        logits.dispose()

        // loss and the gradient of every parameter
        const [loss, grads] = valueAndGrad((p: Params) => sftLoss(config, p, ids, labels))(params)
        expect(Math.abs((await loss.item()) - expected.loss_grads.loss)).toBeLessThanOrEqual(1e-5)
        for (const [name, key] of Object.entries(expected.loss_grads.grads)) expectGrad(name, await grads[name].data(), arrays.get(key)!.data)
        expect(Object.keys(expected.loss_grads.grads).length).toBe(Object.keys(params).length)
        loss.dispose()
        for (const g of Object.values(grads)) g.dispose()

        // a KV-cached decode step equals the reference's cached step
        const cache = new KVCache(config.numHiddenLayers)
        const prompt = dev.tensor(expected.kv_cache.prompt, [1, expected.kv_cache.prompt.length], "int32")
        forward(config, params, prompt, { cache }).logits.dispose()
        const next = dev.tensor([expected.kv_cache.next_id], [1, 1], "int32")
        const step = forward(config, params, next, { cache }).logits
        expect(maxAbs(await step.data(), arrays.get(expected.kv_cache.decode_logits)!.data)).toBeLessThanOrEqual(1e-4)
        for (const x of [prompt, next, step]) x.dispose()
        cache.dispose()

        // greedy generation of 32 tokens, alone and in a left-padded batch
        const single = await generate(config, params, [expected.generation.single.prompt], { maxNewTokens: 32, stopTokens: [], temperature: 0 })
        expect(single.padded[0]).toEqual(expected.generation.single.new_ids)
        const lp = expected.generation.left_padded
        const prompts = lp.input_ids.map((row, r) => row.filter((_, j) => lp.attention_mask[r][j] === 1))
        const batch = await generate(config, params, prompts, { maxNewTokens: 32, stopTokens: [], temperature: 0, padTokenId: lp.pad_token_id })
        expect(batch.padded).toEqual(lp.new_ids)

        for (const x of [ids, labels, ...Object.values(params)]) x.dispose()
        expect(dev.memory().liveTensors).toBe(0)
      })
    }

    for (const model of ["llama-gqa-untied", "mistral-window"] as const) {
      it(`${model}: a PEFT adapter made by peft — logits, merged logits, adapter gradients`, async () => {
        const dev = await device(backend)
        if (dev === null) return
        const { expected } = load(model)
        const lora = expected.lora!
        const arrays = await arraysOf(model)
        const { config, params } = await loadModelFolder(dev, join(FIXTURES, model))
        const { adapter } = await loadPeftAdapter(dev, join(FIXTURES, model, lora.dir), config)
        const [b, t] = [expected.inputs.input_ids.length, expected.inputs.input_ids[0].length]
        const ids = dev.tensor(expected.inputs.input_ids.flat(), [b, t], "int32")
        const labels = dev.tensor(expected.inputs.labels.flat(), [b, t], "int32")

        const { logits } = forward(config, params, ids, { lora: loraWeights(adapter) })
        expect(maxAbs(await logits.data(), arrays.get(lora.logits.f64)!.data)).toBeLessThanOrEqual(1e-4)
        logits.dispose()

        const { mergeLora, disposeMerged } = await import("../src/lora.js")
        const merged = mergeLora(config, params, adapter)
        const mergedLogits = forward(config, merged, ids).logits
        expect(maxAbs(await mergedLogits.data(), arrays.get(lora.merged_logits.f32)!.data)).toBeLessThanOrEqual(1e-4)
        mergedLogits.dispose()
        disposeMerged(merged, params)

        // gradients reach only the adapter (the base is a constant of the tape)
        const [loss, grads] = valueAndGrad((w: Params) => sftLoss(config, params, ids, labels, loraWeights(adapter, { train: false }, w)))(adapter.weights)
        expect(Math.abs((await loss.item()) - lora.loss)).toBeLessThanOrEqual(1e-5)
        for (const [name, g] of Object.entries(grads)) {
          const module = name.replace(/\.lora_[AB]\.weight$/, "")
          const peftName = peftTensorName(module, name.includes("lora_A") ? "A" : "B")
          expectGrad(peftName, await g.data(), arrays.get(lora.grads[peftName])!.data)
          g.dispose()
        }
        expect(Object.keys(grads).length).toBe(Object.keys(lora.grads).length)
        loss.dispose()
        for (const x of [ids, labels, ...Object.values(params), ...Object.values(adapter.weights)]) x.dispose()
      })
    }

    it("llama-gqa-untied: three full-parameter AdamW steps follow transformers' trajectory", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const model = "llama-gqa-untied"
      const { expected } = load(model)
      const sft = expected.sft!
      const arrays = await arraysOf(model)
      const { config, params } = await loadModelFolder(dev, join(FIXTURES, model))
      const [b, t] = [expected.inputs.input_ids.length, expected.inputs.input_ids[0].length]
      const ids = dev.tensor(expected.inputs.input_ids.flat(), [b, t], "int32")
      const labels = dev.tensor(expected.inputs.labels.flat(), [b, t], "int32")
      const opt = new AdamW({ lr: sft.lr, beta1: sft.betas[0], beta2: sft.betas[1], eps: sft.eps, weightDecay: 0 })
      const step = valueAndGrad((p: Params) => sftLoss(config, p, ids, labels))
      for (let i = 0; i < sft.steps; i++) {
        const [loss, grads] = step(params)
        expect(Math.abs((await loss.item()) - sft.losses[i]), `loss before step ${i + 1}`).toBeLessThanOrEqual(1e-5)
        opt.step(params, grads)
        loss.dispose()
        for (const g of Object.values(grads)) g.dispose()
      }
      for (const [name, key] of Object.entries(sft.final_params))
        expect(maxAbs(await params[name].data(), arrays.get(key)!.data), name).toBeLessThanOrEqual(1e-5)
      opt.dispose()
      for (const x of [ids, labels, ...Object.values(params)]) x.dispose()
    })
  })
}
