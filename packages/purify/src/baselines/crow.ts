import { ops, type Tensor, tidy, valueAndGrad } from "@bdvax/core-tensor"
import { embedTokens, forward, type LoraWeights, type ModelConfig, type Params, type SftBatch, type SftLossContext, sftLossTensor } from "@bdvax/llm"
import { purifyError } from "../errors.js"
import { lightFinetune } from "../finetune.js"
import { copyAdapter } from "../lora-zero.js"
import { type DefenseResult, disposingOnError, ownAll } from "../target.js"
import type { BaselineInput } from "./common.js"

/**
 * CROW (Min et al., "CROW: Eliminating Backdoors from LLMs via Internal Consistency Regularization", ICML 2025):
 * finetune on clean data with
 *
 *   L = L_LM + α · L_cons(e'),   e' = e + ε · sign(∇_e L_cons(e))
 *
 * where e are the input token embeddings, L_LM the usual response-token cross-entropy on the clean input, and
 * L_cons the mean over consecutive layer pairs (l, l+1) of 1 − cos(h_l, h_{l+1}) averaged over the non-pad tokens,
 * h_0 … h_L the hidden states forward's `collectHidden` returns (the input of each layer and the last layer's
 * output). The FGSM step is one signed-gradient step on the embeddings (the perturbation is a constant: no
 * gradient flows through its construction, as in the paper's `.detach()`); pad positions are not perturbed.
 * α = 5.5, ε = 0.1 as in the paper, at the standard learning rate of the mode.
 */
export interface CrowOptions {
  /** Weight of the consistency term. Default 5.5. */
  readonly alpha?: number
  /** FGSM step on the embeddings. Default 0.1. */
  readonly epsilon?: number
}

export const CROW_DEFAULTS = { alpha: 5.5, epsilon: 0.1 } as const

/** Norms are clamped at 1e-8 (torch.cosine_similarity's eps), through the square so a zero vector (a pad
 *  embedding) has a finite gradient of 0, not 0 · ∞. */
const EPS_SQUARED = 1e-16

/**
 * L_cons of hidden states [B, T, H] (at least two), averaged over tokens where `mask` ([B, T], 1 = real token,
 * 0 = pad) is 1 — every token when mask is null.
 */
export function consistencyLoss(hidden: readonly Tensor[], mask: Tensor | null): Tensor {
  if (hidden.length < 2) throw purifyError("input", "hidden", `needs at least two hidden states, got ${hidden.length}`)
  return tidy(() => {
    const norm = (x: Tensor) => ops.sqrt(ops.maximum(ops.sum(ops.square(x), -1), EPS_SQUARED))
    let total: Tensor | null = null
    for (let l = 0; l + 1 < hidden.length; l++) {
      const a = hidden[l]
      const b = hidden[l + 1]
      const cos = ops.div(ops.sum(ops.mul(a, b), -1), ops.mul(norm(a), norm(b)))
      const gap = ops.sub(1, cos)
      const summed = ops.sum(mask === null ? gap : ops.mul(gap, mask))
      total = total === null ? summed : ops.add(total, summed)
    }
    const [bs, t] = hidden[0].shape
    const tokens = mask === null ? bs * t : ops.maximum(ops.sum(mask), 1)
    return ops.div(ops.div(total!, tokens), hidden.length - 1)
  })
}

/** The device inputs of a collated batch: ids, the attention key mask (when padded) and the float token mask. */
export interface BatchTensors {
  readonly ids: Tensor
  readonly keyMask: Tensor | undefined
  readonly mask: Tensor
}

export function batchTensors(params: Params, batch: SftBatch): BatchTensors {
  const dev = params["model.embed_tokens.weight"].device
  const shape = [batch.batch, batch.length]
  return {
    ids: dev.tensor(batch.inputIds, shape, "int32"),
    keyMask: batch.hasPadding ? dev.tensor(batch.keyMask, shape, "bool") : undefined,
    mask: dev.tensor(batch.keyMask, shape),
  }
}

/** L_cons of the model run on given input embeddings (forward's LM head is cut to the last position: only the
 *  hidden states are needed). */
export function consistencyAt(config: ModelConfig, params: Params, inputs: BatchTensors, embeds: Tensor, lora?: LoraWeights): Tensor {
  return tidy(() => {
    const { hidden } = forward(config, params, inputs.ids, { keyMask: inputs.keyMask, lora, inputsEmbeds: embeds, collectHidden: true, lastPositionOnly: true })
    return consistencyLoss(hidden, inputs.mask)
  })
}

/**
 * ∇_e L_cons(e) at `embeds` ([B, T, H]), with the parameters held constant. It runs on a tape of its own, so
 * when called inside a training step's loss nothing of it is recorded on the step's tape.
 */
export function consistencyGradient(config: ModelConfig, params: Params, inputs: BatchTensors, embeds: Tensor, lora?: LoraWeights): Tensor {
  const leaf = embeds.detach()
  try {
    const [value, grads] = valueAndGrad((p: { e: Tensor }) => consistencyAt(config, params, inputs, p.e, lora))({ e: leaf })
    value.dispose()
    return grads.e
  } finally {
    leaf.dispose()
  }
}

/** ε · sign(grad) on real tokens, 0 on pads ([B, T, H]). */
export function fgsmPerturbation(grad: Tensor, mask: Tensor, epsilon: number): Tensor {
  return tidy(() => {
    const sign = ops.sub(ops.cast(ops.gt(grad, 0), "float32"), ops.cast(ops.lt(grad, 0), "float32"))
    return ops.mul(ops.mul(sign, ops.reshape(mask, [...mask.shape, 1])), epsilon)
  })
}

/**
 * The CROW objective for one micro-batch, in the shape of trainSft's `loss` option. The consistency term is
 * scaled by the batch's share of the step's loss tokens, so gradient accumulation over micro-batches gives the
 * token-weighted mean of the per-batch objectives (exactly L_LM + α · L_cons with one micro-batch per step).
 */
export function crowObjective(ctx: SftLossContext, options: CrowOptions = {}): Tensor {
  const alpha = options.alpha ?? CROW_DEFAULTS.alpha
  const epsilon = options.epsilon ?? CROW_DEFAULTS.epsilon
  const { config, params, lora, batch, normalizer } = ctx
  return tidy(() => {
    const inputs = batchTensors(params, batch)
    const lm = sftLossTensor(config, params, batch, { lora, normalizer })
    const embeds = embedTokens(config, params, inputs.ids)
    const delta = fgsmPerturbation(consistencyGradient(config, params, inputs, embeds, lora), inputs.mask, epsilon)
    const cons = consistencyAt(config, params, inputs, ops.add(embeds, delta), lora)
    return ops.add(lm, ops.mul(cons, (alpha * batch.lossTokens) / normalizer))
  })
}

function checkOptions(options: CrowOptions = {}): void {
  for (const key of ["alpha", "epsilon"] as const) {
    const v = options[key]
    if (v !== undefined && !(v >= 0 && Number.isFinite(v))) throw purifyError("range", `crow.${key}`, `${v} is not a finite non-negative number`)
  }
}

/** Baseline: CROW finetuning (full model or adapter) on copies, at the mode's standard learning rate. */
export async function crow(input: BaselineInput & { readonly crow?: CrowOptions }): Promise<DefenseResult> {
  checkOptions(input.crow)
  const loss = (ctx: SftLossContext) => crowObjective(ctx, input.crow)
  if (input.mode === "full") {
    const params = ownAll(input.params, input.params)
    const training = await disposingOnError(Object.values(params), () => lightFinetune(input.config, params, input.clean, { ...input.finetune, loss }))
    return { mode: "full", params, training, selection: null }
  }
  const adapter = copyAdapter(input.adapter)
  const training = await disposingOnError(Object.values(adapter.weights), () =>
    lightFinetune(input.config, input.params, input.clean, { ...input.finetune, adapter, loss }),
  )
  return { mode: "adapter", adapter, training, selection: null }
}
