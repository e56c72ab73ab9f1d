import { join } from "node:path"
import { BehaviourSchema, type PairOptions, resolvePairSettings, saveDelta, TriggerRuleSchema, trainVariantPair, type VariantRun } from "@bdvax/signature"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { Progress, type ProgressBar } from "../progress/progress.js"
import { defineStage, stage } from "../store/store.js"
import type { Located } from "./located.js"
import { type LoadedModel, type ModelLocation, modelInputs, withModel } from "./model-io.js"
import { readRecords } from "./records.js"
import { stopwatch } from "./timing.js"

/**
 * Stage "variant-pair" (one per variant i): the defender's i-th synthetic backdoor — a clean subset D_c^i and
 * D_p^i = D_c^i + poisoned copies with a synthetic key and behaviour (attacks' generateVariants; none of them is
 * the attacker's) — finetuned from the suspicious model twice, and Δ_i = θ_p^i − θ_c^i saved as
 * `delta.safetensors` (@bdvax/signature's trainVariantPair + saveDelta). Each pair is its own stage, so a run
 * killed after k pairs keeps them and trains only the rest.
 */
export interface VariantPairSettings {
  /** N: the variants are drawn as a set of N (the index picks one), so N is part of every pair's identity. */
  readonly numVariants: number
  readonly seed: number
  /** |D_c^i| (records drawn from the defender's clean pool). */
  readonly subsetSize: number
  /** Fraction of D_c^i that gets a poisoned copy. */
  readonly poisonRatio: number
  readonly epochs: number
  readonly maxSteps: number | null
  readonly lr: number
  readonly batchSize: number
  readonly promptFormat: "alpaca" | "chat"
  /**
   * Keys the variants must not use. The CLI passes [] everywhere: the defender knows nothing about the attack —
   * not even the public list of evaluation triggers (the variant pool contains none of them anyway).
   */
  readonly excludeTriggers: readonly string[]
}

const VariantSchema = Schema.Struct({ index: Schema.Number, trigger: TriggerRuleSchema, behaviour: BehaviourSchema })

/** The resolved training settings the signature file records (SignatureTraining of @bdvax/signature). */
export const SignatureTrainingSchema = Schema.Struct({
  epochs: Schema.Number,
  lr: Schema.Number,
  batchSize: Schema.Number,
  maxSteps: Schema.NullOr(Schema.Number),
  gradAccumSteps: Schema.Number,
  schedule: Schema.Literals(["linear", "cosine", "constant"]),
  warmupRatio: Schema.Number,
  weightDecay: Schema.Number,
  maxGradNorm: Schema.Number,
  maxLength: Schema.NullOr(Schema.Number),
  promptFormat: Schema.String,
  addBos: Schema.Boolean,
})

export const VariantPairResult = Schema.Struct({
  variant: VariantSchema,
  mode: Schema.Literals(["full", "adapter"]),
  subset: Schema.Array(Schema.Number),
  poisonedCopies: Schema.Number,
  training: SignatureTrainingSchema,
  cleanLosses: Schema.Array(Schema.Number),
  poisonedLosses: Schema.Array(Schema.Number),
  /** Seconds the pair took (both finetunes and the delta); a measurement, not part of the artifact's identity. */
  wallSeconds: Schema.Number,
})
export type VariantPairResult = typeof VariantPairResult.Type

export const VARIANT_PAIR = defineStage("variant-pair", 1, VariantPairResult)
export const DELTA_FILE = "delta.safetensors"

/** @bdvax/signature's options for the pairs of a loaded suspicious model. */
export function pairOptions(settings: VariantPairSettings, model: LoadedModel, clean: PairOptions["clean"], onProgress?: PairOptions["onProgress"]): PairOptions {
  return {
    model: { config: model.config, params: model.params, ...(model.adapter === null ? {} : { adapter: model.adapter }) },
    tokenizer: model.tokenizer,
    clean,
    numVariants: settings.numVariants,
    seed: settings.seed,
    subsetSize: settings.subsetSize,
    poisonRatio: settings.poisonRatio,
    excludeTriggers: settings.excludeTriggers,
    training: {
      epochs: settings.epochs,
      lr: settings.lr,
      batchSize: settings.batchSize,
      ...(settings.maxSteps === null ? {} : { maxSteps: settings.maxSteps }),
      promptFormat: settings.promptFormat,
    },
    onProgress,
  }
}

/** One progress bar per finetune of the pair ("variant-pair-2 clean", "variant-pair-2 poisoned"). */
function pairBars(label: string, progress: Progress["Service"]) {
  const bars = new Map<VariantRun, ProgressBar>()
  const onProgress: NonNullable<PairOptions["onProgress"]> = (_variant, run, event) => {
    let bar = bars.get(run)
    if (bar === undefined) {
      for (const b of bars.values()) b.finish()
      bars.set(run, (bar = progress.bar(`${label} ${run}`, "step")))
    }
    bar.onTraining(event)
  }
  return { onProgress, finish: () => bars.forEach((b) => b.finish()) }
}

export const variantPair = (settings: VariantPairSettings, index: number, suspect: ModelLocation, clean: Located, label = `variant-pair-${index}`) =>
  stage(
    VARIANT_PAIR,
    { ...settings, index },
    { ...modelInputs(suspect), clean: clean.input },
    ({ dir }) =>
      Effect.gen(function* () {
        const elapsed = stopwatch()
        const progress = yield* Progress
        const records = yield* readRecords(label, clean.path)
        return yield* withModel(label, suspect, (model) =>
          Effect.gen(function* () {
            const bars = pairBars(label, progress)
            const options = pairOptions(settings, model, records, bars.onProgress)
            const resolved = yield* attempt(label, async () => resolvePairSettings(options))
            const pair = yield* attempt(label, () => trainVariantPair(options, index)).pipe(Effect.ensuring(Effect.sync(bars.finish)))
            yield* attempt(label, () => saveDelta(join(dir, DELTA_FILE), pair.delta))
            return {
              variant: { index: pair.variant.index, trigger: pair.variant.trigger, behaviour: pair.variant.behaviour },
              mode: resolved.mode,
              subset: [...pair.subset],
              poisonedCopies: pair.poisonedCopies,
              training: resolved.training,
              cleanLosses: [...pair.training.clean.losses],
              poisonedLosses: [...pair.training.poisoned.losses],
              wallSeconds: elapsed(),
            }
          }),
        )
      }),
    { label },
  )
