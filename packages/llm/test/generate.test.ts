import { Device, Rng } from "@bdvax/core-tensor"
import { existsSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parseModelConfig } from "../src/config.js"
import { generate, leftPad } from "../src/generate.js"
import { createLora, disposeLora, disposeMerged, loraWeights, mergeLora } from "../src/lora.js"
import { forward, initParams, type Params } from "../src/model.js"
import type { ModelConfig } from "../src/model-config.js"
import { readSafetensors } from "../src/safetensors.js"
import { argmax, logSoftmaxRow, sampleRow } from "../src/sampling.js"
import { tinyConfig } from "./tiny-config.js"

const config: ModelConfig = tinyConfig({
  vocabSize: 48,
  // a large init makes the random model's next-token distribution peaked and varied (no near-ties)
  initializerRange: 0.5,
})

const prompts = [
  [1, 17, 42, 9, 5, 33],
  [1, 8, 3],
  [1, 44, 20, 11, 7],
]

/** Full forward (no cache) of one sequence: the last position's logits. */
async function lastLogits(dev: Device, params: Params, seq: readonly number[]): Promise<Float32Array> {
  const input = dev.tensor(seq, [1, seq.length], "int32")
  const { logits } = forward(config, params, input)
  const data = (await logits.data()) as Float32Array
  logits.dispose()
  input.dispose()
  return data.slice((seq.length - 1) * config.vocabSize)
}

async function greedyByRecompute(dev: Device, params: Params, prompt: readonly number[], n: number): Promise<number[]> {
  const seq = [...prompt]
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t = argmax(await lastLogits(dev, params, seq))
    out.push(t)
    seq.push(t)
  }
  return out
}

describe("sampling", () => {
  it("argmax takes the first maximum, like torch.argmax", () => {
    expect(argmax([1, 3, 3, 2])).toBe(1)
    expect(argmax([-Infinity, -Infinity])).toBe(0)
    expect(argmax([0, 5, 1, 5], 2, 2)).toBe(1)
  })

  it("top-k 1, top-p → 0 and temperature 0 all reduce to argmax", () => {
    const row = [0.1, 2.5, 2.5, -1, 0.3]
    for (const u of [0, 0.3, 0.999]) {
      expect(sampleRow(row, 0, 5, { temperature: 1, topK: 1 }, u)).toBe(1)
      expect(sampleRow(row, 0, 5, { temperature: 1, topP: 1e-9 }, u)).toBe(1)
      expect(sampleRow(row, 0, 5, { temperature: 0 }, u)).toBe(1)
    }
  })

  it("samples by inverse CDF over the tempered distribution, restricted to the nucleus", () => {
    const row = [Math.log(0.5), Math.log(0.3), Math.log(0.2)]
    expect(sampleRow(row, 0, 3, { temperature: 1 }, 0.49)).toBe(0)
    expect(sampleRow(row, 0, 3, { temperature: 1 }, 0.51)).toBe(1)
    expect(sampleRow(row, 0, 3, { temperature: 1 }, 0.81)).toBe(2)
    // top-p 0.7: the mass before token 1 (0.5) is < 0.7 so it stays; before token 2 (0.8) is not → renormalise over {0, 1}
    expect(sampleRow(row, 0, 3, { temperature: 1, topP: 0.7 }, 0.99)).toBe(1)
    expect(sampleRow(row, 0, 3, { temperature: 1, topP: 0.7 }, 0.6)).toBe(0)
    const ls = logSoftmaxRow(row)
    expect(ls[1]).toBeCloseTo(Math.log(0.3), 12)
  })

  it("left padding follows Hugging Face's attention mask and position ids", () => {
    expect(leftPad([[5, 6, 7], [8]], 0)).toEqual({
      ids: [
        [5, 6, 7],
        [0, 0, 8],
      ],
      mask: [
        [1, 1, 1],
        [0, 0, 1],
      ],
      positions: [
        [0, 1, 2],
        [1, 1, 0],
      ],
    })
  })
})

describe("generate (cpu)", () => {
  let dev: Device
  let params: Params
  beforeAll(async () => {
    dev = await Device.create("cpu")
    params = initParams(dev, config, new Rng(11))
  })
  afterAll(() => dev.destroy())

  it("greedy with a KV cache equals argmax of the full forward, step by step", async () => {
    const n = 10
    const r = await generate(config, params, [prompts[0]], { maxNewTokens: n, temperature: 0, stopTokens: [] })
    const want = await greedyByRecompute(dev, params, prompts[0], n)
    expect(r.tokens[0]).toEqual(want)
    expect(new Set(want).size).toBeGreaterThan(2) // a varied continuation, not one token repeated
    expect(r.finishReasons).toEqual(["length"])
    expect(r.stats.newTokens).toBe(n)
    expect(r.stats.steps).toBe(n)
    expect(r.stats.tokensPerSecond).toBeGreaterThan(0)
  })

  it("a left-padded batch gives each prompt what it gets alone", async () => {
    const n = 8
    const batch = await generate(config, params, prompts, { maxNewTokens: n, stopTokens: [], logprobs: true })
    for (let i = 0; i < prompts.length; i++) {
      const alone = await generate(config, params, [prompts[i]], { maxNewTokens: n, stopTokens: [], logprobs: true })
      expect(batch.tokens[i], `row ${i}`).toEqual(alone.tokens[0])
      for (let j = 0; j < n; j++) expect(batch.logprobs![i][j]).toBeCloseTo(alone.logprobs![0][j], 4)
    }
    // prefilling the padded prompts two positions at a time through the cache changes nothing
    const chunked = await generate(config, params, prompts, { maxNewTokens: n, stopTokens: [], prefillChunk: 2 })
    expect(chunked.tokens).toEqual(batch.tokens)
    // logprobs are the model's log-softmax at the chosen token
    const first = await lastLogits(dev, params, prompts[1])
    expect(batch.logprobs![1][0]).toBeCloseTo(logSoftmaxRow(first)[batch.tokens[1][0]], 5)
  })

  it("stops a row at a stop token (kept), pads it afterwards, and lets the others run on", async () => {
    const free = await generate(config, params, prompts, { maxNewTokens: 8, stopTokens: [] })
    const stopToken = free.tokens[1][2]
    const firstAt = free.tokens[1].indexOf(stopToken)
    const events: Array<[number, number, boolean]> = []
    const r = await generate(config, params, prompts, {
      maxNewTokens: 8,
      stopTokens: [stopToken],
      onToken: (e) => events.push([e.row, e.token, e.stop]),
    })
    expect(r.tokens[1]).toEqual(free.tokens[1].slice(0, firstAt + 1))
    expect(r.finishReasons[1]).toBe("stop")
    expect(r.padded[1].slice(firstAt + 1).every((t) => t === 0)).toBe(true)
    for (const i of [0, 2]) {
      const k = free.tokens[i].indexOf(stopToken)
      expect(r.tokens[i]).toEqual(k < 0 ? free.tokens[i] : free.tokens[i].slice(0, k + 1))
    }
    expect(events.filter(([row]) => row === 1).map(([, t]) => t)).toEqual(r.tokens[1])
    expect(events.filter(([, , stop]) => stop).length).toBe(r.finishReasons.filter((f) => f === "stop").length)
    // every row stopping ends generation early
    const all = await generate(config, params, [prompts[0]], { maxNewTokens: 8, stopTokens: [free.tokens[0][0]] })
    expect(all.tokens[0]).toEqual([free.tokens[0][0]])
    expect(all.stats.steps).toBe(1)
  })

  it("sampling is reproducible with a seed; top-p → 0 is greedy", async () => {
    const opts = { maxNewTokens: 12, temperature: 1.5, stopTokens: [] }
    const a = await generate(config, params, prompts, { ...opts, rng: new Rng(5) })
    const b = await generate(config, params, prompts, { ...opts, rng: new Rng(5) })
    const c = await generate(config, params, prompts, { ...opts, rng: new Rng(6) })
    expect(a.tokens).toEqual(b.tokens)
    expect(a.tokens).not.toEqual(c.tokens)
    const greedy = await generate(config, params, prompts, { maxNewTokens: 12, stopTokens: [] })
    const nucleus = await generate(config, params, prompts, { ...opts, topP: 1e-6, rng: new Rng(7) })
    expect(nucleus.tokens).toEqual(greedy.tokens)
    await expect(generate(config, params, prompts, opts)).rejects.toThrow(/rng/)
  })

  it("generates with a LoRA adapter as with the merged model", async () => {
    const adapter = createLora(dev, config, { r: 4, alpha: 8, dropout: 0, targetModules: "all-linear", rng: new Rng(3) })
    for (const m of adapter.modules) {
      const name = `${m}.lora_B.weight`
      const zero = adapter.weights[name]
      adapter.weights[name] = dev.randn(zero.shape, new Rng(4 + m.length), 0, 0.2)
      zero.dispose()
    }
    const merged = mergeLora(config, params, adapter)
    const viaAdapter = await generate(config, params, prompts, { maxNewTokens: 6, stopTokens: [], lora: loraWeights(adapter) })
    const viaMerge = await generate(config, merged, prompts, { maxNewTokens: 6, stopTokens: [] })
    const base = await generate(config, params, prompts, { maxNewTokens: 6, stopTokens: [] })
    expect(viaAdapter.tokens).toEqual(viaMerge.tokens)
    expect(viaAdapter.tokens).not.toEqual(base.tokens)
    disposeMerged(merged, params)
    disposeLora(adapter)
  })

  it("frees everything it allocates", async () => {
    const before = dev.memory().liveTensors
    await generate(config, params, prompts, { maxNewTokens: 4, stopTokens: [] })
    expect(dev.memory().liveTensors).toBe(before)
  })

  it("validates its inputs", async () => {
    await expect(generate(config, params, [[]], { maxNewTokens: 2 })).rejects.toThrow(/empty/)
    await expect(generate(config, params, [[1, 99]], { maxNewTokens: 2 })).rejects.toThrow(/vocabulary/)
    await expect(generate(config, params, [[1, 3]], { maxNewTokens: 2, temperature: 1, topP: 0, rng: new Rng(1) })).rejects.toThrow(/topP/)
    expect((await generate(config, params, [[1, 2]], { maxNewTokens: 0 })).tokens).toEqual([[]])
  })
})

describe("generate (webgpu)", () => {
  it("a left-padded batch with a KV cache gives the CPU's greedy tokens", async () => {
    const gpu = await Device.create("webgpu")
    const cpu = await Device.create("cpu")
    const pg = initParams(gpu, config, new Rng(11))
    const pc = initParams(cpu, config, new Rng(11))
    const g = await generate(config, pg, prompts, { maxNewTokens: 5, stopTokens: [] })
    const c = await generate(config, pc, prompts, { maxNewTokens: 5, stopTokens: [] })
    expect(g.tokens).toEqual(c.tokens)
    gpu.destroy()
    cpu.destroy()
  })
})

// ---- transformers' generate() (fixtures from tests/parity/make_llm_fixtures.py) --------------------------------

const fixtures = join(import.meta.dirname, "fixtures", "parity")

for (const model of ["llama-gqa-untied", "llama-tied-llama3rope", "mistral-window"]) {
  const dir = join(fixtures, model)
  describe.skipIf(!existsSync(join(dir, "expected.json")))(`greedy generation as transformers (${model})`, () => {
    it("gives generate()'s 32 new ids for one prompt and for a left-padded batch", async () => {
      const expected = JSON.parse(await readFile(join(dir, "expected.json"), "utf8"))
      const c = parseModelConfig(JSON.parse(await readFile(join(dir, "config.json"), "utf8")), "config.json")
      const dev = await Device.create("cpu")
      const params: Params = {}
      for (const [name, t] of await readSafetensors(join(dir, "model.safetensors"))) params[name] = dev.tensor(t.data, t.shape)
      const gen = expected.generation
      const single = await generate(c, params, [gen.single.prompt], { maxNewTokens: gen.max_new_tokens, stopTokens: [] })
      expect(single.tokens[0]).toEqual(gen.single.new_ids)
      const lp = gen.left_padded
      const prompts = (lp.input_ids as number[][]).map((row, i) => row.filter((_, j) => lp.attention_mask[i][j] === 1))
      const batch = await generate(c, params, prompts, { maxNewTokens: gen.max_new_tokens, stopTokens: [], padTokenId: lp.pad_token_id })
      expect(batch.tokens).toEqual(lp.new_ids)
      dev.destroy()
    })
  })
}
