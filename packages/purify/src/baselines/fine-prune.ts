import { keep, noGrad, ops, type Tensor, tidy } from "@bdvax/core-tensor"
import { collateSft, forward, type ModelConfig, type Params, parameterShape, type SftExample, shuffledOrder } from "@bdvax/llm"
import { purifyError } from "../errors.js"
import { type ChannelSelection, countForRatio, fromPairs, smallestChannels } from "../selection.js"
import type { DefenseResult } from "../target.js"
import type { BaselineInput } from "./common.js"
import { pruneThenFinetune } from "./prune-then-finetune.js"

/**
 * Fine-pruning (Liu et al., 2018) with Wanda importance (Sun et al., 2024) at channel granularity: prune the
 * MLP channels the clean data uses least, then finetune on clean data.
 *
 *   score_c = Σ_i |W_down[i, c]| · ‖a_c‖₂
 *
 * with a_c the down_proj input (silu(gate)·up) of channel c over every non-pad token of the clean examples
 * (prompt and response). Wanda's per-weight score |W_ij|·‖X_j‖ summed over the weights of one input column is
 * this. In adapter mode the paper prunes a seeded random selection instead (the adapter has no activation of
 * its own); `randomSelection` is that.
 */

export interface WandaOptions {
  /** Examples per forward batch. Default 8. */
  readonly batchSize?: number
  readonly maxLength?: number
  /** Default config.padTokenId, else the first eos token, else 0. */
  readonly padTokenId?: number
}

/** Σ over non-pad clean tokens of a_c² per layer and channel ([layer][channel]), from forward's MLP hook. */
export async function mlpActivationSquares(config: ModelConfig, params: Params, clean: readonly SftExample[], options: WandaOptions = {}): Promise<Float64Array[]> {
  if (clean.length === 0) throw purifyError("input", "clean", "no clean examples to measure activations on")
  const bs = options.batchSize ?? 8
  if (!Number.isInteger(bs) || bs < 1) throw purifyError("range", "wanda.batchSize", `${bs} is not a positive integer`)
  const pad = options.padTokenId ?? config.padTokenId ?? config.eosTokenId[0] ?? 0
  const dev = params["model.embed_tokens.weight"].device
  const sums = Array.from({ length: config.numHiddenLayers }, () => new Float64Array(config.intermediateSize))
  for (let i = 0; i < clean.length; i += bs) {
    const batch = collateSft(clean.slice(i, i + bs), { padTokenId: pad, maxLength: options.maxLength })
    const perLayer: Tensor[] = []
    try {
      noGrad(() =>
        tidy(() => {
          const ids = dev.tensor(batch.inputIds, [batch.batch, batch.length], "int32")
          const keyMask = batch.hasPadding ? dev.tensor(batch.keyMask, [batch.batch, batch.length], "bool") : undefined
          const tokenMask = dev.tensor(batch.keyMask, [batch.batch, batch.length, 1])
          forward(config, params, ids, {
            keyMask,
            lastPositionOnly: true, // the LM head is not needed
            // Reduce inside the layer's scope and keep only the [intermediate] sums (the activation is freed there).
            onMlpActivation: (layer, act) => {
              perLayer[layer] = keep(ops.sum(ops.mul(ops.square(act), tokenMask), [0, 1]))
            },
          })
        }),
      )
      for (let l = 0; l < config.numHiddenLayers; l++) {
        const host = await perLayer[l].data()
        for (let c = 0; c < host.length; c++) sums[l][c] += host[c]
      }
    } finally {
      for (const t of perLayer) t?.dispose()
    }
  }
  return sums
}

/** score[l][c] = Σ_i |W_down[i, c]| · sqrt(squares[l][c]) for layer l's down_proj. */
export async function wandaFromSquares(config: ModelConfig, params: Params, squares: readonly ArrayLike<number>[]): Promise<Float64Array[]> {
  const out: Float64Array[] = []
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const name = `model.layers.${l}.mlp.down_proj.weight`
    const w = params[name]
    const want = parameterShape(config, name)
    if (w === undefined || w.rank !== 2 || w.shape[0] !== want[0] || w.shape[1] !== want[1])
      throw purifyError("shape", `params["${name}"]`, w === undefined ? "is missing" : `has shape [${w.shape.join(", ")}], expected [${want.join(", ")}]`)
    if (squares[l]?.length !== config.intermediateSize) throw purifyError("shape", `squares[${l}]`, `needs ${config.intermediateSize} values`)
    const colAbs = tidy(() => ops.sum(ops.maximum(w, ops.neg(w)), 0))
    const abs = await colAbs.data()
    colAbs.dispose()
    out.push(Float64Array.from(abs, (a, c) => a * Math.sqrt(squares[l][c])))
  }
  return out
}

/** Wanda channel scores of a full model on clean examples ([layer][channel]). */
export async function wandaScores(config: ModelConfig, params: Params, clean: readonly SftExample[], options: WandaOptions = {}): Promise<Float64Array[]> {
  return wandaFromSquares(config, params, await mlpActivationSquares(config, params, clean, options))
}

/** The `ratio` of MLP channels with the lowest Wanda score (over all layers together). */
export async function wandaSelection(config: ModelConfig, params: Params, clean: readonly SftExample[], ratio: number, options: WandaOptions = {}): Promise<ChannelSelection> {
  const count = countForRatio(ratio, config.numHiddenLayers * config.intermediateSize)
  return smallestChannels(await wandaScores(config, params, clean, options), count)
}

/** A seeded uniform choice of round(ratio · L · intermediate) MLP channels (Philox, via llm's shuffledOrder). */
export function randomSelection(config: ModelConfig, ratio: number, seed: number): ChannelSelection {
  const f = config.intermediateSize
  const total = config.numHiddenLayers * f
  const count = countForRatio(ratio, total)
  const order = shuffledOrder(total, seed, 0)
  return fromPairs(order.slice(0, count).map((k) => ({ layer: Math.floor(k / f), channel: k % f })))
}

/** Baseline: fine-pruning — Wanda selection (full) or random selection (adapter) at `ratio`, zeroed, then the
 *  light clean finetune on the same clean examples. */
export async function finePrune(
  input: BaselineInput & { readonly ratio: number; readonly seed?: number; readonly wanda?: WandaOptions },
): Promise<DefenseResult> {
  const selection =
    input.mode === "full" ? await wandaSelection(input.config, input.params, input.clean, input.ratio, input.wanda) : randomSelection(input.config, input.ratio, input.seed ?? 0)
  return pruneThenFinetune(input, selection)
}
