import { ops, type Tensor, tidy } from "@bdvax/core-tensor"
import { effectiveDelta, type LoraAdapter, type ModelConfig, type Params, parameterShape } from "@bdvax/llm"
import { purifyError } from "../errors.js"
import { type ChannelSelection, countForRatio, smallestChannels } from "../selection.js"
import type { DefenseResult } from "../target.js"
import type { BaselineInput } from "./common.js"
import { pruneThenFinetune } from "./prune-then-finetune.js"

/**
 * Magnitude pruning at the signature's structure: the MLP channels whose weight vector
 * concat(gate_proj row c, up_proj row c, down_proj column c) has the smallest L2 norm — of the weights
 * themselves (full model) or of the adapter's effective update scaling·B·A (adapter; modules it does not
 * target contribute nothing) — ranked over all layers together, as the signature's percentile is.
 */

const isAdapter = (source: Params | LoraAdapter): source is LoraAdapter => Array.isArray((source as LoraAdapter).modules)

/** Squared norms per channel: Σ row² of gate and up, Σ column² of down ([intermediate] each). */
function channelSquares(gate: Tensor | null, up: Tensor | null, down: Tensor | null, f: number, dev: Tensor["device"]): Tensor {
  return tidy(() => {
    let acc = dev.zeros([f])
    for (const w of [gate, up]) if (w !== null) acc = ops.add(acc, ops.sum(ops.square(w), 1))
    if (down !== null) acc = ops.add(acc, ops.sum(ops.square(down), 0))
    return acc
  })
}

/** ‖concat(gate row c, up row c, down col c)‖₂ for every layer and channel ([layer][channel]). */
export async function channelNorms(config: ModelConfig, source: Params | LoraAdapter): Promise<Float32Array[]> {
  const f = config.intermediateSize
  const out: Float32Array[] = []
  const adapter = isAdapter(source) ? source : null
  if (adapter !== null && !adapter.modules.some((m) => /\.mlp\.(gate|up|down)_proj$/.test(m)))
    throw purifyError("mode", "adapter.modules", "the adapter targets no MLP projection, so it has no MLP channel to rank")
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const p = `model.layers.${l}.mlp`
    const weight = (m: string): Tensor | null => {
      if (adapter !== null) return adapter.modules.includes(`${p}.${m}`) ? effectiveDelta(adapter, `${p}.${m}`) : null
      const name = `${p}.${m}.weight`
      const t = (source as Params)[name]
      const want = parameterShape(config, name)
      if (t === undefined) throw purifyError("shape", `params["${name}"]`, "is missing")
      if (t.rank !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1])
        throw purifyError("shape", `params["${name}"]`, `has shape [${t.shape.join(", ")}] but the config implies [${want.join(", ")}]`)
      return t
    }
    const gate = weight("gate_proj")
    const up = weight("up_proj")
    const down = weight("down_proj")
    const dev = (gate ?? up ?? down)?.device
    if (dev === undefined) {
      out.push(new Float32Array(f))
      continue
    }
    const norms = tidy(() => ops.sqrt(channelSquares(gate, up, down, f, dev)))
    if (adapter !== null) for (const t of [gate, up, down]) t?.dispose()
    out.push((await norms.data()) as Float32Array)
    norms.dispose()
  }
  return out
}

/** The `ratio` of all MLP channels with the smallest weight (or update) norm. */
export async function magnitudePrune(config: ModelConfig, source: Params | LoraAdapter, ratio: number): Promise<ChannelSelection> {
  const count = countForRatio(ratio, config.numHiddenLayers * config.intermediateSize)
  return smallestChannels(await channelNorms(config, source), count)
}

/** Baseline: magnitude selection at `ratio`, zeroed, then the light clean finetune (on copies). */
export async function magnitudePruneBaseline(input: BaselineInput & { readonly ratio: number }): Promise<DefenseResult> {
  const selection = await magnitudePrune(input.config, input.mode === "full" ? input.params : input.adapter, input.ratio)
  return pruneThenFinetune(input, selection)
}
