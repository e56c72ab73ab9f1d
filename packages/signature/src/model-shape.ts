import type { ModelConfig } from "@bdvax/llm"

/**
 * The dimensions a signature depends on, under config.json's own keys, so a signature file can be compared
 * with a checkpoint's config by eye and a mismatch error names the field a user will find in config.json.
 */
export interface ModelShape {
  readonly num_hidden_layers: number
  readonly hidden_size: number
  readonly intermediate_size: number
  readonly num_attention_heads: number
  readonly num_key_value_heads: number
  readonly head_dim: number
}

export const MODEL_SHAPE_FIELDS = [
  "num_hidden_layers",
  "hidden_size",
  "intermediate_size",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
] as const satisfies ReadonlyArray<keyof ModelShape>

export function modelShape(config: ModelConfig): ModelShape {
  return {
    num_hidden_layers: config.numHiddenLayers,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
  }
}

/** Query heads sharing one key/value head (grouped-query attention). */
export const headsPerKvGroup = (shape: ModelShape): number => shape.num_attention_heads / shape.num_key_value_heads

/** The key/value group of query head h: floor(h / (num_attention_heads / num_key_value_heads)), as HF's repeat_kv. */
export const kvGroupOf = (shape: ModelShape, head: number): number => Math.floor(head / headsPerKvGroup(shape))
