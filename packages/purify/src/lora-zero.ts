import { type LoraAdapter, type ModelConfig, moduleShape } from "@bdvax/llm"
import { applyEdits, copyTensor, loraEdits } from "./edits.js"
import { type ChannelSelection, validateSelection } from "./selection.js"

/**
 * Adapter-mode purification: zero the rows of B (output channels) and the columns of A (input channels) that
 * carry the selected channels and heads (mapping in edits.ts `loraEdits`). Modules the adapter does not target
 * are skipped. Copy-on-write: the new adapter's touched weights are new tensors, every other weight is the
 * caller's own tensor (`disposeCreated(result.weights, adapter.weights)` frees only what this made).
 */
export function zeroLoraChannels(config: ModelConfig, adapter: LoraAdapter, selection: ChannelSelection): LoraAdapter {
  validateSelection(config, selection)
  const r = adapter.config.r
  const expectedShape = (name: string): readonly number[] => {
    const m = /^(.*)\.lora_([AB])\.weight$/.exec(name)!
    const [out, inp] = moduleShape(config, m[1])
    return m[2] === "A" ? [r, inp] : [out, r]
  }
  const weights = applyEdits(adapter.weights, loraEdits(config, selection), () => 0, { skipMissing: true, expectedShape, source: "adapter.weights" })
  return { config: adapter.config, modules: adapter.modules, weights }
}

/** A deep copy of an adapter (new tensors throughout), e.g. before training it in place. */
export function copyAdapter(adapter: LoraAdapter): LoraAdapter {
  const weights = Object.fromEntries(Object.entries(adapter.weights).map(([n, t]) => [n, copyTensor(t)]))
  return { config: adapter.config, modules: adapter.modules, weights }
}
