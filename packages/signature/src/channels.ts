import { MODULE_PARENT } from "@bdvax/llm"
import type { ModelShape } from "./model-shape.js"
import { kvGroupOf } from "./model-shape.js"

/**
 * Which weight rows and columns make up one MLP channel or one attention head (the units a signature selects),
 * and the host-side tensors deltas are held in.
 *
 *  - MLP channel c of layer l: row c of gate_proj [intermediate, hidden], row c of up_proj, column c of
 *    down_proj [hidden, intermediate] — everything that reads or writes intermediate activation c.
 *  - Attention head h: rows [h·d, (h+1)·d) of q_proj, the rows of its key/value group g = floor(h / (H/H_kv)) in
 *    k_proj and v_proj, and columns [h·d, (h+1)·d) of o_proj. Under GQA a k/v block is shared by H/H_kv query
 *    heads and so belongs to the vector of each of them.
 */

/** A dense row-major f32 array with its shape, on the host. */
export interface HostTensor {
  readonly shape: readonly number[]
  readonly data: Float32Array
}

/** Delta tensors keyed by the Hugging Face weight name they update ("model.layers.3.mlp.gate_proj.weight"). */
export type DeltaTensors = Readonly<Record<string, HostTensor>>

export const MLP_MODULES = ["gate_proj", "up_proj", "down_proj"] as const
export const ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"] as const
export type MlpModule = (typeof MLP_MODULES)[number]
export type AttentionModule = (typeof ATTENTION_MODULES)[number]
export type LinearModule = MlpModule | AttentionModule

const PARENT: Readonly<Record<LinearModule, string>> = MODULE_PARENT

/** The module path, e.g. "model.layers.3.mlp.gate_proj" (LoRA's module names). */
export const modulePath = (layer: number, module: LinearModule): string => `model.layers.${layer}.${PARENT[module]}.${module}`

/** The weight a delta tensor updates, e.g. "model.layers.3.mlp.gate_proj.weight". */
export const weightName = (layer: number, module: LinearModule): string => `${modulePath(layer, module)}.weight`

/** [out, in] of a linear weight, as Hugging Face stores it. */
export function linearShape(shape: ModelShape, module: LinearModule): [number, number] {
  const h = shape.hidden_size
  const q = shape.num_attention_heads * shape.head_dim
  const kv = shape.num_key_value_heads * shape.head_dim
  const f = shape.intermediate_size
  switch (module) {
    case "q_proj":
      return [q, h]
    case "k_proj":
    case "v_proj":
      return [kv, h]
    case "o_proj":
      return [h, q]
    case "gate_proj":
    case "up_proj":
      return [f, h]
    case "down_proj":
      return [h, f]
  }
}

/** Every linear weight name of the model, MLP and attention, in layer order. */
export function linearWeightNames(shape: ModelShape): string[] {
  const out: string[] = []
  for (let l = 0; l < shape.num_hidden_layers; l++) for (const m of [...ATTENTION_MODULES, ...MLP_MODULES]) out.push(weightName(l, m))
  return out
}

function rows(t: HostTensor, from: number, to: number): Float32Array {
  const cols = t.shape[1]
  return t.data.subarray(from * cols, to * cols)
}

function columns(t: HostTensor, from: number, to: number): Float32Array {
  const [r, cols] = t.shape
  const out = new Float32Array(r * (to - from))
  let k = 0
  // row-major: for each row, the columns of the block (the order only has to match across variants)
  for (let i = 0; i < r; i++) for (let j = from; j < to; j++) out[k++] = t.data[i * cols + j]
  return out
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/**
 * Δ[c] of MLP channel c in layer l: concat(gate_proj row c, up_proj row c, down_proj column c). Modules absent
 * from the delta (an adapter that does not target them) contribute nothing.
 */
export function mlpChannelVector(delta: DeltaTensors, shape: ModelShape, layer: number, channel: number): Float32Array {
  if (!(channel >= 0 && channel < shape.intermediate_size)) throw new RangeError(`mlpChannelVector: channel ${channel} is outside [0, ${shape.intermediate_size})`)
  const parts: Float32Array[] = []
  const gate = delta[weightName(layer, "gate_proj")]
  const up = delta[weightName(layer, "up_proj")]
  const down = delta[weightName(layer, "down_proj")]
  if (gate) parts.push(rows(gate, channel, channel + 1))
  if (up) parts.push(rows(up, channel, channel + 1))
  if (down) parts.push(columns(down, channel, channel + 1))
  return concat(parts)
}

/**
 * Δ[h] of attention head h in layer l: concat(q_proj rows of h, k_proj rows of h's KV group, v_proj rows of that
 * group, o_proj columns of h). Modules absent from the delta contribute nothing.
 */
export function headVector(delta: DeltaTensors, shape: ModelShape, layer: number, head: number): Float32Array {
  if (!(head >= 0 && head < shape.num_attention_heads)) throw new RangeError(`headVector: head ${head} is outside [0, ${shape.num_attention_heads})`)
  const d = shape.head_dim
  const g = kvGroupOf(shape, head)
  const parts: Float32Array[] = []
  const q = delta[weightName(layer, "q_proj")]
  const k = delta[weightName(layer, "k_proj")]
  const v = delta[weightName(layer, "v_proj")]
  const o = delta[weightName(layer, "o_proj")]
  if (q) parts.push(rows(q, head * d, (head + 1) * d))
  if (k) parts.push(rows(k, g * d, (g + 1) * d))
  if (v) parts.push(rows(v, g * d, (g + 1) * d))
  if (o) parts.push(columns(o, head * d, (head + 1) * d))
  return concat(parts)
}
