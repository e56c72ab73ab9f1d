import { init, type Rng } from "@bdvax/core-tensor"
import { type ModelConfig, type Params, parameterShape } from "@bdvax/llm"
import { applyEdits, modelEdits } from "./edits.js"
import { purifyError } from "./errors.js"
import { type ChannelSelection, validateSelection } from "./selection.js"

/**
 * Full-model channel surgery. Both functions are copy-on-write: the returned record holds new tensors for the
 * touched weights and the caller's own tensors for everything else (dispose the new ones with
 * `disposeCreated(result, params)`); the caller's tensors are never modified.
 *
 * Selected MLP channel c of layer l: gate_proj row c, up_proj row c, down_proj column c (and the gate/up bias
 * entry c when the model has MLP biases). Selected head h: q_proj rows and o_proj columns of h, and the key/value
 * rows of its KV group only when every query head of that group is selected (see edits.ts for why).
 */

export interface ReinitOptions {
  /** Standard deviation of the redraw; default config.initializerRange, Hugging Face's `_init_weights` for
   *  Llama/Mistral linears (N(0, initializer_range²)). Biases are reset to 0 as `_init_weights` does. */
  readonly std?: number
}

const shapeOf = (config: ModelConfig) => (name: string) => parameterShape(config, name)

/**
 * Redraw the selected rows/columns from the model's initial distribution. One normal draw of the full tensor's
 * shape per touched tensor, in selection order, so the result is a pure function of (params, selection, rng
 * state) on every backend.
 */
export function reinitChannels(config: ModelConfig, params: Params, selection: ChannelSelection, rng: Rng, options: ReinitOptions = {}): Params {
  validateSelection(config, selection)
  const std = options.std ?? config.initializerRange
  if (!(std >= 0 && Number.isFinite(std))) throw purifyError("range", "options.std", `${std} is not a finite non-negative standard deviation`)
  return applyEdits(params, modelEdits(config, selection), (edit, old) => (old.rank === 1 ? 0 : init.normal(old.device, old.shape, rng, std)), {
    skipMissing: false,
    expectedShape: shapeOf(config),
    source: "params",
  })
}

/** Set the selected rows/columns to zero (the pruning baselines): the channel's contribution is removed. */
export function zeroChannels(config: ModelConfig, params: Params, selection: ChannelSelection): Params {
  validateSelection(config, selection)
  return applyEdits(params, modelEdits(config, selection), () => 0, { skipMissing: false, expectedShape: shapeOf(config), source: "params" })
}
