import { fillRandom, ops, type Tensor, tidy } from "@bdvax/core-tensor"
import { type LoraAdapter, linearModules, type ModelConfig, type Params } from "@bdvax/llm"
import { purifyError } from "./errors.js"

/**
 * Sanity-check ablations (seed paper §4.1, Tab. 1): given a base θ_0 and a backdoored θ_b, build
 * θ_0 + mask ⊙ (θ_b − θ_0) for a mask that keeps part of the backdoor update, so the CLI can measure whether the
 * backdoor survives. All masks here are whole tensors, so a kept update is θ_b's own tensor (bit-exact) and a
 * dropped one θ_0's; only the shuffled ablation computes new tensors.
 *
 * - attention: only q/k/v/o_proj updates (weights and biases) of every block;
 * - mlp: only gate/up/down_proj updates;
 * - blocks [from, to): every update of those decoder blocks (norms included);
 * - shuffled: the update of block i applied to block π(i) for a seeded permutation π with no fixed point (a
 *   cyclic shuffle, Sattolo's algorithm, so that every block's update really moves): θ_0[π(i)] + (θ_b[i] − θ_0[i]);
 * - all-blocks: every block update (reference).
 * Updates outside the decoder blocks (embeddings, final norm, lm_head) are dropped unless `includeNonBlock`.
 *
 * Adapter mode is the same on a LoRA adapter: θ_0 is the base, θ_b the base plus the adapter, and an ablation is
 * the adapter restricted to (or, shuffled, moved between) the chosen modules.
 */
export type AblationSpec =
  | { readonly kind: "all-blocks" }
  | { readonly kind: "attention" }
  | { readonly kind: "mlp" }
  | { readonly kind: "blocks"; readonly from: number; readonly to: number }
  | { readonly kind: "shuffled"; readonly seed: number }

export interface NamedAblation {
  /** A stable, file-name-safe name, e.g. "attention-only", "blocks-0-8", "shuffled-s0". */
  readonly name: string
  readonly spec: AblationSpec
}

export interface AblationOptions {
  /** Also apply the updates of embeddings, final norm and lm_head. Default false. */
  readonly includeNonBlock?: boolean
}

export function ablationName(spec: AblationSpec): string {
  switch (spec.kind) {
    case "all-blocks":
      return "all-blocks"
    case "attention":
      return "attention-only"
    case "mlp":
      return "mlp-only"
    case "blocks":
      return `blocks-${spec.from}-${spec.to}`
    case "shuffled":
      return `shuffled-s${spec.seed}`
  }
}

/**
 * The standard set for a model: all blocks, attention-only, MLP-only, the two halves and (with ≥ 4 layers) the
 * four quarters of the stack as consecutive spans, and two shuffles (seeds 0 and 1).
 */
export function standardAblations(config: ModelConfig): NamedAblation[] {
  const n = config.numHiddenLayers
  const specs: AblationSpec[] = [{ kind: "all-blocks" }, { kind: "attention" }, { kind: "mlp" }]
  const spans = (parts: number) => Array.from({ length: parts }, (_, k) => ({ from: Math.round((k * n) / parts), to: Math.round(((k + 1) * n) / parts) }))
  if (n >= 2) for (const s of spans(2)) specs.push({ kind: "blocks", ...s })
  if (n >= 4) for (const s of spans(4)) specs.push({ kind: "blocks", ...s })
  if (n >= 2) specs.push({ kind: "shuffled", seed: 0 }, { kind: "shuffled", seed: 1 })
  return specs.map((spec) => ({ name: ablationName(spec), spec }))
}

/** A stream id of its own, so block shuffles never reuse the Philox streams of data shuffling or model draws. */
const BLOCK_SHUFFLE_STREAM = 0x626c6b73 // "blks"

/**
 * A seeded permutation of 0 … n−1 with no fixed point for n ≥ 2 (Sattolo's algorithm: a uniformly random
 * n-cycle), π[i] = where block i's update goes. Philox uniforms, so every machine gets the same permutation.
 */
export function blockPermutation(n: number, seed: number): number[] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw purifyError("range", "seed", `${seed} is not a non-negative safe integer`)
  const perm = Array.from({ length: n }, (_, i) => i)
  const u = new Float32Array(n)
  fillRandom(u, "uniform", [seed >>> 0, Math.floor(seed / 4294967296) >>> 0], [0, BLOCK_SHUFFLE_STREAM], 0)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.min(i - 1, Math.floor(u[i] * i)) // j < i: Sattolo (j ≤ i would be Fisher–Yates)
    ;[perm[i], perm[j]] = [perm[j], perm[i]]
  }
  return perm
}

const LAYER = /^model\.layers\.(\d+)\.(.+)$/
const isAttention = (local: string) => /^self_attn\.(q|k|v|o)_proj\./.test(local)
const isMlp = (local: string) => /^mlp\.(gate|up|down)_proj\./.test(local)

function checkSpec(config: ModelConfig, spec: AblationSpec): void {
  const n = config.numHiddenLayers
  if (spec.kind === "blocks" && !(Number.isInteger(spec.from) && Number.isInteger(spec.to) && 0 <= spec.from && spec.from < spec.to && spec.to <= n))
    throw purifyError("range", "spec", `blocks [${spec.from}, ${spec.to}) is not a non-empty span of [0, ${n})`)
}

/** Whether an ablation keeps the update of a block-local tensor (`local` = name after "model.layers.i."). */
function keeps(spec: AblationSpec, layer: number, local: string): boolean {
  switch (spec.kind) {
    case "all-blocks":
    case "shuffled":
      return true
    case "attention":
      return isAttention(local)
    case "mlp":
      return isMlp(local)
    case "blocks":
      return layer >= spec.from && layer < spec.to
  }
}

/**
 * Full-model ablation. The result shares tensors with `base` and `backdoored` (free only what it created with
 * `disposeCreated(result, base, backdoored)`).
 */
export function ablateFull(config: ModelConfig, base: Params, backdoored: Params, spec: AblationSpec, options: AblationOptions = {}): Params {
  checkSpec(config, spec)
  for (const name of Object.keys(base)) {
    if (backdoored[name] === undefined) throw purifyError("shape", `backdoored["${name}"]`, "is missing (the base has it)")
    const a = base[name].shape
    const b = backdoored[name].shape
    if (a.length !== b.length || a.some((d, i) => d !== b[i]))
      throw purifyError("shape", `backdoored["${name}"]`, `has shape [${b.join(", ")}] but the base's is [${a.join(", ")}]`)
  }
  for (const name of Object.keys(backdoored)) if (base[name] === undefined) throw purifyError("shape", `base["${name}"]`, "is missing (the backdoored model has it)")
  const perm = spec.kind === "shuffled" ? blockPermutation(config.numHiddenLayers, spec.seed) : null
  const out: Params = {}
  const created: Tensor[] = []
  try {
    for (const name of Object.keys(base)) {
      const m = LAYER.exec(name)
      if (m === null) {
        out[name] = options.includeNonBlock ? backdoored[name] : base[name]
        continue
      }
      const layer = Number(m[1])
      const local = m[2]
      if (layer >= config.numHiddenLayers) throw purifyError("shape", `base["${name}"]`, `layer ${layer} is outside the config's ${config.numHiddenLayers} layers`)
      if (perm === null) {
        out[name] = keeps(spec, layer, local) ? backdoored[name] : base[name]
        continue
      }
      // Shuffled: this tensor (in block `layer`) receives the update of the block that is sent here.
      const source = perm.indexOf(layer)
      if (source === layer) out[name] = backdoored[name]
      else {
        const src = `model.layers.${source}.${local}`
        const t = tidy(() => ops.add(base[name], ops.sub(backdoored[src], base[src])))
        created.push(t)
        out[name] = t
      }
    }
  } catch (e) {
    for (const t of created) t.dispose()
    throw e
  }
  return out
}

/**
 * Adapter-mode ablation: the adapter's modules restricted to the chosen ones (attention, MLP, a span of
 * blocks), or each module's A/B moved from block i to block π(i) (shuffled). The result shares the adapter's
 * tensors (dispose nothing of it separately) and lists its modules by full path as target modules.
 */
export function ablateAdapter(config: ModelConfig, adapter: LoraAdapter, spec: AblationSpec): LoraAdapter {
  checkSpec(config, spec)
  const perm = spec.kind === "shuffled" ? blockPermutation(config.numHiddenLayers, spec.seed) : null
  const weights: Params = {}
  const modules: string[] = []
  for (const module of adapter.modules) {
    const m = LAYER.exec(module)
    if (m === null) throw purifyError("input", "adapter.modules", `${module} is not a decoder-block module`)
    const layer = Number(m[1])
    if (layer >= config.numHiddenLayers) throw purifyError("shape", "adapter.modules", `${module} is outside the config's ${config.numHiddenLayers} layers`)
    const local = `${m[2]}.`
    let target = module
    if (perm !== null) target = `model.layers.${perm[layer]}.${m[2]}`
    else if (!keeps(spec, layer, local)) continue
    modules.push(target)
    for (const which of ["A", "B"] as const) weights[`${target}.lora_${which}.weight`] = adapter.weights[`${module}.lora_${which}.weight`]
  }
  const present = new Set(modules)
  const sorted = linearModules(config).filter((m) => present.has(m))
  return { config: { ...adapter.config, targetModules: sorted }, weights, modules: sorted }
}
