import { join } from "node:path"
import {
  type LayerScores,
  makeSignature,
  modelShape,
  readSignatureFile,
  type ScoreCriterion,
  scoreDeltaFiles,
  type Signature,
  type SignatureSettings,
  selectionSize,
  writeSignatureFile,
} from "@bdvax/signature"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { StageError } from "../errors.js"
import { defineStage, stage, type StageArtifact, type StageInput } from "../store/store.js"
import { type ModelLocation, modelConfigAt, modelInputs } from "./model-io.js"
import { stopwatch } from "./timing.js"
import { DELTA_FILE, type VariantPairResult, type VariantPairSettings } from "./variant-pair.js"

/**
 * Stage "signature": Eq. 2 scores of every MLP channel and attention head from the variant pairs' delta files
 * (scoreDeltaFiles reads one layer at a time), the channels above the (1 − ρ) percentile, written as
 * `signature.json` (@bdvax/signature's file format, validated on write). Stage "signature-reselect" derives
 * another selection from a signature's stored score terms — another ρ, criterion (norm / alignment / total) or
 * λ — without touching the deltas (ablations and the paper-λ reference).
 */
export const SIGNATURE_FILE = "signature.json"

export interface SignatureStageSettings {
  /** λ of Eq. 2. */
  readonly lambda: number
  /** Fraction of MLP channels selected. */
  readonly rho: number
  /** Fraction of attention heads selected (null: none). */
  readonly rhoHeads: number | null
  readonly criterion: ScoreCriterion
}

export const SignatureResult = Schema.Struct({
  mode: Schema.Literals(["full", "adapter"]),
  variants: Schema.Number,
  lambda: Schema.Number,
  rho: Schema.Number,
  criterion: Schema.Literals(["total", "norm", "alignment"]),
  channels: Schema.Number,
  heads: Schema.Number,
  /** Selected MLP channels per layer (layers without any are left out). */
  perLayer: Schema.Array(Schema.Struct({ layer: Schema.Number, channels: Schema.Number })),
  wallSeconds: Schema.Number,
})
export type SignatureResult = typeof SignatureResult.Type

export const SIGNATURE = defineStage("signature", 1, SignatureResult)
export const SIGNATURE_RESELECT = defineStage("signature-reselect", 1, SignatureResult)

const summarize = (signature: Signature, wallSeconds: number): SignatureResult => {
  const size = selectionSize(signature.selection)
  return {
    mode: signature.mode,
    variants: signature.settings.numVariants,
    lambda: signature.settings.lambda,
    rho: signature.settings.rho,
    criterion: signature.settings.criterion,
    channels: size.channels,
    heads: size.heads,
    perLayer: signature.selection.mlp.map((l) => ({ layer: l.layer, channels: l.channels.length })),
    wallSeconds,
  }
}

/** The signature built from `pairs` (any subset of a run's pairs, in variant order: N-ablations score prefixes). */
export const signature = (
  settings: SignatureStageSettings,
  pairSettings: VariantPairSettings,
  pairs: ReadonlyArray<StageArtifact<VariantPairResult>>,
  suspect: ModelLocation,
  label = "signature",
) => {
  const inputs: Record<string, StageInput> = { ...modelInputs(suspect) }
  pairs.forEach((p, i) => (inputs[`pair${i}`] = p))
  return stage(
    SIGNATURE,
    settings,
    inputs,
    ({ dir }) =>
      Effect.gen(function* () {
        const elapsed = stopwatch()
        if (pairs.length === 0) return yield* new StageError({ stage: label, message: `${label}: no variant pairs to score` })
        const config = yield* modelConfigAt(label, suspect)
        const shape = modelShape(config)
        const scores: LayerScores[] = yield* attempt(label, () =>
          scoreDeltaFiles(
            shape,
            pairs.map((p) => join(p.path, DELTA_FILE)),
            { lambda: settings.lambda },
          ),
        )
        const first = pairs[0].result
        const signatureSettings: SignatureSettings = {
          numVariants: pairs.length,
          seed: pairSettings.seed,
          subsetSize: pairSettings.subsetSize,
          poisonRatio: pairSettings.poisonRatio,
          lambda: settings.lambda,
          rho: settings.rho,
          rhoHeads: settings.rhoHeads,
          criterion: settings.criterion,
          training: first.training,
          variants: pairs.map((p) => p.result.variant),
        }
        const made = yield* attempt(label, async () => makeSignature({ architecture: config.architecture, model: shape, mode: first.mode, settings: signatureSettings, scores }))
        yield* attempt(label, () => writeSignatureFile(join(dir, SIGNATURE_FILE), made))
        return summarize(made, elapsed())
      }),
    { label },
  )
}

export interface ReselectSettings {
  readonly rho?: number
  readonly rhoHeads?: number | null
  readonly criterion?: ScoreCriterion
  /** Another λ: totals are recomputed as norm + λ · alignment from the stored terms. */
  readonly lambda?: number
}

/** A signature with another ρ / criterion / λ, from its stored Eq. 2 terms. */
export function reselectSignature(s: Signature, change: ReselectSettings): Signature {
  const lambda = change.lambda ?? s.settings.lambda
  const retotal = (u: LayerScores["mlp"]) => (u === null ? null : { ...u, total: u.norm.map((n, i) => n + lambda * u.alignment[i]) })
  const scores = lambda === s.settings.lambda ? s.scores : s.scores.map((l) => ({ ...l, mlp: retotal(l.mlp), heads: retotal(l.heads) }))
  return makeSignature({
    ...s,
    scores,
    settings: {
      ...s.settings,
      lambda,
      rho: change.rho ?? s.settings.rho,
      rhoHeads: change.rhoHeads === undefined ? s.settings.rhoHeads : change.rhoHeads,
      criterion: change.criterion ?? s.settings.criterion,
    },
  })
}

export const signatureReselect = (change: ReselectSettings, from: StageInput, label = "signature-reselect") =>
  stage(
    SIGNATURE_RESELECT,
    change,
    { signature: from },
    ({ dir }) =>
      Effect.gen(function* () {
        const elapsed = stopwatch()
        const source = yield* attempt(label, () => readSignatureFile(join(from.path, SIGNATURE_FILE)))
        const made = yield* attempt(label, async () => reselectSignature(source, change))
        yield* attempt(label, () => writeSignatureFile(join(dir, SIGNATURE_FILE), made))
        return summarize(made, elapsed())
      }),
    { label },
  )
