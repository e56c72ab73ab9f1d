import {
  type LoraAdapter,
  type ModelConfig,
  type Params,
  type ProgressCallback,
  type ScheduleKind,
  type SftExample,
  type SftOptions,
  type SftResult,
  trainSft,
} from "@bdvax/llm"
import { purifyError } from "./errors.js"

/**
 * The light clean finetune that follows purification (and that every trained baseline gets, so they compete at
 * the same data and learning-rate budget): the paper's defaults are 5 epochs at lr 1e-5 (full model) or 2e-4
 * (LoRA), on a few hundred clean records. Micro-batch size 4 is our default (the paper does not fix it).
 * Everything else is @bdvax/llm's trainSft (Hugging Face Trainer semantics: linear decay, AdamW, clip 1.0).
 */
export const PAPER_FINETUNE = { epochs: 5, lrFull: 1e-5, lrLora: 2e-4, batchSize: 4 } as const

export interface LightFinetuneOptions {
  /** Default 5. */
  readonly epochs?: number
  /** Default 1e-5 (full) / 2e-4 (LoRA). */
  readonly lr?: number
  /** Examples per micro-batch, default 4. */
  readonly batchSize?: number
  readonly gradAccumSteps?: number
  /** Stop after this many optimizer steps (overrides epochs). */
  readonly maxSteps?: number
  /** Data order and LoRA dropout. Default 0. */
  readonly seed?: number
  readonly onProgress?: ProgressCallback
  readonly maxLength?: number
  readonly schedule?: ScheduleKind
  readonly warmupRatio?: number
  readonly weightDecay?: number
  readonly padTokenId?: number
  /** A custom objective (CROW); default the response-token cross-entropy. */
  readonly loss?: SftOptions["loss"]
}

/** The trainSft options lightFinetune uses for a mode (exposed so reports can state the budget). */
export function finetuneSettings(mode: "full" | "adapter", options: LightFinetuneOptions = {}): SftOptions {
  const { epochs = PAPER_FINETUNE.epochs, batchSize = PAPER_FINETUNE.batchSize, lr = mode === "full" ? PAPER_FINETUNE.lrFull : PAPER_FINETUNE.lrLora, ...rest } =
    options
  if (!Number.isInteger(epochs) || epochs < 1) throw purifyError("range", "finetune.epochs", `${epochs} is not a positive integer`)
  if (!(lr >= 0 && Number.isFinite(lr))) throw purifyError("range", "finetune.lr", `${lr} is not a finite non-negative rate`)
  return { ...rest, epochs, batchSize, lr }
}

/**
 * Finetune on clean examples, in place: full mode (no adapter) trains every parameter of `params`; with an
 * adapter only the adapter's weights train and `params` is the frozen base. Callers that must keep their input
 * intact pass copies (purifyModel / purifyAdapter and the baselines do).
 */
export async function lightFinetune(
  config: ModelConfig,
  params: Params,
  clean: readonly SftExample[],
  options: LightFinetuneOptions & { readonly adapter?: LoraAdapter } = {},
): Promise<SftResult> {
  if (clean.length === 0) throw purifyError("input", "clean", "no clean examples to finetune on")
  const { adapter, ...rest } = options
  const settings = finetuneSettings(adapter === undefined ? "full" : "adapter", rest)
  return trainSft(config, params, clean, { ...settings, mode: adapter === undefined ? { kind: "full" } : { kind: "lora", adapter } })
}
