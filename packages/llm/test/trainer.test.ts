import { Device, Rng } from "@bdvax/core-tensor"
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { parseModelConfig } from "../src/config.js"
import { TrainingError } from "../src/errors.js"
import { createLora, disposeLora, loraWeights } from "../src/lora.js"
import { forward, initParams, type Params } from "../src/model.js"
import type { ModelConfig } from "../src/model-config.js"
import { consoleProgress, formatDuration, type ProgressEvent } from "../src/progress.js"
import { readSafetensors } from "../src/safetensors.js"
import { logSoftmaxRow } from "../src/sampling.js"
import { learningRate, lrMultiplier, warmupStepsFor } from "../src/schedule.js"
import { collateSft, epochBatches, IGNORE_INDEX, type SftExample, shuffledOrder } from "../src/sft-data.js"
import { evaluateSft, hfNoDecay, sftLossTensor, trainSft } from "../src/trainer.js"
import { tinyConfig } from "./tiny-config.js"

const config: ModelConfig = tinyConfig()

const examples: SftExample[] = [
  { promptIds: [1, 5, 9], responseIds: [13, 7, 2] },
  { promptIds: [1, 22, 31, 8, 4], responseIds: [17, 2] },
  { promptIds: [1, 6], responseIds: [11, 12, 13, 14, 2] },
  { promptIds: [1, 30, 29, 28], responseIds: [3, 2] },
]

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

async function hostParams(params: Params): Promise<Record<string, number[]>> {
  return Object.fromEntries(await Promise.all(Object.entries(params).map(async ([n, t]) => [n, await t.toArray()] as const)))
}

/** Cross-entropy of predicting `target` after `prefix`, from a plain full forward. */
async function tokenCE(dev: Device, params: Params, prefix: readonly number[], target: number): Promise<number> {
  const input = dev.tensor(prefix, [1, prefix.length], "int32")
  const { logits } = forward(config, params, input)
  const data = (await logits.data()) as Float32Array
  logits.dispose()
  input.dispose()
  return -logSoftmaxRow(data, (prefix.length - 1) * config.vocabSize, config.vocabSize)[target]
}

describe("SFT data", () => {
  it("masks the prompt, right-pads with ignored labels and shifts on the host", () => {
    const b = collateSft(examples.slice(0, 2), { padTokenId: 0 })
    expect(b.length).toBe(7)
    expect([...b.inputIds]).toEqual([1, 5, 9, 13, 7, 2, 0, 1, 22, 31, 8, 4, 17, 2])
    expect([...b.keyMask]).toEqual([1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1])
    const I = IGNORE_INDEX
    expect([...b.targets]).toEqual([I, I, 13, 7, 2, I, I, I, I, I, 17, 2])
    expect(b.lossTokens).toBe(5)
    expect(b.inputTokens).toBe(13)
    expect(b.hasPadding).toBe(true)
    const cut = collateSft([examples[2]], { padTokenId: 0, maxLength: 4 })
    expect([...cut.targets]).toEqual([I, 11, 12])
  })

  it("shuffles reproducibly per (seed, epoch)", () => {
    const a = shuffledOrder(20, 7, 0)
    expect(a).toEqual(shuffledOrder(20, 7, 0))
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i))
    expect(a).not.toEqual(shuffledOrder(20, 7, 1))
    expect(a).not.toEqual(shuffledOrder(20, 8, 0))
    expect(epochBatches(5, 2, null)).toEqual([[0, 1], [2, 3], [4]])
  })
})

describe("schedules (transformers' get_*_schedule_with_warmup)", () => {
  it("linear and cosine with warmup match hand-computed values", () => {
    const lin = { kind: "linear" as const, totalSteps: 10, warmupSteps: 2 }
    expect([0, 1, 2, 3, 6, 9, 10].map((s) => lrMultiplier(s, lin))).toEqual([0, 0.5, 1, 7 / 8, 4 / 8, 1 / 8, 0])
    const cos = { kind: "cosine" as const, totalSteps: 10, warmupSteps: 2 }
    const want = [0, 0.5, 1, 0.5 * (1 + Math.cos(Math.PI / 8)), 0.5, 0.5 * (1 + Math.cos((Math.PI * 7) / 8)), 0]
    ;[0, 1, 2, 3, 6, 9, 10].forEach((s, i) => expect(lrMultiplier(s, cos)).toBeCloseTo(want[i], 12))
    expect(lrMultiplier(5, { kind: "cosine", totalSteps: 10 })).toBeCloseTo(0.5, 12)
    expect(lrMultiplier(0, { kind: "constant", totalSteps: 10, warmupSteps: 4 })).toBe(0)
    expect(lrMultiplier(7, { kind: "constant", totalSteps: 10, warmupSteps: 4 })).toBe(1)
    expect(learningRate(2e-4, 1, lin)).toBeCloseTo(1e-4, 15)
    expect(warmupStepsFor(100, undefined, 0.03)).toBe(3)
    expect(warmupStepsFor(100, 5, 0.5)).toBe(5)
  })

  it("the trainer steps the schedule as Hugging Face (step k uses multiplier(k))", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(1))
    const r = await trainSft(config, params, examples, { batchSize: 1, lr: 1e-3, epochs: 2, schedule: "cosine", warmupSteps: 2, shuffle: false })
    expect(r.steps).toBe(8)
    r.lrs.forEach((lr, k) => expect(lr).toBeCloseTo(1e-3 * lrMultiplier(k, { kind: "cosine", totalSteps: 8, warmupSteps: 2 }), 15))
    dev.destroy()
  })

  it("weight decay skips biases and norms, as Trainer.get_decay_parameter_names", () => {
    expect(hfNoDecay("model.norm.weight")).toBe(true)
    expect(hfNoDecay("model.layers.0.input_layernorm.weight")).toBe(true)
    expect(hfNoDecay("model.layers.0.self_attn.q_proj.bias")).toBe(true)
    expect(hfNoDecay("model.layers.0.self_attn.q_proj.weight")).toBe(false)
    expect(hfNoDecay("model.embed_tokens.weight")).toBe(false)
  })
})

describe("SFT loss and training (cpu)", () => {
  it("counts only response tokens: one unmasked label gives exactly that token's cross-entropy", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(2))
    const one: SftExample = { promptIds: [1, 5, 9, 13, 7], responseIds: [22] }
    const batch = collateSft([one], { padTokenId: 0 })
    expect(batch.lossTokens).toBe(1)
    const loss = sftLossTensor(config, params, batch)
    const want = await tokenCE(dev, params, [1, 5, 9, 13, 7], 22)
    expect(Math.abs((await loss.item()) - want)).toBeLessThan(1e-5)
    loss.dispose()
    // padded batch: the mean over both rows' response tokens, unaffected by padding
    const two = [one, { promptIds: [1, 8], responseIds: [3] }]
    const mixed = await evaluateSft(config, params, two)
    const other = await tokenCE(dev, params, [1, 8], 3)
    expect(Math.abs(mixed - (want + other) / 2)).toBeLessThan(1e-5)
    dev.destroy()
  })

  it("accumulating 2 micro-batches of 2 equals one batch of 4 (losses and parameters)", async () => {
    const dev = await Device.create("cpu")
    const a = initParams(dev, config, new Rng(3))
    const b = initParams(dev, config, new Rng(3))
    const common = { lr: 3e-3, epochs: 3, weightDecay: 0.1, maxGradNorm: 0.5, schedule: "linear" as const, warmupSteps: 1, seed: 5 }
    const big = await trainSft(config, a, examples, { ...common, batchSize: 4 })
    const acc = await trainSft(config, b, examples, { ...common, batchSize: 2, gradAccumSteps: 2 })
    expect(big.steps).toBe(3)
    expect(acc.steps).toBe(3)
    expect(maxDiff(big.losses, acc.losses)).toBeLessThan(1e-5)
    expect(maxDiff(big.gradNorms, acc.gradNorms)).toBeLessThan(1e-5)
    const [pa, pb] = [await hostParams(a), await hostParams(b)]
    for (const n of Object.keys(pa)) expect(maxDiff(pa[n], pb[n]), n).toBeLessThan(1e-5)
    // and the parameters did move
    const fresh = await hostParams(initParams(dev, config, new Rng(3)))
    expect(maxDiff(pa["model.layers.0.mlp.up_proj.weight"], fresh["model.layers.0.mlp.up_proj.weight"])).toBeGreaterThan(1e-4)
    dev.destroy()
  })

  it("detects divergence: a NaN loss or gradient stops training with a TrainingError naming the step", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(4))
    const err = await trainSft(config, params, examples, { batchSize: 2, lr: 1e30, epochs: 5, schedule: "constant", maxGradNorm: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TrainingError)
    expect((err as TrainingError).step).toBeGreaterThanOrEqual(2)
    expect((err as TrainingError).message).toMatch(new RegExp(`step ${(err as TrainingError).step}`))

    const poisoned = initParams(dev, config, new Rng(4))
    const w = poisoned["model.layers.1.mlp.gate_proj.weight"]
    poisoned["model.layers.1.mlp.gate_proj.weight"] = dev.full(w.shape, Number.NaN)
    w.dispose()
    const err2 = await trainSft(config, poisoned, examples, { batchSize: 2, lr: 1e-3 }).catch((e: unknown) => e)
    expect(err2).toBeInstanceOf(TrainingError)
    expect((err2 as TrainingError).step).toBe(1)
    dev.destroy()
  })

  it("a seed fixes the example order; another seed changes it", async () => {
    const dev = await Device.create("cpu")
    const run = async (seed: number) => (await trainSft(config, initParams(dev, config, new Rng(6)), examples, { batchSize: 1, lr: 1e-3, seed })).losses
    const a = await run(1)
    expect(await run(1)).toEqual(a)
    expect(await run(2)).not.toEqual(a)
    dev.destroy()
  })

  it("reports progress, calls the checkpoint hook and frees its temporaries", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(7))
    const events: ProgressEvent[] = []
    const checkpoints: number[] = []
    const lines: string[] = []
    const printer = consoleProgress({ every: 2, write: (l) => lines.push(l) })
    const live = dev.memory().liveTensors
    const r = await trainSft(config, params, examples, {
      batchSize: 1,
      gradAccumSteps: 2,
      epochs: 2,
      lr: 1e-3,
      onProgress: (e) => (events.push(e), printer(e)),
      checkpointEvery: 2,
      onCheckpoint: async (step) => {
        checkpoints.push(step)
      },
    })
    expect(dev.memory().liveTensors).toBe(live)
    expect(events.map((e) => e.step)).toEqual([1, 2, 3, 4])
    expect(events.map((e) => e.epoch)).toEqual([0.5, 1, 1.5, 2])
    expect(events.every((e) => e.totalSteps === 4 && e.tokensPerSecond > 0 && Number.isFinite(e.etaMs))).toBe(true)
    expect(events.map((e) => e.loss)).toEqual(r.losses)
    expect(checkpoints).toEqual([2, 4])
    expect(lines).toHaveLength(3) // steps 1, 2, 4
    expect(lines[0]).toMatch(/^step 1\/4 \| epoch 0\.50 \| loss \d+\.\d{4} \| lr .* \| grad .* \| \d+ tok\/s \| elapsed \d+s \| ETA \d+s$/)
    expect(formatDuration(3_725_000)).toBe("1h02m")
    dev.destroy()
  })

  it("full finetuning of a subset leaves the other parameters alone", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(8))
    const before = await hostParams(params)
    const trainable = ["model.layers.1.self_attn.q_proj.weight", "model.norm.weight"]
    await trainSft(config, params, examples, { mode: { kind: "full", trainable }, batchSize: 2, lr: 1e-2, schedule: "constant" })
    const after = await hostParams(params)
    for (const n of Object.keys(before))
      if (trainable.includes(n)) expect(maxDiff(after[n], before[n]), n).toBeGreaterThan(1e-4)
      else expect(after[n], n).toEqual(before[n])
    dev.destroy()
  })

  const target: SftExample[] = [
    { promptIds: [1, 5, 9], responseIds: [13, 7, 22, 31, 2] },
    { promptIds: [1, 6, 10, 4], responseIds: [13, 7, 22, 31, 2] },
  ]

  it("a tiny model learns a fixed response (full finetuning)", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(9))
    const initial = await evaluateSft(config, params, target)
    const r = await trainSft(config, params, target, { batchSize: 2, lr: 1e-2, epochs: 40, schedule: "constant", maxGradNorm: 1 })
    const final = await evaluateSft(config, params, target)
    expect(r.losses[0]).toBeCloseTo(initial, 4)
    expect(final).toBeLessThan(initial * 0.05)
    dev.destroy()
  })

  it("a tiny model learns a fixed response (LoRA, with dropout)", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(10))
    const adapter = createLora(dev, config, { r: 8, alpha: 16, dropout: 0.05, targetModules: "all-linear", rng: new Rng(11) })
    const initial = await evaluateSft(config, params, target, { lora: loraWeights(adapter) })
    const r = await trainSft(config, params, target, { mode: { kind: "lora", adapter }, batchSize: 2, lr: 2e-2, epochs: 60, schedule: "constant", seed: 3 })
    const final = await evaluateSft(config, params, target, { lora: loraWeights(adapter) })
    expect(r.losses[0]).toBeCloseTo(initial, 4)
    expect(final).toBeLessThan(initial * 0.1)
    disposeLora(adapter)
    dev.destroy()
  })
})

describe("SFT on webgpu", () => {
  it("LoRA training steps match the CPU's", async () => {
    const run = async (name: "cpu" | "webgpu") => {
      const dev = await Device.create(name)
      const params = initParams(dev, config, new Rng(12))
      const adapter = createLora(dev, config, { r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj", "down_proj"], rng: new Rng(13) })
      const r = await trainSft(config, params, examples, { mode: { kind: "lora", adapter }, batchSize: 2, lr: 1e-2, schedule: "constant", epochs: 2, seed: 1 })
      const b = await adapter.weights["model.layers.1.mlp.down_proj.lora_B.weight"].toArray()
      dev.destroy()
      return { losses: r.losses, b }
    }
    const [cpu, gpu] = [await run("cpu"), await run("webgpu")]
    expect(maxDiff(cpu.losses, gpu.losses)).toBeLessThan(1e-4)
    expect(maxDiff(cpu.b, gpu.b)).toBeLessThan(1e-4)
  })
})

// ---- parity with torch.optim.AdamW (fixtures from tests/parity/make_llm_fixtures.py) --------------------------

const fixture = join(import.meta.dirname, "fixtures", "parity", "llama-gqa-untied")
const haveFixture = existsSync(join(fixture, "expected.json"))

describe.skipIf(!haveFixture)("SFT parity with transformers + torch.optim.AdamW (llama-gqa-untied)", () => {
  it("3 full-parameter AdamW steps give torch's losses and parameters", async () => {
    const expected = JSON.parse(await readFile(join(fixture, "expected.json"), "utf8"))
    const c = parseModelConfig(JSON.parse(await readFile(join(fixture, "config.json"), "utf8")), "config.json")
    const dev = await Device.create("cpu")
    const weights = await readSafetensors(join(fixture, "model.safetensors"))
    const params: Params = {}
    for (const [name, t] of weights) params[name] = dev.tensor(t.data, t.shape)
    const sft = expected.sft
    const { input_ids: inputIds, prompt_masked_positions: promptLen } = expected.inputs as { input_ids: number[][]; prompt_masked_positions: number }
    const data: SftExample[] = inputIds.map((row) => ({ promptIds: row.slice(0, promptLen), responseIds: row.slice(promptLen) }))
    const r = await trainSft(c, params, data, {
      batchSize: data.length,
      epochs: sft.steps,
      lr: sft.lr,
      betas: sft.betas,
      eps: sft.eps,
      weightDecay: sft.weight_decay,
      schedule: "constant",
      maxGradNorm: 0,
      shuffle: false,
    })
    expect(r.steps).toBe(sft.steps)
    for (let k = 0; k < sft.steps; k++) expect(Math.abs(r.losses[k] - sft.losses[k]), `loss ${k}`).toBeLessThan(1e-5)
    expect(Math.abs((await evaluateSft(c, params, data)) - sft.loss_after)).toBeLessThan(1e-5)
    const arrays = await readSafetensors(join(fixture, expected.arrays))
    for (const [name, key] of Object.entries(sft.final_params as Record<string, string>)) {
      const want = arrays.get(key)!.data
      // float32 vs float64 truth: measured ≤ 1.5e-6 (lr 1e-3, 3 steps)
      expect(maxDiff(await params[name].toArray(), want), name).toBeLessThan(1e-5)
    }
    dev.destroy()
  })
})
