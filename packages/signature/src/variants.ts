import { mkdir } from "node:fs/promises"
import { join } from "node:path"
import {
  EVALUATION_TRIGGERS,
  generateVariants,
  type InstructionRecord,
  type PlantPromptFormat,
  sftExample,
  type Variant,
} from "@bdvax/attacks"
import { ops, type Tensor, tidy } from "@bdvax/core-tensor"
import {
  disposeLora,
  type FormatChatOptions,
  type LoraAdapter,
  loraFromWeights,
  type ModelConfig,
  type Params,
  type ProgressEvent,
  type ScheduleKind,
  type SftExample,
  type SftOptions,
  type SftResult,
  type Tokenizer,
  trainSft,
} from "@bdvax/llm"
import type { HostTensor } from "./channels.js"
import { adapterReader, deltaWeightNames, type ModelDelta, paramsReader, readAll, type SignatureMode, subtractFrom } from "./delta.js"
import { saveDelta, scoreDeltaFiles } from "./delta-file.js"
import { modelShape } from "./model-shape.js"
import { pairData } from "./pairs.js"
import { DEFAULT_LAMBDA, type LayerScores, scoreDeltas } from "./scores.js"
import { DEFAULT_RHO, type ScoreCriterion } from "./selection.js"
import { makeSignature, type Signature, type SignatureSettings, type SignatureTraining } from "./signature.js"

/**
 * Variant orchestration: for each variant i, finetune the suspicious model once on D_c^i and once on D_p^i
 * (pairs.ts lays out the two example sequences), take Δ_i = θ_p − θ_c, and dispose both models before the
 * next pair. `trainVariantPair` is one pair (a resumable pipeline caches each), `buildSignature` all of them
 * plus scores and selection.
 */

/** The model under suspicion: full weights, or a frozen base with the suspicious LoRA adapter. */
export interface SuspiciousModel {
  readonly config: ModelConfig
  /** Full mode: the model's weights. Adapter mode: the frozen base. Never modified. */
  readonly params: Params
  /** Adapter mode: the suspicious adapter (its weights are copied, never modified). */
  readonly adapter?: LoraAdapter
}

/** Hyper-parameters of every variant run (clean and poisoned alike). */
export interface VariantTrainingOptions {
  /** Passes over D_c^i / D_p^i (a positive integer). Default 3. */
  readonly epochs?: number
  /** Default 1e-5 (full) / 2e-4 (adapter), the paper's; tiny models need larger rates. */
  readonly lr?: number
  /** Default 4. */
  readonly batchSize?: number
  /**
   * Stop each run after this many optimizer steps (overrides epochs). Both runs then take the same number of
   * steps, so the poisoned run sees fewer clean records than the clean run — still in the same order.
   */
  readonly maxSteps?: number
  readonly gradAccumSteps?: number
  /** Default "linear". */
  readonly schedule?: ScheduleKind
  readonly warmupRatio?: number
  readonly weightDecay?: number
  /** Default 1. */
  readonly maxGradNorm?: number
  readonly maxLength?: number
  /** Default "alpaca". */
  readonly promptFormat?: PlantPromptFormat
  readonly chat?: FormatChatOptions
  readonly addBos?: boolean
}

export type VariantRun = "clean" | "poisoned"
export type VariantProgressCallback = (variant: number, run: VariantRun, event: ProgressEvent) => void

export interface PairOptions {
  readonly model: SuspiciousModel
  readonly tokenizer: Tokenizer
  /** The clean pool D_c is drawn from. */
  readonly clean: readonly InstructionRecord[]
  /** N, default 6. */
  readonly numVariants?: number
  /** Default 0. */
  readonly seed?: number
  /** |D_c^i|; default half the clean pool (so subsets differ across variants), at most 500. */
  readonly subsetSize?: number
  /** Fraction of D_c^i that gets a poisoned copy; default 0.2. */
  readonly poisonRatio?: number
  readonly training?: VariantTrainingOptions
  /**
   * The variants' keys and behaviours; default attacks' generateVariants(N, seed, excludeTriggers). Given
   * variants are re-indexed 0 … N−1 in list order (the index seeds the variant's data).
   */
  readonly variants?: readonly Variant[]
  /** Keys that must not be used (default attacks' EVALUATION_TRIGGERS). */
  readonly excludeTriggers?: readonly string[]
  readonly onProgress?: VariantProgressCallback
}

export const DEFAULT_NUM_VARIANTS = 6
export const DEFAULT_POISON_RATIO = 0.2
export const DEFAULT_LR = { full: 1e-5, adapter: 2e-4 } as const

/** Resolved settings of the variant pairs (what a cache key or a signature file records). */
export interface PairSettings {
  readonly mode: SignatureMode
  readonly numVariants: number
  readonly seed: number
  readonly subsetSize: number
  readonly poisonRatio: number
  readonly training: SignatureTraining
  readonly variants: readonly Variant[]
}

export const modeOf = (model: SuspiciousModel): SignatureMode => (model.adapter === undefined ? "full" : "adapter")

export function resolvePairSettings(o: PairOptions): PairSettings {
  const mode = modeOf(o.model)
  const numVariants = o.variants?.length ?? o.numVariants ?? DEFAULT_NUM_VARIANTS
  if (!Number.isInteger(numVariants) || numVariants < 1) throw new RangeError(`signature: numVariants must be a positive integer, got ${numVariants}`)
  if (o.variants !== undefined && o.numVariants !== undefined && o.numVariants !== o.variants.length)
    throw new RangeError(`signature: numVariants is ${o.numVariants} but ${o.variants.length} variants were given`)
  const seed = o.seed ?? 0
  const variants = (o.variants ?? generateVariants(numVariants, seed, o.excludeTriggers ?? EVALUATION_TRIGGERS)).map((v, index) => ({ ...v, index }))
  const t = o.training ?? {}
  const format = t.promptFormat ?? "alpaca"
  const training: SignatureTraining = {
    epochs: t.epochs ?? 3,
    lr: t.lr ?? DEFAULT_LR[mode],
    batchSize: t.batchSize ?? 4,
    maxSteps: t.maxSteps ?? null,
    gradAccumSteps: t.gradAccumSteps ?? 1,
    schedule: t.schedule ?? "linear",
    warmupRatio: t.warmupRatio ?? 0,
    weightDecay: t.weightDecay ?? 0,
    // Infinity and 0 both disable clipping; 0 is the one JSON can hold
    maxGradNorm: t.maxGradNorm === Infinity ? 0 : (t.maxGradNorm ?? 1),
    maxLength: t.maxLength ?? null,
    promptFormat: typeof format === "function" ? "custom" : format,
    addBos: t.addBos ?? false,
  }
  checkTraining(training)
  const subsetSize = o.subsetSize ?? Math.max(1, Math.min(500, Math.ceil(o.clean.length / 2)))
  const poisonRatio = o.poisonRatio ?? DEFAULT_POISON_RATIO
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`signature: seed must be a non-negative safe integer, got ${seed}`)
  if (!Number.isInteger(subsetSize) || subsetSize < 1 || subsetSize > o.clean.length)
    throw new RangeError(`signature: subsetSize must be an integer in [1, ${o.clean.length}] (the clean pool's size), got ${subsetSize}`)
  if (!(poisonRatio > 0 && poisonRatio <= 1)) throw new RangeError(`signature: poisonRatio must be in (0, 1], got ${poisonRatio}`)
  return { mode, numVariants, seed, subsetSize, poisonRatio, training, variants }
}

/** The constraints a signature file enforces, checked before any training so a long run cannot fail at the end. */
function checkTraining(t: SignatureTraining): void {
  const fail = (field: string, what: string, value: unknown): never => {
    throw new RangeError(`signature: training.${field} must be ${what}, got ${value}`)
  }
  for (const k of ["epochs", "batchSize", "gradAccumSteps"] as const) if (!Number.isInteger(t[k]) || t[k] < 1) fail(k, "a positive integer", t[k])
  for (const k of ["maxSteps", "maxLength"] as const) {
    const v = t[k]
    if (v !== null && (!Number.isInteger(v) || v < 1)) fail(k, "a positive integer", v)
  }
  for (const k of ["lr", "warmupRatio", "weightDecay", "maxGradNorm"] as const) if (!Number.isFinite(t[k]) || t[k] < 0) fail(k, "a finite number ≥ 0", t[k])
}

export interface VariantPairResult {
  readonly variant: Variant
  readonly delta: ModelDelta
  /** D_c^i as indices into the clean pool. */
  readonly subset: readonly number[]
  /** Poisoned copies added per pass. */
  readonly poisonedCopies: number
  readonly training: { readonly clean: SftResult; readonly poisoned: SftResult }
}

/** A device-side copy (x + 0 allocates fresh storage; the optimizer updates it in place, never the original). */
function cloneParams(params: Params): Params {
  const out: Params = {}
  try {
    for (const [name, t] of Object.entries(params)) out[name] = tidy(() => ops.add(t, 0))
  } catch (e) {
    for (const t of Object.values(out) as Tensor[]) t.dispose()
    throw e
  }
  return out
}

const disposeParams = (p: Params): void => {
  for (const t of Object.values(p)) t.dispose()
}

/**
 * Train one finetune from θ_s and return its attention/MLP weights (full) or effective adapter updates
 * (adapter) on the host; the finetuned copy is disposed before returning.
 */
async function finetuneAndRead(
  model: SuspiciousModel,
  examples: readonly SftExample[],
  sft: SftOptions,
  take: (names: readonly string[], read: (name: string) => Promise<HostTensor>) => Promise<Record<string, HostTensor>>,
): Promise<{ weights: Record<string, HostTensor>; result: SftResult }> {
  const names = deltaWeightNames(model.config, model.adapter)
  if (model.adapter === undefined) {
    const params = cloneParams(model.params)
    try {
      const result = await trainSft(model.config, params, examples, { ...sft, mode: { kind: "full" } })
      return { weights: await take(names, paramsReader(params)), result }
    } finally {
      disposeParams(params)
    }
  }
  const weights = cloneParams(model.adapter.weights)
  let adapter: LoraAdapter
  try {
    adapter = loraFromWeights(model.config, model.adapter.config, weights)
  } catch (e) {
    disposeParams(weights)
    throw e
  }
  try {
    const result = await trainSft(model.config, model.params, examples, { ...sft, mode: { kind: "lora", adapter } })
    return { weights: await take(names, adapterReader(adapter)), result }
  } finally {
    disposeLora(adapter)
  }
}

/**
 * Variant pair i (0-based): θ_c^i = finetune(θ_s, D_c^i), θ_p^i = finetune(θ_s, D_p^i), Δ_i = θ_p^i − θ_c^i.
 * Only one finetuned copy is on the device at a time; θ_s is never modified. Deterministic for given options.
 */
export async function trainVariantPair(options: PairOptions, i: number): Promise<VariantPairResult> {
  const settings = resolvePairSettings(options)
  if (!Number.isInteger(i) || i < 0 || i >= settings.numVariants) throw new RangeError(`trainVariantPair: variant ${i} is outside [0, ${settings.numVariants})`)
  const variant = settings.variants[i]
  const t = settings.training
  const examplesPerStep = t.batchSize * t.gradAccumSteps
  // With maxSteps, lay out enough passes for the clean run to reach it (the poisoned run's passes are longer).
  const passes = t.maxSteps === null ? t.epochs : Math.max(1, Math.ceil((t.maxSteps * examplesPerStep) / settings.subsetSize))
  const data = pairData(options.clean, variant, { seed: settings.seed, subsetSize: settings.subsetSize, poisonRatio: settings.poisonRatio, passes })

  const format = options.training?.promptFormat ?? "alpaca"
  const tokenized = new Map<InstructionRecord, SftExample>()
  const example = (r: InstructionRecord): SftExample => {
    let e = tokenized.get(r)
    if (e === undefined) tokenized.set(r, (e = sftExample(options.tokenizer, r, format, { addBos: t.addBos, chat: options.training?.chat })))
    return e
  }
  const sftFor = (run: VariantRun): SftOptions => ({
    batchSize: t.batchSize,
    gradAccumSteps: t.gradAccumSteps,
    lr: t.lr,
    // The sequence already holds every pass in its order: one trainer epoch over it, no trainer shuffling.
    epochs: 1,
    shuffle: false,
    maxSteps: t.maxSteps ?? undefined,
    schedule: t.schedule,
    warmupRatio: t.warmupRatio,
    weightDecay: t.weightDecay,
    maxGradNorm: t.maxGradNorm,
    maxLength: t.maxLength ?? undefined,
    seed: data.trainSeed,
    onProgress: options.onProgress && ((e) => options.onProgress!(i, run, { ...e, epoch: e.epoch * passes })),
  })

  const clean = await finetuneAndRead(options.model, data.cleanSequence.map(example), sftFor("clean"), readAll)
  const poisoned = await finetuneAndRead(options.model, data.poisonedSequence.map(example), sftFor("poisoned"), (_, read) => subtractFrom(clean.weights, read))
  return {
    variant,
    delta: { variant: i, trigger: variant.trigger, behaviour: variant.behaviour, mode: settings.mode, tensors: poisoned.weights },
    subset: data.subset,
    poisonedCopies: data.poisonedCopies.length,
    training: { clean: clean.result, poisoned: poisoned.result },
  }
}

export interface SignatureOptions extends PairOptions {
  /** λ of Eq. 2, default 0.01. */
  readonly lambda?: number
  /** Default 0.03 (full) / 0.35 (adapter). */
  readonly rho?: number
  /** Default null: no heads selected (they are still scored). */
  readonly rhoHeads?: number | null
  /** Default "total". */
  readonly criterion?: ScoreCriterion
  /**
   * Write each pair's delta to `${deltaDir}/variant-${i}.safetensors` and score from the files one layer at a
   * time (bounded memory for large models). Existing files are overwritten: resuming is the job of a caller's
   * artifact store (trainVariantPair + saveDelta per pair, then scoreDeltaFiles + makeSignature).
   */
  readonly deltaDir?: string
}

export interface PairSummary {
  readonly variant: number
  readonly subsetSize: number
  readonly poisonedCopies: number
  readonly cleanLosses: readonly number[]
  readonly poisonedLosses: readonly number[]
}

export interface BuildSignatureResult {
  readonly signature: Signature
  readonly pairs: readonly PairSummary[]
  /** The deltas, when they were kept in memory (no deltaDir). */
  readonly deltas: readonly ModelDelta[] | null
  /** The delta files, when deltaDir was given. */
  readonly deltaFiles: readonly string[] | null
}

/** The settings block of a signature from resolved pair settings and the scoring/selection options. */
export function signatureSettings(pairs: PairSettings, o: { lambda?: number; rho?: number; rhoHeads?: number | null; criterion?: ScoreCriterion }): SignatureSettings {
  const fraction = (name: string, v: number | null | undefined) => {
    if (v != null && !(v >= 0 && v <= 1)) throw new RangeError(`signature: ${name} must be in [0, 1], got ${v}`)
  }
  fraction("rho", o.rho)
  fraction("rhoHeads", o.rhoHeads)
  if (o.lambda !== undefined && !(Number.isFinite(o.lambda) && o.lambda >= 0)) throw new RangeError(`signature: lambda must be a finite number ≥ 0, got ${o.lambda}`)
  return {
    numVariants: pairs.numVariants,
    seed: pairs.seed,
    subsetSize: pairs.subsetSize,
    poisonRatio: pairs.poisonRatio,
    lambda: o.lambda ?? DEFAULT_LAMBDA,
    rho: o.rho ?? DEFAULT_RHO[pairs.mode],
    rhoHeads: o.rhoHeads ?? null,
    criterion: o.criterion ?? "total",
    training: pairs.training,
    variants: pairs.variants.map((v) => ({ index: v.index, trigger: v.trigger, behaviour: v.behaviour })),
  }
}

/** Every variant pair, one at a time, then Eq. 2 scores and the selection. */
export async function buildSignature(options: SignatureOptions): Promise<BuildSignatureResult> {
  const pairSettings = resolvePairSettings(options)
  const settings = signatureSettings(pairSettings, options)
  const shape = modelShape(options.model.config)
  const deltas: ModelDelta[] = []
  const files: string[] = []
  const pairs: PairSummary[] = []
  if (options.deltaDir !== undefined) await mkdir(options.deltaDir, { recursive: true })
  for (let i = 0; i < pairSettings.numVariants; i++) {
    const r = await trainVariantPair(options, i)
    pairs.push({
      variant: i,
      subsetSize: r.subset.length,
      poisonedCopies: r.poisonedCopies,
      cleanLosses: r.training.clean.losses,
      poisonedLosses: r.training.poisoned.losses,
    })
    if (options.deltaDir === undefined) deltas.push(r.delta)
    else {
      const path = join(options.deltaDir, `variant-${i}.safetensors`)
      await saveDelta(path, r.delta)
      files.push(path)
    }
  }
  const scores: LayerScores[] =
    options.deltaDir === undefined
      ? scoreDeltas(shape, deltas.map((d) => d.tensors), { lambda: settings.lambda })
      : await scoreDeltaFiles(shape, files, { lambda: settings.lambda })
  const signature = makeSignature({ architecture: options.model.config.architecture, model: shape, mode: pairSettings.mode, settings, scores })
  return { signature, pairs, deltas: options.deltaDir === undefined ? deltas : null, deltaFiles: options.deltaDir === undefined ? null : files }
}
