import type { ModelConfig } from "@bdvax/llm"
import { Result, Schema, SchemaIssue } from "effect"
import { purifyError } from "./errors.js"

/**
 * The channels and heads a defence acts on — the contract shared with @bdvax/signature (each package declares
 * the same structural type, so a signature's selection is passed here as is).
 */
export interface ChannelSelection {
  /** MLP intermediate channels per layer: channel c = gate_proj row c, up_proj row c, down_proj column c. */
  readonly mlp: ReadonlyArray<{ readonly layer: number; readonly channels: readonly number[] }>
  /** Attention query heads per layer: head h = q_proj rows [h*headDim,(h+1)*headDim), o_proj columns of the same
   *  range; its key/value rows are those of KV group floor(h / (numAttentionHeads/numKeyValueHeads)). */
  readonly heads: ReadonlyArray<{ readonly layer: number; readonly heads: readonly number[] }>
}

export const emptySelection: ChannelSelection = { mlp: [], heads: [] }

/** Number of selected MLP channels and attention heads. */
export function selectionSize(selection: ChannelSelection): { readonly channels: number; readonly heads: number } {
  return {
    channels: selection.mlp.reduce((n, e) => n + e.channels.length, 0),
    heads: selection.heads.reduce((n, e) => n + e.heads.length, 0),
  }
}

/** The selection without its heads (head suppression is a switch of the purify entry points). */
export const mlpOnly = (selection: ChannelSelection): ChannelSelection => ({ mlp: selection.mlp, heads: [] })

function checkIndexList(list: unknown, bound: number, field: string, what: string): void {
  if (!Array.isArray(list)) throw purifyError("input", field, `expected a list of ${what} indices`)
  if (list.length === 0) throw purifyError("range", field, "is empty (layers without a selected index must be left out)")
  list.forEach((v, i) => {
    if (!Number.isSafeInteger(v) || v < 0 || v >= bound)
      throw purifyError("range", `${field}[${i}]`, `${JSON.stringify(v)} is not a ${what} index in [0, ${bound})`)
    if (i > 0 && v <= list[i - 1]) throw purifyError("range", `${field}[${i}]`, `indices must be strictly ascending (${list[i - 1]} then ${v})`)
  })
}

function checkLayers(entries: ReadonlyArray<{ readonly layer: number }>, config: ModelConfig, field: string): void {
  entries.forEach((e, i) => {
    if (!Number.isSafeInteger(e.layer) || e.layer < 0 || e.layer >= config.numHiddenLayers)
      throw purifyError("range", `${field}[${i}].layer`, `${JSON.stringify(e.layer)} is not a layer index in [0, ${config.numHiddenLayers})`)
    if (i > 0 && e.layer <= entries[i - 1].layer)
      throw purifyError("range", `${field}[${i}].layer`, `layers must be strictly ascending (${entries[i - 1].layer} then ${e.layer})`)
  })
}

/**
 * Check a selection against a model: layers in range and ascending, indices in range, strictly ascending and
 * non-empty. Throws a PurifyError naming the entry, e.g. `selection.mlp[1].channels[4]: 11008 is not a channel
 * index in [0, 11008)`.
 */
export function validateSelection(config: ModelConfig, selection: ChannelSelection, source = "selection"): void {
  checkLayers(selection.mlp, config, `${source}.mlp`)
  selection.mlp.forEach((e, i) => checkIndexList(e.channels, config.intermediateSize, `${source}.mlp[${i}].channels`, "channel"))
  checkLayers(selection.heads, config, `${source}.heads`)
  selection.heads.forEach((e, i) => checkIndexList(e.heads, config.numAttentionHeads, `${source}.heads[${i}].heads`, "head"))
}

/** Query heads per KV group (GQA); 1 without grouping. */
export const headsPerGroup = (config: ModelConfig): number => config.numAttentionHeads / config.numKeyValueHeads

/** KV groups every query head of which is in `heads` (the groups whose key/value rows may be touched). */
export function fullySelectedGroups(config: ModelConfig, heads: readonly number[]): number[] {
  const per = headsPerGroup(config)
  const chosen = new Set(heads)
  const out: number[] = []
  for (let g = 0; g < config.numKeyValueHeads; g++) {
    let all = true
    for (let h = g * per; h < (g + 1) * per; h++) all &&= chosen.has(h)
    if (all) out.push(g)
  }
  return out
}

/** Row (or column) indices [i·headDim, (i+1)·headDim) of each head or KV group i, flattened. */
export function headRange(config: ModelConfig, indices: readonly number[]): number[] {
  const d = config.headDim
  return indices.flatMap((i) => Array.from({ length: d }, (_, j) => i * d + j))
}

/**
 * The `count` channels with the smallest score, over all layers together (scores[l][c] for layer l, channel c);
 * ties go to the lower (layer, channel). Returned as a selection (layers and channels ascending).
 */
export function smallestChannels(scores: ReadonlyArray<ArrayLike<number>>, count: number): ChannelSelection {
  const all: Array<{ layer: number; channel: number; score: number }> = []
  scores.forEach((row, layer) => {
    for (let c = 0; c < row.length; c++) {
      const score = row[c]
      if (Number.isNaN(score)) throw purifyError("input", `scores[${layer}][${c}]`, "is NaN")
      all.push({ layer, channel: c, score })
    }
  })
  if (!Number.isInteger(count) || count < 0 || count > all.length) throw purifyError("range", "count", `${count} is not in [0, ${all.length}]`)
  all.sort((a, b) => a.score - b.score || a.layer - b.layer || a.channel - b.channel)
  return fromPairs(all.slice(0, count))
}

/** Build a well-formed selection (sorted, grouped by layer, no duplicates) from (layer, channel) pairs. */
export function fromPairs(pairs: ReadonlyArray<{ readonly layer: number; readonly channel: number }>): ChannelSelection {
  const byLayer = new Map<number, Set<number>>()
  for (const { layer, channel } of pairs) {
    let set = byLayer.get(layer)
    if (set === undefined) byLayer.set(layer, (set = new Set()))
    set.add(channel)
  }
  const mlp = [...byLayer.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([layer, set]) => ({ layer, channels: [...set].sort((a, b) => a - b) }))
  return { mlp, heads: [] }
}

/** round(ratio · total), checking that the ratio is a fraction. */
export function countForRatio(ratio: number, total: number, field = "ratio"): number {
  if (!(ratio >= 0 && ratio <= 1)) throw purifyError("range", field, `${ratio} is not a fraction in [0, 1]`)
  return Math.round(ratio * total)
}

// ---- JSON ------------------------------------------------------------------------------------------------

const Index = Schema.Number.annotate({ message: "expected a non-negative integer" }).check(
  Schema.makeFilter((n: number) => Number.isSafeInteger(n) && n >= 0, { message: "expected a non-negative integer" }),
)
const SelectionJson = Schema.Struct({
  mlp: Schema.Array(Schema.Struct({ layer: Index, channels: Schema.Array(Index) })).annotate({ message: "expected a list of {layer, channels}" }),
  heads: Schema.Array(Schema.Struct({ layer: Index, heads: Schema.Array(Index) })).annotate({ message: "expected a list of {layer, heads}" }),
}).annotate({ message: "expected an object {mlp, heads}" })

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * A selection from parsed JSON (e.g. a file written by the CLI): shape checked by an Effect Schema, then
 * `validateSelection` against the model. Errors name `source` and the entry.
 */
export function parseChannelSelection(json: unknown, config: ModelConfig, source = "selection"): ChannelSelection {
  const decoded = Schema.decodeUnknownResult(SelectionJson)(json)
  if (Result.isFailure(decoded)) {
    const [first] = formatIssues(decoded.failure.issue).issues
    const path = (first?.path ?? []).map((k) => (typeof k === "object" ? String(k.key) : String(k)))
    const field = [source, ...path].map((k, i) => (i > 0 && /^\d+$/.test(k) ? `[${k}]` : i > 0 ? `.${k}` : k)).join("")
    throw purifyError("input", field, first?.message ?? "does not match {mlp: [{layer, channels}], heads: [{layer, heads}]}")
  }
  const selection: ChannelSelection = decoded.success
  validateSelection(config, selection, source)
  return selection
}
