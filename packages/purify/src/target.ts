import type { Tensor } from "@bdvax/core-tensor"
import type { LoraAdapter, ModelConfig, Params, SftResult } from "@bdvax/llm"
import { copyTensor } from "./edits.js"
import type { ChannelSelection } from "./selection.js"

/** A suspicious model: full weights, or a frozen base plus a LoRA adapter (the adapter is what is suspect). */
export interface FullModel {
  readonly mode: "full"
  readonly config: ModelConfig
  readonly params: Params
}

export interface AdapterModel {
  readonly mode: "adapter"
  readonly config: ModelConfig
  /** The frozen base the adapter applies to (never modified). */
  readonly params: Params
  readonly adapter: LoraAdapter
}

export type SuspectModel = FullModel | AdapterModel

/**
 * What purification and every baseline return. Full mode: a complete parameter record; adapter mode: a new
 * adapter for the same base. The tensors are the caller's to dispose (`disposeDefense`), except where an
 * `inPlace` option said to reuse the input's. `selection` is what was reinitialised / zeroed (null for methods
 * that select nothing); `training` is null when no finetuning ran (RTN).
 */
export type DefenseResult =
  | { readonly mode: "full"; readonly params: Params; readonly training: SftResult | null; readonly selection: ChannelSelection | null }
  | { readonly mode: "adapter"; readonly adapter: LoraAdapter; readonly training: SftResult | null; readonly selection: ChannelSelection | null }

export function disposeDefense(result: DefenseResult): void {
  const tensors = result.mode === "full" ? Object.values(result.params) : Object.values(result.adapter.weights)
  for (const t of new Set<Tensor>(tensors)) t.dispose()
}

/** `derived` with every tensor it shares (by identity) with `source` replaced by a copy: a record the caller
 *  fully owns and that training may update in place without reaching `source`. */
export function ownAll(derived: Params, source: Params): Params {
  const shared = new Set<Tensor>(Object.values(source))
  return Object.fromEntries(Object.entries(derived).map(([n, t]) => [n, shared.has(t) ? copyTensor(t) : t]))
}

/** Run `work`; if it fails, dispose `owned` (tensors this package created for the caller) and rethrow. */
export async function disposingOnError<R>(owned: readonly Tensor[], work: () => Promise<R>): Promise<R> {
  try {
    return await work()
  } catch (e) {
    for (const t of new Set(owned)) t.dispose()
    throw e
  }
}
