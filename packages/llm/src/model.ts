import { type Device, init, ops, type Rng, shapeError, type Tensor, tidy } from "@bdvax/core-tensor"
import { KVCache } from "./kv-cache.js"
import { type ModelConfig, parameterNames, parameterShape } from "./model-config.js"
import { ropeTables } from "./rope.js"

/**
 * Llama / Mistral causal LM forward, written against Hugging Face's modeling_llama / modeling_mistral so that
 * logits, gradients and checkpoints match 1:1. Parameters live in a flat record keyed by Hugging Face names
 * ("model.layers.3.mlp.gate_proj.weight"), which is what safetensors files and PEFT adapters address.
 */
export type Params = Record<string, Tensor>

/** LoRA weights applied inside the forward: `${module}.lora_A.weight` [r, in] and `${module}.lora_B.weight` [out, r]. */
export interface LoraWeights {
  readonly weights: Params
  /** lora_alpha / r (PEFT's `scaling`). */
  readonly scaling: number
  /** Dropout on the LoRA input; applied only when `rng` is given (training). */
  readonly dropout: number
  readonly rng?: Rng
}

export interface ForwardOptions {
  /** Read past keys/values from and append this step's to the cache (generation). */
  readonly cache?: KVCache
  /** Per-row positions [B][T]; default cache.length … cache.length + T − 1 for every row. */
  readonly positions?: readonly (readonly number[])[]
  /** [B, past + T] bool: false marks padding keys (left-padded batches). */
  readonly keyMask?: Tensor
  readonly lora?: LoraWeights
  /** Compute the LM head only at the last position (logits [B, 1, V]): a prefill needs no more. */
  readonly lastPositionOnly?: boolean
  /** Also return the hidden state entering each layer and the final normed state (for CROW, Wanda, probes). */
  readonly collectHidden?: boolean
  /**
   * [B, T, hidden_size] embeddings that replace the token-embedding lookup (Hugging Face's `inputs_embeds`), e.g.
   * adversarially perturbed embeddings (CROW). `inputIds` must still be given and fixes B and T; nothing else is
   * read from it. Gradients flow into this tensor when it is tracked. The caller keeps ownership.
   */
  readonly inputsEmbeds?: Tensor
  /**
   * Called once per layer with that layer's MLP intermediate activation silu(gate_proj(y)) · up_proj(y)
   * [B, T, intermediate_size] — the input of down_proj — for activation-based importance scores (Wanda).
   * It runs inside the layer's memory scope: `activation` and every tensor the callback creates are freed when the
   * layer ends, so reduce or copy what you need and `keep()` the result (or the callback's tensors are gone).
   * Under a gradient tape the activation is the recorded one; reduce it under `noGrad` unless you mean to
   * differentiate through it.
   */
  readonly onMlpActivation?: (layer: number, activation: Tensor) => void
}

export interface ForwardResult {
  /** [B, T, vocab] */
  readonly logits: Tensor
  /** hidden[i] = input of layer i (i < L), hidden[L] = output of the last layer before the final norm. */
  readonly hidden: Tensor[]
}

function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  const keepMask = ops.lt(x.device.rand(x.shape, rng), 1 - p)
  return ops.mul(ops.where(keepMask, x, 0), 1 / (1 - p))
}

/** A projection with an optional LoRA update: x·Wᵀ (+ b) + scaling · (drop(x)·Aᵀ)·Bᵀ. */
function project(params: Params, module: string, x: Tensor, lora: LoraWeights | undefined): Tensor {
  const y = ops.linear(x, params[`${module}.weight`], params[`${module}.bias`])
  const a = lora?.weights[`${module}.lora_A.weight`]
  if (lora === undefined || a === undefined) return y
  const b = lora.weights[`${module}.lora_B.weight`]
  const input = lora.dropout > 0 && lora.rng !== undefined ? dropout(x, lora.dropout, lora.rng) : x
  return ops.add(y, ops.mul(ops.linear(ops.linear(input, a), b), lora.scaling))
}

/**
 * Embedding lookup. Hugging Face builds the embedding with padding_idx = pad_token_id, so the lookup sends no
 * gradient to the pad row: the pad positions read a detached copy of the table.
 */
function embed(c: ModelConfig, table: Tensor, ids: Tensor): Tensor {
  const looked = ops.gather(table, ids)
  if (c.padTokenId === null) return looked
  const isPad = ops.expand(ops.reshape(ops.eq(ids, c.padTokenId), [...ids.shape, 1]), looked.shape)
  return ops.where(isPad, ops.gather(table.detach(), ids), looked)
}

/** The token-embedding lookup forward() starts from (pad rows detached, as Hugging Face's padding_idx). */
export function embedTokens(config: ModelConfig, params: Params, inputIds: Tensor): Tensor {
  return tidy(() => embed(config, params["model.embed_tokens.weight"], inputIds))
}

export function forward(config: ModelConfig, params: Params, inputIds: Tensor, options: ForwardOptions = {}): ForwardResult {
  const c = config
  const [b, t] = inputIds.shape
  const embeds = options.inputsEmbeds
  if (embeds !== undefined && (embeds.rank !== 3 || embeds.shape[0] !== b || embeds.shape[1] !== t || embeds.shape[2] !== c.hiddenSize))
    throw shapeError("forward", [inputIds.shape, embeds.shape], `inputsEmbeds must be [${b}, ${t}, ${c.hiddenSize}] (batch and length of inputIds, hidden_size)`)
  const past = options.cache?.length ?? 0
  const positions = options.positions ?? Array.from({ length: b }, () => Array.from({ length: t }, (_, j) => past + j))
  const hidden: Tensor[] = []
  const result = tidy(() => {
    const dev = inputIds.device
    const { cos, sin } = ropeTables(dev, c, positions)
    const heads = (x: Tensor, n: number) => ops.transpose(ops.reshape(x, [b, t, n, c.headDim]), 1, 2)
    // A reshape is a fresh handle on the caller's embeddings: the loop below may dispose it, never the caller's tensor.
    let h = embeds !== undefined ? ops.reshape(embeds, embeds.shape) : embed(c, params["model.embed_tokens.weight"], inputIds)
    const layer = (i: number, hIn: Tensor): Tensor => {
      let h = hIn
      const p = `model.layers.${i}`
      const x = ops.rmsNorm(h, params[`${p}.input_layernorm.weight`], c.rmsNormEps)
      const q = ops.rope(heads(project(params, `${p}.self_attn.q_proj`, x, options.lora), c.numAttentionHeads), cos, sin)
      let k = ops.rope(heads(project(params, `${p}.self_attn.k_proj`, x, options.lora), c.numKeyValueHeads), cos, sin)
      let v = heads(project(params, `${p}.self_attn.v_proj`, x, options.lora), c.numKeyValueHeads)
      if (options.cache) ({ k, v } = options.cache.update(i, k, v))
      const attn = ops.attention(q, k, v, {
        causal: true,
        window: c.slidingWindow ?? 0,
        scale: 1 / Math.sqrt(c.headDim),
        keyMask: options.keyMask,
      })
      const merged = ops.reshape(ops.transpose(attn, 1, 2), [b, t, c.numAttentionHeads * c.headDim])
      h = ops.add(h, project(params, `${p}.self_attn.o_proj`, merged, options.lora))
      const y = ops.rmsNorm(h, params[`${p}.post_attention_layernorm.weight`], c.rmsNormEps)
      const gate = project(params, `${p}.mlp.gate_proj`, y, options.lora)
      const up = project(params, `${p}.mlp.up_proj`, y, options.lora)
      const act = ops.siluMul(gate, up)
      options.onMlpActivation?.(i, act)
      h = ops.add(h, project(params, `${p}.mlp.down_proj`, act, options.lora))
      return h
    }
    for (let i = 0; i < c.numHiddenLayers; i++) {
      if (options.collectHidden) hidden.push(h)
      // One scope per layer: without a tape every temporary of the layer is freed before the next one starts
      // (peak memory of one layer, not of the whole stack); with a tape the recorded nodes keep what backward needs.
      const next = tidy(() => layer(i, h))
      if (!options.collectHidden) h.dispose()
      h = next
    }
    if (options.collectHidden) hidden.push(h)
    const top = options.lastPositionOnly ? ops.slice(h, [0, t - 1, 0], [b, t, c.hiddenSize]) : h
    const normed = ops.rmsNorm(top, params["model.norm.weight"], c.rmsNormEps)
    const head = c.tieWordEmbeddings ? params["model.embed_tokens.weight"] : params["lm_head.weight"]
    return { logits: ops.linear(normed, head), hidden }
  })
  return result
}

/**
 * Fresh parameters from Hugging Face's `_init_weights` for Llama/Mistral: every linear and the embedding
 * N(0, initializer_range²) (the padding row of the embedding zeroed), biases 0, RMSNorm weights 1.
 */
export function initParams(dev: Device, config: ModelConfig, rng: Rng): Params {
  const params: Params = {}
  for (const name of parameterNames(config)) {
    const shape = parameterShape(config, name)
    if (name.endsWith("norm.weight")) params[name] = dev.ones(shape)
    else if (name.endsWith(".bias")) params[name] = dev.zeros(shape)
    else params[name] = init.normal(dev, shape, rng, config.initializerRange)
  }
  const pad = config.padTokenId
  if (pad !== null && pad >= 0 && pad < config.vocabSize) {
    const embed = params["model.embed_tokens.weight"]
    const mask = dev.tensor(Array.from({ length: config.vocabSize }, (_, i) => (i === pad ? 0 : 1)), [config.vocabSize, 1])
    params["model.embed_tokens.weight"] = ops.mul(embed, mask)
    embed.dispose()
    mask.dispose()
  }
  return params
}

/** Check that a parameter record has exactly the config's tensors with the right shapes. */
export function validateParams(config: ModelConfig, params: Params, source: string): string[] {
  const problems: string[] = []
  for (const name of parameterNames(config)) {
    const t = params[name]
    const shape = parameterShape(config, name)
    if (t === undefined) problems.push(`${source}: missing tensor ${name}`)
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      problems.push(`${source}: tensor ${name} has shape [${t.shape}] but config.json implies [${shape}]`)
  }
  return problems
}

export { KVCache }
