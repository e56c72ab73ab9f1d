import type { LayerScores, UnitScores } from "./scores.js"

/**
 * The signature's units, shared with @bdvax/purify (which declares the same shape): indices ascending, layers
 * ascending, only layers with a non-empty list present.
 */
export interface ChannelSelection {
  /** MLP intermediate channels per layer: channel c = gate_proj row c, up_proj row c, down_proj column c. */
  readonly mlp: ReadonlyArray<{ readonly layer: number; readonly channels: readonly number[] }>
  /** Attention query heads per layer: head h = q_proj rows [h*headDim,(h+1)*headDim), o_proj columns of the same
   *  range; its key/value rows are those of KV group floor(h / (numAttentionHeads/numKeyValueHeads)). */
  readonly heads: ReadonlyArray<{ readonly layer: number; readonly heads: readonly number[] }>
}

/** Which term of Eq. 2 ranks the units: the combined score, or one term alone (the paper's ablation). */
export type ScoreCriterion = "total" | "norm" | "alignment"

export interface SelectOptions {
  /** Fraction of all scored MLP channels (over every layer together) to select, in [0, 1]. */
  readonly rho: number
  /** Fraction of all scored attention heads to select; null/undefined selects no heads. */
  readonly rhoHeads?: number | null
  /** Default "total". */
  readonly criterion?: ScoreCriterion
}

export const DEFAULT_RHO = { full: 0.03, adapter: 0.35 } as const

/** A scored unit: layer, index within the layer, score. */
export interface RankedUnit {
  readonly layer: number
  readonly index: number
  readonly score: number
}

/**
 * The units above the (1 − ρ) percentile, as exactly k = round(ρ · M) of the M units: the k highest scores.
 * Taking a count rather than thresholding `S > percentile` keeps the size independent of ties and of the
 * percentile's interpolation; among equal scores the earlier (layer, index) wins, so the result is the same
 * on every run and machine.
 */
export function topFraction(units: readonly RankedUnit[], rho: number): RankedUnit[] {
  if (!(rho >= 0 && rho <= 1)) throw new RangeError(`selection: rho must be in [0, 1], got ${rho}`)
  const bad = units.find((u) => Number.isNaN(u.score))
  if (bad) throw new RangeError(`selection: layer ${bad.layer} unit ${bad.index} has a NaN score`)
  const k = Math.round(rho * units.length)
  return [...units].sort((a, b) => b.score - a.score || a.layer - b.layer || a.index - b.index).slice(0, k)
}

function ranked(scores: readonly LayerScores[], pick: (l: LayerScores) => UnitScores | null, criterion: ScoreCriterion): RankedUnit[] {
  const out: RankedUnit[] = []
  for (const l of scores) {
    const u = pick(l)
    if (u) u[criterion].forEach((score, index) => out.push({ layer: l.layer, index, score }))
  }
  return out
}

function grouped(units: readonly RankedUnit[]): Array<{ layer: number; indices: number[] }> {
  const byLayer = new Map<number, number[]>()
  for (const u of units) byLayer.set(u.layer, [...(byLayer.get(u.layer) ?? []), u.index])
  return [...byLayer.entries()].sort(([a], [b]) => a - b).map(([layer, indices]) => ({ layer, indices: indices.sort((a, b) => a - b) }))
}

/**
 * Select MLP channels (and optionally heads) by score; the percentile is taken over all layers together, so
 * layers that carry the association machinery get more channels. Layers without scores (null) are not
 * candidates.
 */
export function selectChannels(scores: readonly LayerScores[], options: SelectOptions): ChannelSelection {
  const criterion = options.criterion ?? "total"
  const mlp = grouped(topFraction(ranked(scores, (l) => l.mlp, criterion), options.rho)).map(({ layer, indices }) => ({ layer, channels: indices }))
  const rhoHeads = options.rhoHeads ?? null
  const heads = rhoHeads === null ? [] : grouped(topFraction(ranked(scores, (l) => l.heads, criterion), rhoHeads)).map(({ layer, indices }) => ({ layer, heads: indices }))
  return { mlp, heads }
}

/** Number of selected channels and heads. */
export function selectionSize(selection: ChannelSelection): { channels: number; heads: number } {
  return {
    channels: selection.mlp.reduce((n, l) => n + l.channels.length, 0),
    heads: selection.heads.reduce((n, l) => n + l.heads.length, 0),
  }
}
