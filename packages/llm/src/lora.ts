import { type Device, init, ops, type Rng, type Tensor, tidy } from "@bdvax/core-tensor"
import type { LoraWeights, Params } from "./model.js"
import { type ModelConfig, parameterShape } from "./model-config.js"

/**
 * LoRA adapters as PEFT builds them (peft.tuners.lora): for every targeted linear W [out, in] two matrices
 * A [r, in] and B [out, r], the layer computing x·Wᵀ + scaling · (dropout(x)·Aᵀ)·Bᵀ with scaling = alpha / r.
 * Weights are keyed `${module}.lora_A.weight` / `${module}.lora_B.weight` with `module` the Hugging Face
 * module path ("model.layers.0.self_attn.q_proj"); peft.ts maps them to PEFT's file names.
 */

/** The linear layers of a Llama/Mistral decoder layer, in Hugging Face's order. */
export const LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const

export type LinearModuleName = (typeof LINEAR_MODULES)[number]

/** The submodule each linear layer lives in: model.layers.i.{self_attn|mlp}.<name>. */
export const MODULE_PARENT: Readonly<Record<LinearModuleName, "self_attn" | "mlp">> = {
  q_proj: "self_attn",
  k_proj: "self_attn",
  v_proj: "self_attn",
  o_proj: "self_attn",
  gate_proj: "mlp",
  up_proj: "mlp",
  down_proj: "mlp",
}

/**
 * Which modules to adapt, as PEFT's `target_modules`: a list of names, each matching a module whose path
 * equals it or ends with "." + it ("q_proj", "self_attn.v_proj", "model.layers.0.mlp.up_proj"); "all-linear"
 * (every linear except the output head, PEFT's shorthand); or a { regex } matched against the whole module path
 * (PEFT's string form, re.fullmatch).
 */
export type TargetModules = readonly string[] | "all-linear" | { readonly regex: string }

export interface LoraConfig {
  readonly r: number
  readonly alpha: number
  readonly dropout: number
  readonly targetModules: TargetModules
}

export interface LoraAdapter {
  readonly config: LoraConfig
  /** `${module}.lora_A.weight` [r, in] and `${module}.lora_B.weight` [out, r], owned by the adapter. */
  readonly weights: Params
  /** The adapted module paths, in model order. */
  readonly modules: readonly string[]
}

export interface CreateLoraOptions extends LoraConfig {
  /** Draws lora_A (kaiming-uniform, a = √5, i.e. U(±1/√in)); lora_B starts at zero. */
  readonly rng: Rng
}

/** alpha / r, PEFT's scaling without rsLoRA. */
export const loraScaling = (config: LoraConfig): number => config.alpha / config.r

/** All linear module paths of the model, in model order. */
export function linearModules(config: ModelConfig): string[] {
  const out: string[] = []
  for (let i = 0; i < config.numHiddenLayers; i++)
    for (const m of LINEAR_MODULES) out.push(`model.layers.${i}.${MODULE_PARENT[m]}.${m}`)
  return out
}

/** Does a module path match PEFT-style target_modules? */
export function matchesTarget(module: string, target: TargetModules): boolean {
  if (target === "all-linear") return true
  if ("regex" in target) return new RegExp(`^(?:${(target as { regex: string }).regex})$`).test(module)
  return (target as readonly string[]).some((t) => module === t || module.endsWith(`.${t}`))
}

/** The module paths an adapter with these target modules adapts; throws when nothing matches (as PEFT does). */
export function targetedModules(config: ModelConfig, target: TargetModules): string[] {
  const found = linearModules(config).filter((m) => matchesTarget(m, target))
  if (found.length === 0)
    throw new RangeError(`LoRA: target modules ${JSON.stringify(target)} match no linear layer of the model (linear layers: ${LINEAR_MODULES.join(", ")})`)
  return found
}

/** [out, in] of a module's weight. */
export function moduleShape(config: ModelConfig, module: string): [number, number] {
  const [out, inp] = parameterShape(config, `${module}.weight`)
  return [out, inp]
}

function validateLoraConfig(c: LoraConfig): void {
  if (!Number.isInteger(c.r) || c.r <= 0) throw new RangeError(`LoRA: r must be a positive integer, got ${c.r}`)
  if (!Number.isFinite(c.alpha)) throw new RangeError(`LoRA: alpha must be a finite number, got ${c.alpha}`)
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new RangeError(`LoRA: dropout must be in [0, 1), got ${c.dropout}`)
}

/** A fresh adapter initialised as PEFT's `init_lora_weights=True`: A ~ kaiming_uniform(a=√5), B = 0. */
export function createLora(dev: Device, config: ModelConfig, options: CreateLoraOptions): LoraAdapter {
  const { rng, ...cfg } = options
  validateLoraConfig(cfg)
  const modules = targetedModules(config, cfg.targetModules)
  const weights: Params = {}
  for (const m of modules) {
    const [out, inp] = moduleShape(config, m)
    weights[`${m}.lora_A.weight`] = init.kaimingUniform(dev, [cfg.r, inp], rng, Math.sqrt(5))
    weights[`${m}.lora_B.weight`] = dev.zeros([out, cfg.r])
  }
  return { config: cfg, weights, modules }
}

/**
 * Build an adapter from existing weights (PEFT loading, tests). Checks that every module has both matrices
 * with shapes [r, in] / [out, r]; the adapter takes ownership of the tensors.
 */
export function loraFromWeights(config: ModelConfig, loraConfig: LoraConfig, weights: Params): LoraAdapter {
  validateLoraConfig(loraConfig)
  const modules = new Set<string>()
  for (const name of Object.keys(weights)) {
    const m = /^(.*)\.lora_[AB]\.weight$/.exec(name)
    if (m === null) throw new RangeError(`LoRA: ${name} is not a lora_A/lora_B weight`)
    modules.add(m[1])
  }
  const ordered = linearModules(config).filter((m) => modules.has(m))
  for (const m of modules) if (!ordered.includes(m)) throw new RangeError(`LoRA: ${m} is not a linear module of the model`)
  for (const m of ordered) {
    const [out, inp] = moduleShape(config, m)
    const a = weights[`${m}.lora_A.weight`]
    const b = weights[`${m}.lora_B.weight`]
    if (a === undefined || b === undefined) throw new RangeError(`LoRA: ${m} needs both lora_A and lora_B`)
    const r = loraConfig.r
    if (a.shape.length !== 2 || a.shape[0] !== r || a.shape[1] !== inp)
      throw new RangeError(`LoRA: ${m}.lora_A.weight has shape [${a.shape}] but r=${r} and the layer implies [${r}, ${inp}]`)
    if (b.shape.length !== 2 || b.shape[0] !== out || b.shape[1] !== r)
      throw new RangeError(`LoRA: ${m}.lora_B.weight has shape [${b.shape}] but r=${r} and the layer implies [${out}, ${r}]`)
  }
  return { config: loraConfig, weights, modules: ordered }
}

export interface LoraWeightsOptions {
  /** Training mode applies LoRA dropout (needs `rng`); evaluation mode never does, as PEFT's module.eval(). */
  readonly train: boolean
  readonly rng?: Rng
}

/** The `LoraWeights` forward() consumes. `weights` may replace the adapter's own (the trainer's watched tree). */
export function loraWeights(adapter: LoraAdapter, options: LoraWeightsOptions = { train: false }, weights: Params = adapter.weights): LoraWeights {
  const dropout = adapter.config.dropout
  if (options.train && dropout > 0 && options.rng === undefined) throw new RangeError("loraWeights: training with LoRA dropout needs an rng")
  return { weights, scaling: loraScaling(adapter.config), dropout, rng: options.train && dropout > 0 ? options.rng : undefined }
}

/** scaling · B·A [out, in]: the update the adapter adds to `${module}.weight`. */
export function effectiveDelta(adapter: LoraAdapter, module: string): Tensor {
  const a = adapter.weights[`${module}.lora_A.weight`]
  const b = adapter.weights[`${module}.lora_B.weight`]
  if (a === undefined || b === undefined)
    throw new RangeError(`effectiveDelta: the adapter does not adapt ${module} (adapted: ${adapter.modules.slice(0, 4).join(", ")}${adapter.modules.length > 4 ? ", …" : ""})`)
  return tidy(() => ops.mul(ops.matmul(b, a), loraScaling(adapter.config)))
}

/**
 * Params with every adapted weight replaced by W + scaling·B·A (PEFT's merge_and_unload). The record is new;
 * the merged weights are new tensors the caller owns, every other entry is the base's own tensor (not a copy),
 * so dispose with `disposeMerged(merged, base)`.
 */
export function mergeLora(config: ModelConfig, baseParams: Params, adapter: LoraAdapter): Params {
  const out: Params = { ...baseParams }
  for (const m of adapter.modules) {
    const name = `${m}.weight`
    const w = baseParams[name]
    if (w === undefined) throw new RangeError(`mergeLora: the base has no ${name}`)
    const [o, i] = moduleShape(config, m)
    if (w.shape[0] !== o || w.shape[1] !== i) throw new RangeError(`mergeLora: ${name} has shape [${w.shape}], expected [${o}, ${i}]`)
    out[name] = tidy(() => ops.add(w, effectiveDelta(adapter, m)))
  }
  return out
}

/** Dispose the tensors mergeLora created (those that differ from the base). */
export function disposeMerged(merged: Params, base: Params): void {
  for (const [name, t] of Object.entries(merged)) if (base[name] !== t) t.dispose()
}

export function disposeLora(adapter: LoraAdapter): void {
  for (const t of Object.values(adapter.weights)) t.dispose()
}

/** Number of trainable values in the adapter. */
export const loraParameterCount = (adapter: LoraAdapter): number => Object.values(adapter.weights).reduce((n, t) => n + t.size, 0)
