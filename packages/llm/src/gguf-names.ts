/**
 * llama.cpp ↔ Hugging Face parameter names for Llama/Mistral, and the q/k row order llama.cpp uses.
 *
 * Row order: Hugging Face's Llama applies RoPE in "rotate-half" form, pairing dimension i of a head with
 * dimension i + headDim/2. llama.cpp's RoPE pairs adjacent dimensions (2i, 2i + 1), so its converter
 * (convert_hf_to_gguf.py, `LlamaModel.permute`) reorders the rows of q_proj and k_proj (weights and biases)
 * inside every head:
 *
 *   gguf row  h·headDim + 2i + j   =   hf row  h·headDim + j·headDim/2 + i      (i < headDim/2, j ∈ {0, 1})
 *
 * i.e. numpy `w.reshape(heads, 2, headDim/2, ...).swapaxes(1, 2)`, with heads = num_attention_heads for q and
 * num_key_value_heads for k. `unpermuteQK` is its inverse (transformers' GGUF loader does the same).
 */

const LAYER_PARTS: ReadonlyArray<readonly [gguf: string, hf: string]> = [
  ["attn_norm", "input_layernorm"],
  ["ffn_norm", "post_attention_layernorm"],
  ["attn_q", "self_attn.q_proj"],
  ["attn_k", "self_attn.k_proj"],
  ["attn_v", "self_attn.v_proj"],
  ["attn_output", "self_attn.o_proj"],
  ["ffn_gate", "mlp.gate_proj"],
  ["ffn_up", "mlp.up_proj"],
  ["ffn_down", "mlp.down_proj"],
]

const GLOBAL_PARTS: ReadonlyArray<readonly [gguf: string, hf: string]> = [
  ["token_embd", "model.embed_tokens"],
  ["output_norm", "model.norm"],
  ["output", "lm_head"],
]

/** The Hugging Face name of a llama.cpp tensor name, or undefined when it is not a Llama parameter. */
export function ggufToHfName(name: string): string | undefined {
  const m = /^(.*)\.(weight|bias)$/.exec(name)
  if (m === null) return undefined
  const [, stem, kind] = m
  const global = GLOBAL_PARTS.find(([g]) => g === stem)
  if (global !== undefined) return `${global[1]}.${kind}`
  const layer = /^blk\.(0|[1-9]\d*)\.([a-z_]+)$/.exec(stem)
  const part = layer && LAYER_PARTS.find(([g]) => g === layer[2])
  return part ? `model.layers.${layer[1]}.${part[1]}.${kind}` : undefined
}

/** The llama.cpp name of a Hugging Face Llama parameter name, or undefined. */
export function hfToGgufName(name: string): string | undefined {
  const m = /^(.*)\.(weight|bias)$/.exec(name)
  if (m === null) return undefined
  const [, stem, kind] = m
  const global = GLOBAL_PARTS.find(([, h]) => h === stem)
  if (global !== undefined) return `${global[0]}.${kind}`
  const layer = /^model\.layers\.(0|[1-9]\d*)\.(.+)$/.exec(stem)
  const part = layer && LAYER_PARTS.find(([, h]) => h === layer[2])
  return part ? `blk.${layer[1]}.${part[0]}.${kind}` : undefined
}

/** Which head count orders the rows of a Hugging Face parameter: q_proj → "query", k_proj → "key". */
export function permutedProjection(hfName: string): "query" | "key" | undefined {
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) return "query"
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) return "key"
  return undefined
}

/**
 * Reorders rows (the first dimension, `rows` of them, each `data.length / rows` values) within each of `heads`
 * heads. `toHf` undoes llama.cpp's permutation; `!toHf` applies it (for writing GGUF or building tests).
 */
function reorderHeadRows(data: Float32Array, rows: number, heads: number, toHf: boolean): Float32Array {
  if (rows <= 0 || heads <= 0 || rows % (2 * heads) !== 0 || data.length % rows !== 0)
    throw new RangeError(`q/k permutation: ${rows} rows cannot be split into ${heads} heads of even size`)
  const rowLength = data.length / rows
  const headDim = rows / heads
  const half = headDim / 2
  const out = new Float32Array(data.length)
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const ggufRow = h * headDim + 2 * i + j
        const hfRow = h * headDim + j * half + i
        const [from, to] = toHf ? [ggufRow, hfRow] : [hfRow, ggufRow]
        out.set(data.subarray(from * rowLength, (from + 1) * rowLength), to * rowLength)
      }
    }
  }
  return out
}

/** Hugging Face row order of a q_proj/k_proj weight or bias read from a llama.cpp GGUF. */
export const unpermuteQK = (data: Float32Array, rows: number, heads: number): Float32Array =>
  reorderHeadRows(data, rows, heads, true)

/** llama.cpp row order of a Hugging Face q_proj/k_proj weight or bias (convert_hf_to_gguf's permute). */
export const permuteQK = (data: Float32Array, rows: number, heads: number): Float32Array =>
  reorderHeadRows(data, rows, heads, false)
