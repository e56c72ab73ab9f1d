import { join } from "node:path"
import { sftExample } from "@bdvax/attacks"
import type { SftExample } from "@bdvax/llm"
import {
  type BaselineInput,
  crow,
  type DefenseResult,
  disposeCreated,
  finePrune,
  finetuneBaseline,
  type LightFinetuneOptions,
  magnitudePruneBaseline,
  purify,
  randomSelection,
  rtnBaseline,
  type ChannelSelection,
  selectionSize,
  type SuspectModel,
} from "@bdvax/purify"
import { checkCompatible, readSignatureFile } from "@bdvax/signature"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { StageError } from "../errors.js"
import { Progress } from "../progress/progress.js"
import { defineStage, stage, type StageArtifact } from "../store/store.js"
import type { Located } from "./located.js"
import { type LoadedModel, type ModelLocation, modelInputs, producedModel, saveDefended, withModel } from "./model-io.js"
import { readRecords } from "./records.js"
import { stopwatch } from "./timing.js"

/**
 * Defenses as stages. Stage "purify" is the method: the signature's channels reinitialised (full model) or their
 * LoRA rows/columns zeroed (adapter), then a light finetune on the defender's clean records — or no finetune
 * (`finetune: null`, the surgery alone, a reference). Stage "baseline" is everything it is compared with, at
 * the same clean records and finetune budget: finetuning alone, magnitude pruning and fine-pruning (Wanda) at
 * the signature's ratio, INT4 round-to-nearest, CROW, and the control "random channels, same ratio" (the
 * method's exact treatment of a random selection). Each saves its model in the input's format: an HF folder
 * (`model/`) or a PEFT adapter (`adapter/`).
 */

export interface FinetuneSettings {
  readonly epochs: number
  readonly lr: number
  readonly batchSize: number
  /** Data order (and LoRA dropout). */
  readonly seed: number
  readonly maxSteps: number | null
}

export const BASELINE_METHODS = ["finetune", "magnitude-prune", "fine-prune", "random-channels", "quantize-int4", "crow"] as const
export type BaselineMethod = (typeof BASELINE_METHODS)[number]

export interface PurifySettings {
  /** null: surgery only, no finetune. */
  readonly finetune: FinetuneSettings | null
  /** Seed of the reinitialisation draws (full mode). */
  readonly reinitSeed: number
  /** Act on the signature's attention heads too. */
  readonly suppressHeads: boolean
  readonly promptFormat: "alpaca" | "chat"
}

export interface BaselineSettings {
  readonly method: BaselineMethod
  /** Fraction of MLP channels pruned / re-drawn (pruning baselines and the random control). */
  readonly ratio: number
  /** Random selections (random-channels, fine-pruning of an adapter) and reinitialisation draws. */
  readonly seed: number
  readonly finetune: FinetuneSettings
  readonly crow: { readonly alpha: number; readonly epsilon: number }
  /** INT4 RTN group size along the input dimension (−1: one group per row). */
  readonly rtnGroupSize: number
  readonly promptFormat: "alpaca" | "chat"
}

export const DefenseStageResult = Schema.Struct({
  mode: Schema.Literals(["full", "adapter"]),
  /** The sub-folder the defended model is in: "model" (HF folder) or "adapter" (PEFT). */
  produced: Schema.Literals(["model", "adapter"]),
  channels: Schema.Number,
  heads: Schema.Number,
  steps: Schema.Number,
  losses: Schema.Array(Schema.Number),
  wallSeconds: Schema.Number,
})
export type DefenseStageResult = typeof DefenseStageResult.Type

export const PURIFY = defineStage("purify", 1, DefenseStageResult)
export const BASELINE = defineStage("baseline", 1, DefenseStageResult)

const lightFinetuneOptions = (f: FinetuneSettings, onProgress: LightFinetuneOptions["onProgress"]): LightFinetuneOptions => ({
  epochs: f.epochs,
  lr: f.lr,
  batchSize: f.batchSize,
  seed: f.seed,
  ...(f.maxSteps === null ? {} : { maxSteps: f.maxSteps }),
  onProgress,
})

const suspectOf = (m: LoadedModel): SuspectModel =>
  m.adapter === null ? { mode: "full", config: m.config, params: m.params } : { mode: "adapter", config: m.config, params: m.params, adapter: m.adapter }

/** Free what a defense created, never the loaded model's own tensors (withModel frees those). */
const release = (m: LoadedModel, r: DefenseResult) =>
  r.mode === "full" ? disposeCreated(r.params, m.params) : disposeCreated(r.adapter.weights, m.adapter?.weights ?? {}, m.params)

/**
 * The shared body of a defense stage: load the suspect, its clean examples, run `defend`, save the result in the
 * input's format and free it.
 */
const runDefense = (
  label: string,
  dir: string,
  suspect: ModelLocation,
  clean: Located,
  promptFormat: "alpaca" | "chat",
  defend: (model: LoadedModel, examples: readonly SftExample[], onProgress: LightFinetuneOptions["onProgress"]) => Effect.Effect<DefenseResult, unknown>,
) =>
  Effect.gen(function* () {
    const elapsed = stopwatch()
    const progress = yield* Progress
    const records = yield* readRecords(label, clean.path)
    return yield* withModel(label, suspect, (model) =>
      Effect.gen(function* () {
        const examples = records.map((r) => sftExample(model.tokenizer, r, promptFormat))
        const bar = progress.bar(label, "step")
        const result = yield* defend(model, examples, bar.onTraining).pipe(Effect.ensuring(Effect.sync(() => bar.finish())))
        return yield* Effect.gen(function* () {
          const produced = yield* attempt(label, () => saveDefended(dir, model, suspect, result))
          const size = result.selection === null ? { channels: 0, heads: 0 } : selectionSize(result.selection)
          return {
            mode: result.mode,
            produced: produced as "model" | "adapter",
            channels: size.channels,
            heads: size.heads,
            steps: result.training?.steps ?? 0,
            losses: [...(result.training?.losses ?? [])],
            wallSeconds: elapsed(),
          }
        }).pipe(Effect.ensuring(Effect.sync(() => release(model, result))))
      }),
    )
  })

/** Purify with a selection (the signature's, or a control's) — reinit/zero, then the optional finetune. */
const purifyWith = (label: string, settings: PurifySettings, model: LoadedModel, examples: readonly SftExample[], selection: ChannelSelection, onProgress: LightFinetuneOptions["onProgress"]) => {
  const finetune = settings.finetune === null ? (false as const) : lightFinetuneOptions(settings.finetune, onProgress)
  const common = { config: model.config, selection, clean: examples, suppressHeads: settings.suppressHeads, finetune }
  return attempt(label, () =>
    model.adapter === null
      ? purify({ ...common, mode: "full", params: model.params, reinitSeed: settings.reinitSeed, inPlace: true })
      : purify({ ...common, mode: "adapter", params: model.params, adapter: model.adapter }),
  )
}

/**
 * Stage "purify". `signatureFile` is a signature.json (a signature stage's, or a user's file): it is checked
 * against the model's config (SignatureMismatchError names the differing config field) before anything runs.
 */
export const purifyStage = (settings: PurifySettings, suspect: ModelLocation, signatureFile: Located, clean: Located, label = "purify") =>
  stage(
    PURIFY,
    settings,
    { ...modelInputs(suspect), signature: signatureFile.input, clean: clean.input },
    ({ dir }) =>
      runDefense(label, dir, suspect, clean, settings.promptFormat, (model, examples, onProgress) =>
        Effect.gen(function* () {
          const sig = yield* attempt(label, () => readSignatureFile(signatureFile.path))
          yield* attempt(label, async () => checkCompatible(sig, model.config))
          const mode = model.adapter === null ? "full" : "adapter"
          if (sig.mode !== mode)
            return yield* new StageError({ stage: label, message: `${label}: ${signatureFile.path} is a ${sig.mode}-mode signature, the model is ${mode === "full" ? "a full model" : "a base with an adapter"}` })
          return yield* purifyWith(label, settings, model, examples, sig.selection, onProgress)
        }),
      ),
    { label },
  )

/** Stage "baseline": one of BASELINE_METHODS on the suspect, at the purification's budget. */
export const baselineStage = (settings: BaselineSettings, suspect: ModelLocation, clean: Located, label = `baseline-${settings.method}`) =>
  stage(
    BASELINE,
    settings,
    { ...modelInputs(suspect), clean: clean.input },
    ({ dir }) =>
      runDefense(label, dir, suspect, clean, settings.promptFormat, (model, examples, onProgress) => {
        const input: BaselineInput = { ...suspectOf(model), clean: examples, finetune: lightFinetuneOptions(settings.finetune, onProgress) }
        switch (settings.method) {
          case "finetune":
            return attempt(label, () => finetuneBaseline(input))
          case "magnitude-prune":
            return attempt(label, () => magnitudePruneBaseline({ ...input, ratio: settings.ratio }))
          case "fine-prune":
            return attempt(label, () => finePrune({ ...input, ratio: settings.ratio, seed: settings.seed }))
          case "quantize-int4":
            return attempt(label, async () => rtnBaseline(input, { bits: 4, groupSize: settings.rtnGroupSize }))
          case "crow":
            return attempt(label, () => crow({ ...input, crow: settings.crow }))
          case "random-channels":
            return purifyWith(
              label,
              { finetune: settings.finetune, reinitSeed: settings.seed, suppressHeads: false, promptFormat: settings.promptFormat },
              model,
              examples,
              randomSelection(model.config, settings.ratio, settings.seed),
              onProgress,
            )
        }
      }),
    { label },
  )

/** Where a defense artifact's model is (for evaluation). */
export const defendedModel = (artifact: StageArtifact<DefenseStageResult>, suspect: ModelLocation): ModelLocation =>
  producedModel(artifact, artifact.result.produced, suspect)

/** The signature file inside a signature stage's folder. */
export const signatureIn = (artifact: StageArtifact<unknown>, file = "signature.json"): Located => ({ input: artifact, path: join(artifact.path, file) })
