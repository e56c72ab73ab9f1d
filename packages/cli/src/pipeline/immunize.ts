import { Effect } from "effect"
import type { StageArtifact } from "../store/store.js"
import type { Located } from "./located.js"
import type { ModelLocation } from "./model-io.js"
import { signature, type SignatureResult, type SignatureStageSettings } from "./signature.js"
import { variantPair, type VariantPairResult, type VariantPairSettings } from "./variant-pair.js"

/**
 * The defender's signature as stages: N "variant-pair" stages (one per synthetic key/behaviour, each cached on
 * its own) and the "signature" stage that scores their deltas. Only the suspicious model and clean records go
 * in — never the attack's trigger or behaviour.
 */
export interface ImmunizationSignature {
  readonly pairs: ReadonlyArray<StageArtifact<VariantPairResult>>
  readonly signature: StageArtifact<SignatureResult>
  /** Wall time of the pairs and the scoring together (what the signature cost). */
  readonly wallSeconds: number
}

export const signaturePipeline = (
  pairSettings: VariantPairSettings,
  settings: SignatureStageSettings,
  suspect: ModelLocation,
  clean: Located,
  labelPrefix = "",
) =>
  Effect.gen(function* () {
    const pairs: Array<StageArtifact<VariantPairResult>> = []
    for (let i = 0; i < pairSettings.numVariants; i++) pairs.push(yield* variantPair(pairSettings, i, suspect, clean, `${labelPrefix}variant-pair-${i}`))
    const sig = yield* signature(settings, pairSettings, pairs, suspect, `${labelPrefix}signature`)
    const wallSeconds = pairs.reduce((s, p) => s + p.result.wallSeconds, 0) + sig.result.wallSeconds
    return { pairs, signature: sig, wallSeconds } satisfies ImmunizationSignature
  })
