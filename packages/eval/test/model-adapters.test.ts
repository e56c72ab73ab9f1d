import { join } from "node:path"
import { Device, Rng } from "@bdvax/core-tensor"
import { forward, greedy, initParams, loraFromWeights, logSoftmaxRow, mergeLora, type ModelConfig, type Params, Tokenizer } from "@bdvax/llm"
import { beforeAll, describe, expect, it } from "vitest"
import { encodePair, type EvalModel, evaluateMultipleChoice, generator, logLikelihood, sharedContext, stopTokenIds, tokenNll } from "../src/index.js"

/**
 * The model adapters against a hand computation on a tiny random Llama with the committed 1000-token byte-level
 * BPE (SmolLM2 layout): every log-probability is recomputed here from a plain full forward of one unpadded
 * sequence and a log-softmax in doubles on the host.
 */
const TOKENIZER_DIR = join(import.meta.dirname, "../../llm/test/fixtures/tokenizer/bpe")

let dev: Device
let tok: Tokenizer
let model: EvalModel

const configFor = (vocabSize: number): ModelConfig => ({
  architecture: "llama",
  vocabSize,
  hiddenSize: 32,
  intermediateSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 8,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: { ropeType: "default" },
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: false,
  slidingWindow: null,
  attentionBias: false,
  mlpBias: false,
  initializerRange: 0.3,
  bosTokenId: 1,
  eosTokenId: [2],
  padTokenId: null,
  hiddenAct: "silu",
})

beforeAll(async () => {
  dev = await Device.create("cpu")
  tok = await Tokenizer.fromFolder(TOKENIZER_DIR)
  const config = configFor(tok.vocabSize)
  model = { config, params: initParams(dev, config, new Rng(7)), tokenizer: tok }
})

/** log P(ids[j] | ids[<j]) for j ≥ from and whether each is the (first) argmax, from one unpadded full forward. */
async function byHand(m: EvalModel, params: Params, ids: readonly number[], from: number): Promise<{ sum: number; greedy: boolean; each: number[] }> {
  const v = m.config.vocabSize
  const input = dev.tensor(ids.slice(0, -1), [1, ids.length - 1], "int32")
  const { logits } = forward(m.config, params, input)
  const data = (await logits.data()) as Float32Array
  logits.dispose()
  input.dispose()
  const each: number[] = []
  let allGreedy = true
  for (let j = from; j < ids.length; j++) {
    const row = logSoftmaxRow(data, (j - 1) * v, v)
    each.push(row[ids[j]])
    let best = 0
    for (let k = 1; k < v; k++) if (row[k] > row[best]) best = k
    if (best !== ids[j]) allGreedy = false
  }
  return { sum: each.reduce((a, x) => a + x, 0), greedy: allGreedy, each }
}

const enc = (s: string) => tok.encode(s, { addSpecialTokens: false })

describe("encodePair (lm-eval HFLM _encode_pair)", () => {
  it("moves the context's trailing whitespace onto the continuation and takes the tail of the joint encoding", () => {
    const p = encodePair(tok, "Question: What is 2+2?\nAnswer: ", "4")
    expect(p.context).toEqual(enc("Question: What is 2+2?\nAnswer:"))
    // " 4" is tokenized as part of the whole string, not as "4" after a dangling space
    const whole = enc("Question: What is 2+2?\nAnswer: 4")
    expect([...p.context, ...p.continuation]).toEqual(whole)
    expect(tok.decode(p.continuation)).toBe(" 4")
    // several whitespace characters move, newlines included
    const q = encodePair(tok, "Passage \n\t", "yes")
    expect(q.context).toEqual(enc("Passage"))
    expect(tok.decode(q.continuation)).toBe(" \n\tyes")
  })

  it("takes the continuation as the difference when the boundary token merges across it", () => {
    // the continuation is whatever follows the context's own tokens in the joint encoding
    const p = encodePair(tok, "What color is the", " sky?")
    expect([...p.context, ...p.continuation]).toEqual(enc("What color is the sky?"))
    expect(p.context).toEqual(enc("What color is the"))
  })
})

describe("logLikelihood", () => {
  const requests = [
    { context: "Question: What color is the sky?\nAnswer:", continuation: " Blue." },
    { context: "Question: What color is the sky?\nAnswer:", continuation: " The colour of a clear daytime sky is blue." },
    { context: "Add 3 and 4. ", continuation: "7" },
    { context: "A", continuation: " b" },
    { context: "Once upon a time there was a small village near a forest and", continuation: " it rained" },
  ]

  it("equals Σ log-softmax of the continuation tokens from a full forward, batched with right padding", async () => {
    const res = await logLikelihood(model, { batchSize: 16 })(requests)
    expect(res.length).toBe(requests.length)
    for (let i = 0; i < requests.length; i++) {
      const { context, continuation } = encodePair(tok, requests[i].context, requests[i].continuation)
      const hand = await byHand(model, model.params, [...context, ...continuation], context.length)
      expect(res[i].logprob).toBeCloseTo(hand.sum, 3)
      expect(Math.abs(res[i].logprob - hand.sum)).toBeLessThan(1e-4 * Math.max(1, Math.abs(hand.sum)))
      expect(res[i].isGreedy).toBe(hand.greedy)
    }
    // one sequence per forward gives the same numbers
    const single = await logLikelihood(model, { batchSize: 1 })(requests)
    single.forEach((r, i) => expect(r.logprob).toBeCloseTo(res[i].logprob, 4))
    // token budget splitting gives the same numbers too
    const budget = await logLikelihood(model, { maxBatchTokens: 20 })(requests)
    budget.forEach((r, i) => expect(r.logprob).toBeCloseTo(res[i].logprob, 4))
  })

  it("isGreedy is true for the model's own greedy continuation", async () => {
    const context = "Question: What color is the sky?\nAnswer:"
    const ctx = enc(context)
    const toks = await greedy(model.config, model.params, ctx, 3)
    const continuation = tok.decode(toks)
    // the chosen seed's greedy tokens survive decode → joint re-encoding
    expect(encodePair(tok, context, continuation).continuation).toEqual(toks)
    const [r] = await logLikelihood(model)([{ context, continuation }])
    expect(r.isGreedy).toBe(true)
    const hand = await byHand(model, model.params, [...ctx, ...toks], ctx.length)
    expect(r.logprob).toBeCloseTo(hand.sum, 4)
  })

  it("an empty context becomes the BOS prefix token; the continuation is encoded alone", async () => {
    const [r] = await logLikelihood(model)([{ context: "", continuation: "Hello there" }])
    const hand = await byHand(model, model.params, [tok.bosTokenId!, ...enc("Hello there")], 1)
    expect(r.logprob).toBeCloseTo(hand.sum, 4)
  })

  it("truncates long inputs on the left to maxLength (lm-eval's [-(max_length + 1):][:-1])", async () => {
    const req = requests[4]
    const { context, continuation } = encodePair(tok, req.context, req.continuation)
    const all = [...context, ...continuation]
    const maxLength = 8
    const [r] = await logLikelihood(model, { maxLength })([req])
    const kept = all.slice(-(maxLength + 1))
    const hand = await byHand(model, model.params, kept, kept.length - continuation.length)
    expect(r.logprob).toBeCloseTo(hand.sum, 4)
  })

  it("applies a LoRA adapter exactly as the merged weights", async () => {
    const { config } = model
    const weights: Params = {}
    const shapes: Record<string, [number, number]> = {
      "model.layers.0.self_attn.q_proj": [config.numAttentionHeads * config.headDim, config.hiddenSize],
      "model.layers.1.mlp.down_proj": [config.hiddenSize, config.intermediateSize],
    }
    for (const [m, [out, inp]] of Object.entries(shapes)) {
      weights[`${m}.lora_A.weight`] = dev.tensor(Array.from({ length: 4 * inp }, (_, k) => Math.cos(k * 0.53) * 0.4), [4, inp])
      weights[`${m}.lora_B.weight`] = dev.tensor(Array.from({ length: out * 4 }, (_, k) => Math.sin(k * 0.37) * 0.3), [out, 4])
    }
    const adapter = loraFromWeights(config, { r: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "down_proj"] }, weights)
    const withLora: EvalModel = { ...model, lora: adapter }
    const merged = mergeLora(config, model.params, adapter)
    const res = await logLikelihood(withLora)(requests.slice(0, 3))
    const plain = await logLikelihood(model)(requests.slice(0, 3))
    for (let i = 0; i < 3; i++) {
      const { context, continuation } = encodePair(tok, requests[i].context, requests[i].continuation)
      const hand = await byHand(model, merged, [...context, ...continuation], context.length)
      expect(res[i].logprob).toBeCloseTo(hand.sum, 3)
      expect(Math.abs(res[i].logprob - plain[i].logprob)).toBeGreaterThan(1e-3)
    }
  })

  it("drives evaluateMultipleChoice end to end", async () => {
    const items = [
      { id: "a", options: sharedContext("Question: What color is the sky?\nAnswer:", ["blue", "green", "a large red brick"]), label: 0 },
      { id: "b", options: sharedContext("Question: Add 3 and 4.\nAnswer:", ["7", "12"]), label: 0 },
    ]
    const r = await evaluateMultipleChoice(items, logLikelihood(model), { batchSize: 4 })
    expect(r.n).toBe(2)
    expect(r.records[0].logprobs.length).toBe(3)
    expect(r.records.every((x) => x.logprobs.every(Number.isFinite))).toBe(true)
  })
})

describe("tokenNll", () => {
  it("sums −log p over the answer's tokens after the prompt's own encoding", async () => {
    const pairs = [
      { prompt: "What color is the sky?\n", answer: "Blue." },
      { prompt: "Add 3 and 4.", answer: " The answer is 7." },
    ]
    const res = await tokenNll(model)(pairs)
    for (let i = 0; i < pairs.length; i++) {
      const ids = tok.encode(pairs[i].prompt + pairs[i].answer)
      const from = tok.encode(pairs[i].prompt).length
      const hand = await byHand(model, model.params, ids, from)
      expect(res[i].tokens).toBe(ids.length - from)
      expect(res[i].nll).toBeCloseTo(-hand.sum, 3)
    }
  })
})

describe("generator", () => {
  it("greedy, left-padded batches, decodes only the new tokens, cuts at stop strings", async () => {
    const prompts = ["Question: What color is the sky?\nAnswer:", "Add 3 and 4.", "Once upon a time"]
    const gen = generator(model, { batchSize: 2 })
    const outs = await gen(prompts, { maxNewTokens: 6 })
    expect(stopTokenIds(model)).toEqual([2])
    for (let i = 0; i < prompts.length; i++) {
      const toks = await greedy(model.config, model.params, enc(prompts[i]), 6)
      const want = tok.decode(toks.filter((t) => t !== 2), { skipSpecialTokens: true })
      expect(outs[i]).toBe(want)
    }
    // a stop string cuts the text at its first occurrence
    const probe = outs.find((o) => o.length >= 3)!
    const stopAt = probe.slice(1, 2)
    const cut = await gen(prompts, { maxNewTokens: 6, stop: [stopAt] })
    const idx = outs.indexOf(probe)
    expect(cut[idx]).toBe(probe.slice(0, probe.indexOf(stopAt)))
  })
})
