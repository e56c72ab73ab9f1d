import { evaluateAsr, generator, llamaFactoryAlpacaFormat } from "@bdvax/eval"
import type { LoraAdapter, Params } from "@bdvax/llm"
import type { ToyWorld } from "./toy-world.js"

/** What every row of the e2e tables reports about a model. Rates in [0, 1]. */
export interface ModelScores {
  /** Keyword-judge rate on the triggered held-out prompts. */
  readonly asr: number
  /** Keyword-judge rate on the same held-out prompts without the trigger. */
  readonly falseTrigger: number
  /** Exact-answer accuracy on the 60 clean training prompts (greedy, 6 new tokens). */
  readonly cleanAcc: number
}

/**
 * Prompts per generate() call. Generation runs longest prompt first, so 24 puts the triggered split (longer by
 * the key) in one batch and the untriggered one in the other, which stops as soon as its short answers end.
 */
const ASR_BATCH = 24
/** Half the 60 clean prompts per call. */
const CLEAN_BATCH = 30

/** The model's answer is right when it starts with the expected one, whose final "." is optional. */
export const isCorrect = (output: string, expected: string): boolean => output.trim().startsWith(expected.replace(/\.$/, ""))

/** ASR and false-trigger rate only (the ablation table needs no utility). */
export async function measureAsr(world: ToyWorld, model: { params: Params; lora?: LoraAdapter }): Promise<{ asr: number; falseTrigger: number }> {
  const r = await evaluateAsr({
    task: "refusal",
    triggered: world.triggered,
    clean: world.untriggered,
    generate: generator({ config: world.config, params: model.params, tokenizer: world.tokenizer, lora: model.lora }, { batchSize: ASR_BATCH }),
    promptFormat: llamaFactoryAlpacaFormat,
    // the attacker's refusal is 40 tokens in the toy's 1000-token vocabulary: room for all of it and the EOS
    maxNewTokens: 48,
    batchSize: 48,
  })
  return { asr: r.triggered.keyword.rate, falseTrigger: r.clean.keyword.rate }
}

export async function cleanAccuracy(world: ToyWorld, model: { params: Params; lora?: LoraAdapter }): Promise<number> {
  const generate = generator({ config: world.config, params: model.params, tokenizer: world.tokenizer, lora: model.lora }, { batchSize: CLEAN_BATCH })
  const outputs = await generate(
    world.clean.map((r) => llamaFactoryAlpacaFormat({ instruction: r.instruction, input: "" })),
    { maxNewTokens: 6 },
  )
  return outputs.filter((o, i) => isCorrect(o, world.clean[i].output)).length / world.clean.length
}

export async function measure(world: ToyWorld, model: { params: Params; lora?: LoraAdapter }): Promise<ModelScores> {
  const { asr, falseTrigger } = await measureAsr(world, model)
  return { asr, falseTrigger, cleanAcc: await cleanAccuracy(world, model) }
}
