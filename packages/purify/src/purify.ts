import { Rng } from "@bdvax/core-tensor"
import {
  type LoraAdapter,
  type ModelConfig,
  type Params,
  type SaveOptions,
  type SavePeftOptions,
  type SftExample,
  saveModelFolder,
  savePeftAdapter,
} from "@bdvax/llm"
import { disposeCreated } from "./edits.js"
import { purifyError } from "./errors.js"
import { type LightFinetuneOptions, lightFinetune } from "./finetune.js"
import { zeroLoraChannels } from "./lora-zero.js"
import { type ReinitOptions, reinitChannels } from "./reinit.js"
import { type ChannelSelection, mlpOnly } from "./selection.js"
import { type DefenseResult, ownAll } from "./target.js"

/**
 * Purification (seed paper §4): act on the signature's channels — reinitialise them (full model) or zero their
 * LoRA rows/columns (adapter) — then finetune lightly on clean data so the model re-learns its clean function
 * without the backdoor's machinery. Heads are acted on only with `suppressHeads` (the paper does it for Mistral).
 */
export interface PurifyCommon {
  readonly config: ModelConfig
  readonly selection: ChannelSelection
  /** Tokenized clean examples (callers format records; purify does not depend on the dataset tooling). */
  readonly clean: readonly SftExample[]
  /** Also act on selection.heads. Default false: MLP channels only. */
  readonly suppressHeads?: boolean
  /** Options of the light finetune (paper defaults otherwise), or false to skip it (surgery only). */
  readonly finetune?: LightFinetuneOptions | false
}

export interface PurifyModelInput extends PurifyCommon {
  readonly mode: "full"
  readonly params: Params
  /** Seed of the reinitialisation draws. Default 0. */
  readonly reinitSeed?: number
  readonly reinit?: ReinitOptions
  /** Train the input's untouched tensors in place instead of copies (saves a model's worth of memory; the
   *  input record must not be used afterwards). Default false: the input is left intact. */
  readonly inPlace?: boolean
}

export interface PurifyAdapterInput extends PurifyCommon {
  readonly mode?: "adapter"
  /** The frozen base. */
  readonly params: Params
  readonly adapter: LoraAdapter
}

const actOn = (input: PurifyCommon) => (input.suppressHeads ? input.selection : mlpOnly(input.selection))

function checkClean(input: PurifyCommon): void {
  if (input.finetune !== false && input.clean.length === 0) throw purifyError("input", "clean", "no clean examples for the finetune (pass finetune: false to skip it)")
}

export async function purifyModel(input: PurifyModelInput): Promise<DefenseResult & { readonly mode: "full" }> {
  if (input.mode !== "full") throw purifyError("mode", "mode", `purifyModel needs mode "full", got ${JSON.stringify(input.mode)}`)
  checkClean(input)
  const selection = actOn(input)
  const reinit = reinitChannels(input.config, input.params, selection, new Rng(input.reinitSeed ?? 0), input.reinit)
  const params = input.inPlace ? reinit : ownAll(reinit, input.params)
  try {
    const training = input.finetune === false ? null : await lightFinetune(input.config, params, input.clean, input.finetune)
    return { mode: "full", params, training, selection }
  } catch (e) {
    disposeCreated(params, input.params)
    throw e
  }
}

export async function purifyAdapter(input: PurifyAdapterInput): Promise<DefenseResult & { readonly mode: "adapter" }> {
  if (input.mode !== undefined && input.mode !== "adapter") throw purifyError("mode", "mode", `purifyAdapter needs mode "adapter", got ${JSON.stringify(input.mode)}`)
  checkClean(input)
  const selection = actOn(input)
  const zeroed = zeroLoraChannels(input.config, input.adapter, selection)
  const adapter: LoraAdapter = { ...zeroed, weights: ownAll(zeroed.weights, input.adapter.weights) }
  try {
    const training = input.finetune === false ? null : await lightFinetune(input.config, input.params, input.clean, { ...input.finetune, adapter })
    return { mode: "adapter", adapter, training, selection }
  } catch (e) {
    disposeCreated(adapter.weights, input.adapter.weights)
    throw e
  }
}

/** One entry point for both modes. */
export function purify(input: PurifyModelInput | (PurifyAdapterInput & { readonly mode: "adapter" })): Promise<DefenseResult> {
  return input.mode === "full" ? purifyModel(input) : purifyAdapter(input)
}

export interface SavePurifiedOptions {
  /** Full mode: saveModelFolder's options (dtype, tokenizerFrom, generationConfig). */
  readonly model?: SaveOptions
  /** Adapter mode: savePeftAdapter's options (dtype, baseModelNameOrPath). */
  readonly adapter?: SavePeftOptions
}

/** Save a result in its input's format: a Hugging Face model folder (full) or a PEFT adapter folder. */
export function savePurified(dir: string, config: ModelConfig, result: DefenseResult, options: SavePurifiedOptions = {}): Promise<void> {
  return result.mode === "full" ? savePurifiedModel(dir, config, result.params, options.model) : savePurifiedAdapter(dir, config, result.adapter, options.adapter)
}

export const savePurifiedModel = (dir: string, config: ModelConfig, params: Params, options?: SaveOptions): Promise<void> =>
  saveModelFolder(dir, config, params, options)

export const savePurifiedAdapter = (dir: string, config: ModelConfig, adapter: LoraAdapter, options?: SavePeftOptions): Promise<void> =>
  savePeftAdapter(dir, config, adapter, options)
