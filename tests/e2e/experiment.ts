import type { AblationSpec } from "@bdvax/purify"
import { type LayerScores, makeSignature, type Signature, type UnitScores } from "@bdvax/signature"

/**
 * The same Eq. 2 scores with another λ. A signature stores the norm and alignment terms separately, so this
 * re-ranks without retraining a variant: total = norm + λ · alignment.
 */
export function withLambda(signature: Signature, lambda: number): Signature {
  const rescore = (u: UnitScores | null): UnitScores | null => u && { ...u, total: u.norm.map((n, i) => n + lambda * u.alignment[i]) }
  const scores: LayerScores[] = signature.scores.map((l) => ({ ...l, mlp: rescore(l.mlp), heads: rescore(l.heads) }))
  return makeSignature({ ...signature, settings: { ...signature.settings, lambda }, scores })
}

/** What an ablation keeps of the backdoor update θ_b − θ_0, for the §4.1 table. */
export function keptDescription(spec: AblationSpec, includeNonBlock: boolean): string {
  const nonBlock = includeNonBlock ? " + embeddings, final norm, lm_head" : " (embeddings, final norm, lm_head from θ_0)"
  switch (spec.kind) {
    case "all-blocks":
      return `every block${nonBlock}${includeNonBlock ? " = θ_b" : ""}`
    case "attention":
      return `q/k/v/o_proj of every block${nonBlock}`
    case "mlp":
      return `gate/up/down_proj of every block${nonBlock}`
    case "blocks":
      return `blocks [${spec.from}, ${spec.to})${nonBlock}`
    case "shuffled":
      return `block i's update moved to block π(i), seed ${spec.seed}${nonBlock}`
  }
}
