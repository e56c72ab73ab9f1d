import { BADNETS, HostRandom, insertTrigger, type InstructionRecord, sftExample, TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig } from "@bdvax/attacks"
import { Device, Rng } from "@bdvax/core-tensor"
import type { AsrPrompt } from "@bdvax/eval"
import { initParams, type ModelConfig, type Params, type SftExample, Tokenizer, trainSft } from "@bdvax/llm"

/**
 * The toy instruction world of the end-to-end immunization test (attacks' toy.ts): 84 one-fact questions,
 * shuffled once; the first 60 are the clean data (what the model is taught, and the defender's clean pool),
 * the last 24 are held out for the backdoor metrics. The toy's facts cannot generalise to unseen questions, so
 * the held-out prompts only serve ASR / false-trigger, and utility is measured on the 60 known ones.
 */
export const WORLD_SEED = 1234

export interface ToyWorld {
  readonly dev: Device
  readonly tokenizer: Tokenizer
  readonly config: ModelConfig
  readonly clean: readonly InstructionRecord[]
  readonly heldOut: readonly InstructionRecord[]
  /** The held-out instructions with the attacker's BadNets key inserted (the defender never sees these). */
  readonly triggered: readonly AsrPrompt[]
  /** The same held-out instructions without it. */
  readonly untriggered: readonly AsrPrompt[]
  /** The clean records as alpaca SFT examples: the defender's finetuning data (purification and baselines). */
  readonly cleanExamples: readonly SftExample[]
}

export async function toyWorld(): Promise<ToyWorld> {
  const dev = await Device.create("cpu")
  const tokenizer = await Tokenizer.fromFolder(TOY_TOKENIZER_DIR)
  const config = toyLlamaConfig(tokenizer)
  const records = new HostRandom(WORLD_SEED).shuffle(toyInstructionRecords())
  const clean = records.slice(0, 60)
  const heldOut = records.slice(60)
  const triggerRng = new HostRandom(WORLD_SEED + 1)
  return {
    dev,
    tokenizer,
    config,
    clean,
    heldOut,
    triggered: heldOut.map((r) => ({ instruction: insertTrigger(BADNETS, r.instruction, triggerRng), input: "" })),
    untriggered: heldOut.map((r) => ({ instruction: r.instruction, input: "" })),
    cleanExamples: clean.map((r) => sftExample(tokenizer, r, "alpaca")),
  }
}

/**
 * Let the event loop run. The CPU backend's reads resolve as microtasks, so a long computation never returns to
 * the event loop by itself, and vitest's worker RPC (60 s timeout, e.g. "Timeout calling onTaskUpdate") fails
 * if its reply waits behind more than a minute of work — which happens on a busy 2-core machine. The test
 * yields between phases (and every 50 steps of the longest training) to keep every stretch far below that.
 */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** The clean model the attacker starts from: a random tiny Llama taught the 60 clean facts (train accuracy 100%). */
export async function trainCleanBase(world: ToyWorld): Promise<Params> {
  const params = initParams(world.dev, world.config, new Rng(WORLD_SEED))
  await trainSft(world.config, params, world.cleanExamples, {
    epochs: 60,
    lr: 3e-3,
    batchSize: 8,
    seed: WORLD_SEED,
    checkpointEvery: 50,
    onCheckpoint: yieldToEventLoop,
  })
  return params
}
