/**
 * The model configuration every part of @bdvax/llm works with: Hugging Face's config.json for
 * LlamaForCausalLM / MistralForCausalLM, validated and with defaults filled in (config.ts parses it; gguf.ts
 * builds it from GGUF metadata). Field names are camelCase versions of Hugging Face's.
 */
export type Architecture = "llama" | "mistral"

/** rope_scaling as Hugging Face defines it; "default" means none. */
export type RopeScaling =
  | { readonly ropeType: "default" }
  | { readonly ropeType: "linear"; readonly factor: number }
  | { readonly ropeType: "dynamic"; readonly factor: number }
  | {
      readonly ropeType: "llama3"
      readonly factor: number
      readonly lowFreqFactor: number
      readonly highFreqFactor: number
      readonly originalMaxPositionEmbeddings: number
    }

export interface ModelConfig {
  readonly architecture: Architecture
  readonly vocabSize: number
  readonly hiddenSize: number
  readonly intermediateSize: number
  readonly numHiddenLayers: number
  readonly numAttentionHeads: number
  readonly numKeyValueHeads: number
  /** hidden_size / num_attention_heads unless config.json sets head_dim. */
  readonly headDim: number
  readonly rmsNormEps: number
  readonly ropeTheta: number
  readonly ropeScaling: RopeScaling
  readonly maxPositionEmbeddings: number
  readonly tieWordEmbeddings: boolean
  /** Mistral's sliding window (keys i − window < j ≤ i); null = full causal attention. */
  readonly slidingWindow: number | null
  readonly attentionBias: boolean
  readonly mlpBias: boolean
  readonly initializerRange: number
  readonly bosTokenId: number | null
  readonly eosTokenId: readonly number[]
  readonly padTokenId: number | null
  /** "silu" is the only activation Llama/Mistral use; anything else is rejected by the parser. */
  readonly hiddenAct: "silu"
}

/** Hugging Face parameter names of a Llama/Mistral causal LM, in a stable order. */
export function parameterNames(c: ModelConfig): string[] {
  const names = ["model.embed_tokens.weight"]
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}`
    names.push(`${p}.input_layernorm.weight`)
    for (const m of ["q_proj", "k_proj", "v_proj", "o_proj"]) {
      names.push(`${p}.self_attn.${m}.weight`)
      if (c.attentionBias) names.push(`${p}.self_attn.${m}.bias`)
    }
    names.push(`${p}.post_attention_layernorm.weight`)
    for (const m of ["gate_proj", "up_proj", "down_proj"]) {
      names.push(`${p}.mlp.${m}.weight`)
      if (c.mlpBias) names.push(`${p}.mlp.${m}.bias`)
    }
  }
  names.push("model.norm.weight")
  if (!c.tieWordEmbeddings) names.push("lm_head.weight")
  return names
}

/** The shape Hugging Face gives each parameter ([out_features, in_features] for linears). */
export function parameterShape(c: ModelConfig, name: string): number[] {
  const h = c.hiddenSize
  const q = c.numAttentionHeads * c.headDim
  const kv = c.numKeyValueHeads * c.headDim
  const f = c.intermediateSize
  if (name === "model.embed_tokens.weight" || name === "lm_head.weight") return [c.vocabSize, h]
  if (name.endsWith("layernorm.weight") || name === "model.norm.weight") return [h]
  const m = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.(weight|bias)$/.exec(name)
  if (m === null) throw new RangeError(`parameterShape: ${name} is not a Llama/Mistral parameter`)
  const out = { q_proj: q, k_proj: kv, v_proj: kv, o_proj: h, gate_proj: f, up_proj: f, down_proj: h }[m[1]]!
  const inp = { q_proj: h, k_proj: h, v_proj: h, o_proj: q, gate_proj: h, up_proj: h, down_proj: f }[m[1]]!
  return m[2] === "bias" ? [out] : [out, inp]
}
