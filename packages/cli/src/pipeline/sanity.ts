import { type Device, TensorDevice } from "@bdvax/core-tensor"
import type { Params } from "@bdvax/llm"
import { ablateAdapter, ablateFull, type AblationSpec, disposeCreated, type NamedAblation } from "@bdvax/purify"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { StageError } from "../errors.js"
import { defineStage, stage, type StageInput } from "../store/store.js"
import { evaluateLoaded, EvaluateResult, type EvaluateSettings, evaluationPrompts, writeEvaluation } from "./evaluate.js"
import type { Located } from "./located.js"
import { disposeModel, type LoadedModel, loadModelAt, type ModelLocation, modelInputs } from "./model-io.js"

/**
 * Sanity checks of §4.1 (Tab. 1) as stages: with θ_0 the base and θ_b the backdoored model (full weights, or the
 * base plus the backdoor adapter), each "ablation" stage evaluates θ_0 + mask ⊙ (θ_b − θ_0) — only the attention
 * updates, only the MLP updates, a span of blocks, the blocks' updates shuffled between blocks, or all of them —
 * and reports whether the backdoor survives (ASR on triggered prompts). The ablated models exist only in memory;
 * the two models are loaded once for all the stages that need to run (none, when every stage is reused).
 */
export interface AblationSettings {
  readonly ablation: NamedAblation
  /** Full mode: also apply the updates outside the decoder blocks (embeddings, final norm, lm_head). */
  readonly includeNonBlock: boolean
  readonly evaluation: EvaluateSettings
}

export const AblationResult = Schema.Struct({
  name: Schema.String,
  /** What the ablated model keeps of the backdoor update, in words. */
  kept: Schema.String,
  evaluation: EvaluateResult,
})
export type AblationResult = typeof AblationResult.Type

export const ABLATION = defineStage("ablation", 1, AblationResult)

/** The base and the backdoored model, loaded on first use and freed by `release`. */
export interface SanityModels {
  readonly get: () => Promise<{ readonly base: LoadedModel; readonly backdoored: LoadedModel | null }>
  readonly release: () => Promise<void>
}

/**
 * `backdoored.adapter` set: adapter mode (the base is `backdoored.model`, `base` is ignored for weights but must
 * be the same folder). Otherwise full mode: two folders.
 */
export function sanityModels(dev: Device, base: ModelLocation, backdoored: ModelLocation): SanityModels {
  let loaded: Promise<{ base: LoadedModel; backdoored: LoadedModel | null }> | null = null
  return {
    get: () =>
      (loaded ??= (async () => {
        if (backdoored.adapter !== null) return { base: await loadModelAt(dev, backdoored), backdoored: null }
        const b = await loadModelAt(dev, base)
        try {
          return { base: b, backdoored: await loadModelAt(dev, backdoored) }
        } catch (e) {
          disposeModel(b)
          throw e
        }
      })()),
    release: async () => {
      if (loaded === null) return
      const m = await loaded.catch(() => null)
      if (m === null) return
      disposeModel(m.base)
      if (m.backdoored !== null) disposeModel(m.backdoored)
    },
  }
}

/** A one-line description of what an ablation keeps. */
export function keptUpdates(spec: AblationSpec, includeNonBlock: boolean, adapter: boolean): string {
  const extra = adapter ? "" : includeNonBlock ? " + embeddings, final norm, lm_head" : " (embeddings, final norm, lm_head from θ_0)"
  const what = adapter ? "adapter modules" : "updates"
  switch (spec.kind) {
    case "all-blocks":
      return `every block's ${what}${extra}`
    case "attention":
      return `q/k/v/o_proj ${what} of every block${extra}`
    case "mlp":
      return `gate/up/down_proj ${what} of every block${extra}`
    case "blocks":
      return `${what} of blocks [${spec.from}, ${spec.to})${extra}`
    case "shuffled":
      return `block i's ${what} moved to block π(i) (seed ${spec.seed})${extra}`
  }
}

export const ablationStage = (
  settings: AblationSettings,
  base: ModelLocation,
  backdoored: ModelLocation,
  clean: Located,
  triggered: Located | null,
  models: SanityModels,
  label = `ablation-${settings.ablation.name}`,
) => {
  const adapterMode = backdoored.adapter !== null
  const inputs: Record<string, StageInput> = { ...Object.fromEntries(Object.entries(modelInputs(base)).map(([k, v]) => [`base-${k}`, v])), ...modelInputs(backdoored), clean: clean.input }
  if (triggered) inputs.triggered = triggered.input
  return stage(
    ABLATION,
    { ...settings, triggered: triggered === null ? "inserted" : "file" },
    inputs,
    ({ dir }) =>
      Effect.gen(function* () {
        yield* TensorDevice // the models live on the command's device
        const { cleanRecords, triggeredList } = yield* evaluationPrompts(label, settings.evaluation, clean, triggered)
        const m = yield* attempt(label, models.get)
        const spec = settings.ablation.spec
        const evalModel = yield* attempt(label, async () => {
          if (m.backdoored === null) {
            const adapter = m.base.adapter
            if (adapter === null) throw new StageError({ stage: label, message: `${label}: no adapter loaded` })
            return { model: { config: m.base.config, params: m.base.params, tokenizer: m.base.tokenizer, lora: ablateAdapter(m.base.config, adapter, spec) }, created: {} as Params, sources: [] as Params[] }
          }
          const params = ablateFull(m.base.config, m.base.params, m.backdoored.params, spec, { includeNonBlock: settings.includeNonBlock })
          return { model: { config: m.base.config, params, tokenizer: m.backdoored.tokenizer }, created: params, sources: [m.base.params, m.backdoored.params] }
        })
        // ablateAdapter shares the adapter's tensors; ablateFull shares the models' and creates the shuffled ones
        const outcome = yield* evaluateLoaded(label, settings.evaluation, evalModel.model, cleanRecords, triggeredList).pipe(
          Effect.ensuring(Effect.sync(() => evalModel.sources.length > 0 && disposeCreated(evalModel.created, ...evalModel.sources))),
        )
        yield* writeEvaluation(label, dir, outcome)
        return { name: settings.ablation.name, kept: keptUpdates(spec, settings.includeNonBlock, adapterMode), evaluation: outcome.result }
      }),
    { label },
  )
}
