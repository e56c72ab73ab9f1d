import type { Behaviour, TriggerRule } from "@bdvax/attacks"
import type { ScheduleKind } from "@bdvax/llm"
import type { SignatureMode } from "./delta.js"
import type { ModelShape } from "./model-shape.js"
import type { LayerScores } from "./scores.js"
import { type ChannelSelection, type ScoreCriterion, selectChannels } from "./selection.js"

/**
 * A signature: the model shape and mode it was computed for, everything that made it (so a file can be
 * reproduced and a resumable pipeline can tell whether it is stale), the per-layer Eq. 2 scores (norm,
 * alignment, total — so ablations can reselect without retraining) and the selected channels and heads.
 * Plain JSON data; signature-file.ts reads and writes it.
 */
export const SIGNATURE_FORMAT = "bdvax.signature"
export const SIGNATURE_VERSION = 1

/** The training settings of the variant runs, resolved (defaults filled in). */
export interface SignatureTraining {
  readonly epochs: number
  readonly lr: number
  readonly batchSize: number
  readonly maxSteps: number | null
  readonly gradAccumSteps: number
  readonly schedule: ScheduleKind
  readonly warmupRatio: number
  readonly weightDecay: number
  readonly maxGradNorm: number
  readonly maxLength: number | null
  /** "alpaca", "chat", or "custom" (a caller's function). */
  readonly promptFormat: string
  readonly addBos: boolean
}

export interface SignatureVariant {
  readonly index: number
  readonly trigger: TriggerRule
  readonly behaviour: Behaviour
}

export interface SignatureSettings {
  readonly numVariants: number
  readonly seed: number
  readonly subsetSize: number
  readonly poisonRatio: number
  /** λ of Eq. 2. */
  readonly lambda: number
  /** Fraction of MLP channels selected. */
  readonly rho: number
  /** Fraction of attention heads selected; null = none. */
  readonly rhoHeads: number | null
  readonly criterion: ScoreCriterion
  readonly training: SignatureTraining
  readonly variants: readonly SignatureVariant[]
}

export interface Signature {
  readonly format: typeof SIGNATURE_FORMAT
  readonly version: typeof SIGNATURE_VERSION
  /** "llama" | "mistral": informative; compatibility is decided by `model`. */
  readonly architecture: string
  readonly model: ModelShape
  readonly mode: SignatureMode
  readonly settings: SignatureSettings
  /** One entry per decoder layer, in order. */
  readonly scores: readonly LayerScores[]
  readonly selection: ChannelSelection
}

export interface MakeSignatureInput {
  readonly architecture: string
  readonly model: ModelShape
  readonly mode: SignatureMode
  readonly settings: SignatureSettings
  readonly scores: readonly LayerScores[]
}

/** Assemble a signature, selecting by settings.rho / rhoHeads / criterion. */
export function makeSignature(input: MakeSignatureInput): Signature {
  const { rho, rhoHeads, criterion } = input.settings
  if (input.scores.length !== input.model.num_hidden_layers)
    throw new RangeError(`makeSignature: ${input.scores.length} layers of scores for a ${input.model.num_hidden_layers}-layer model`)
  return {
    format: SIGNATURE_FORMAT,
    version: SIGNATURE_VERSION,
    architecture: input.architecture,
    model: input.model,
    mode: input.mode,
    settings: input.settings,
    scores: input.scores,
    selection: selectChannels(input.scores, { rho, rhoHeads, criterion }),
  }
}

/** The same signature with another ρ / ρ_heads / criterion, from its stored scores (ablations, ρ sweeps). */
export function reselect(signature: Signature, change: { readonly rho?: number; readonly rhoHeads?: number | null; readonly criterion?: ScoreCriterion }): Signature {
  const settings: SignatureSettings = {
    ...signature.settings,
    rho: change.rho ?? signature.settings.rho,
    rhoHeads: change.rhoHeads === undefined ? signature.settings.rhoHeads : change.rhoHeads,
    criterion: change.criterion ?? signature.settings.criterion,
  }
  return makeSignature({ ...signature, settings })
}
