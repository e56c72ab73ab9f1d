import { ops, type Tensor, tidy } from "@bdvax/core-tensor"
import type { ModelConfig, Params } from "@bdvax/llm"
import { purifyError } from "./errors.js"
import { type ChannelSelection, fullySelectedGroups, headRange } from "./selection.js"

/**
 * A selection as edits of named tensors: which rows (axis 0; the entries of a 1-D bias) or columns (axis 1) of
 * which tensor. Reinitialising, zeroing and LoRA zeroing all apply the same edits with different fills, so the
 * contract's mapping lives in exactly one place (here).
 */
export interface Edit {
  readonly name: string
  readonly axis: "rows" | "cols"
  readonly indices: readonly number[]
}

/**
 * Edits of the model's own weights.
 * MLP channel c of layer l: gate_proj and up_proj row c (and their bias entry c when mlp_bias), down_proj column
 * c. Head h: q_proj rows of h (and bias entries), o_proj columns of h; k_proj / v_proj rows of KV group g only
 * when every query head of g is selected — a group's keys and values are shared by all its query heads, so
 * touching them for a partly selected group would also rewrite what the unselected heads attend to, i.e. damage
 * heads the signature found clean.
 */
export function modelEdits(config: ModelConfig, selection: ChannelSelection): Edit[] {
  const edits: Edit[] = []
  for (const { layer, channels } of selection.mlp) {
    const p = `model.layers.${layer}.mlp`
    edits.push({ name: `${p}.gate_proj.weight`, axis: "rows", indices: channels }, { name: `${p}.up_proj.weight`, axis: "rows", indices: channels })
    if (config.mlpBias)
      edits.push({ name: `${p}.gate_proj.bias`, axis: "rows", indices: channels }, { name: `${p}.up_proj.bias`, axis: "rows", indices: channels })
    edits.push({ name: `${p}.down_proj.weight`, axis: "cols", indices: channels })
  }
  for (const { layer, heads } of selection.heads) {
    const p = `model.layers.${layer}.self_attn`
    const qRows = headRange(config, heads)
    const kvRows = headRange(config, fullySelectedGroups(config, heads))
    edits.push({ name: `${p}.q_proj.weight`, axis: "rows", indices: qRows })
    if (config.attentionBias) edits.push({ name: `${p}.q_proj.bias`, axis: "rows", indices: qRows })
    if (kvRows.length > 0)
      for (const m of ["k_proj", "v_proj"]) {
        edits.push({ name: `${p}.${m}.weight`, axis: "rows", indices: kvRows })
        if (config.attentionBias) edits.push({ name: `${p}.${m}.bias`, axis: "rows", indices: kvRows })
      }
    edits.push({ name: `${p}.o_proj.weight`, axis: "cols", indices: qRows })
  }
  return edits
}

/**
 * Edits of a LoRA adapter (keys `${module}.lora_{A,B}.weight`), per the contract: MLP channel c ↔ row c of
 * gate_proj/up_proj lora_B and column c of down_proj lora_A; head h ↔ q_proj lora_B rows of h (k_proj/v_proj
 * lora_B rows of its KV group when the whole group is selected, as in modelEdits) and o_proj lora_A columns of
 * h. Zeroing them zeroes exactly the same rows/columns of the effective update scaling·B·A.
 */
export function loraEdits(config: ModelConfig, selection: ChannelSelection): Edit[] {
  const edits: Edit[] = []
  for (const { layer, channels } of selection.mlp) {
    const p = `model.layers.${layer}.mlp`
    edits.push(
      { name: `${p}.gate_proj.lora_B.weight`, axis: "rows", indices: channels },
      { name: `${p}.up_proj.lora_B.weight`, axis: "rows", indices: channels },
      { name: `${p}.down_proj.lora_A.weight`, axis: "cols", indices: channels },
    )
  }
  for (const { layer, heads } of selection.heads) {
    const p = `model.layers.${layer}.self_attn`
    const qRows = headRange(config, heads)
    const kvRows = headRange(config, fullySelectedGroups(config, heads))
    edits.push({ name: `${p}.q_proj.lora_B.weight`, axis: "rows", indices: qRows })
    if (kvRows.length > 0)
      edits.push({ name: `${p}.k_proj.lora_B.weight`, axis: "rows", indices: kvRows }, { name: `${p}.v_proj.lora_B.weight`, axis: "rows", indices: kvRows })
    edits.push({ name: `${p}.o_proj.lora_A.weight`, axis: "cols", indices: qRows })
  }
  return edits
}

/** A bool mask selecting the edited rows ([n, 1], or [n] for a 1-D tensor) or columns ([1, n]) of `t`. */
function editMask(t: Tensor, edit: Edit): Tensor {
  const n = edit.axis === "rows" ? t.shape[0] : t.shape[1]
  const flags = new Uint8Array(n)
  for (const i of edit.indices) flags[i] = 1
  const shape = t.rank === 1 ? [n] : edit.axis === "rows" ? [n, 1] : [1, n]
  return t.device.tensor(flags, shape, "bool")
}

/**
 * Copy-on-write: a new record in which every edited tensor is replaced by a new one (the selected rows/columns
 * from `fill`, every other element bit-for-bit the old value) and every other entry is the caller's own tensor.
 * `fill` returns a tensor of the edited tensor's shape (consumed here) or a constant. Edits naming a tensor the
 * record lacks are skipped when `skipMissing` (adapters that do not target a module), else an error.
 */
export function applyEdits(
  record: Params,
  edits: readonly Edit[],
  fill: (edit: Edit, old: Tensor) => Tensor | number,
  options: { readonly skipMissing: boolean; readonly expectedShape?: (name: string) => readonly number[]; readonly source: string },
): Params {
  for (const e of edits) {
    const t = record[e.name]
    if (t === undefined) {
      if (options.skipMissing) continue
      throw purifyError("shape", `${options.source}["${e.name}"]`, "is missing")
    }
    const want = options.expectedShape?.(e.name)
    if (want !== undefined && (t.rank !== want.length || t.shape.some((d, i) => d !== want[i])))
      throw purifyError("shape", `${options.source}["${e.name}"]`, `has shape [${t.shape.join(", ")}] but the config implies [${want.join(", ")}]`)
    if (t.rank > 2 || (e.axis === "cols" && t.rank !== 2)) throw purifyError("shape", `${options.source}["${e.name}"]`, `cannot edit ${e.axis} of a rank-${t.rank} tensor`)
    const bound = e.axis === "rows" ? t.shape[0] : t.shape[1]
    for (const i of e.indices) if (i < 0 || i >= bound) throw purifyError("range", `${options.source}["${e.name}"]`, `${e.axis} index ${i} is outside [0, ${bound})`)
  }
  const out: Params = { ...record }
  const created: Tensor[] = []
  try {
    for (const e of edits) {
      const old = record[e.name]
      if (old === undefined || e.indices.length === 0) continue
      const replacement = tidy(() => {
        const value = fill(e, old)
        const mask = editMask(old, e)
        return ops.where(mask, value, old)
      })
      created.push(replacement)
      out[e.name] = replacement
    }
  } catch (err) {
    for (const t of created) t.dispose()
    throw err
  }
  return out
}

/** Dispose the tensors of `derived` that are not (by identity) in any of `sources`: what a copy-on-write
 *  operation created. */
export function disposeCreated(derived: Params, ...sources: Params[]): void {
  const shared = new Set<Tensor>(sources.flatMap((s) => Object.values(s)))
  const seen = new Set<Tensor>()
  for (const t of Object.values(derived)) if (!shared.has(t) && !seen.has(t)) (seen.add(t), t.dispose())
}

/** A real copy (new storage: AdamW updates in place, so a view would let training reach the original). */
export const copyTensor = (t: Tensor): Tensor => ops.mul(t, 1)
