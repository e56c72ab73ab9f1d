import type { Device, Tensor } from "@bdvax/core-tensor"
import { access, mkdir, readFile, rename, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { checkpointError, configError, MissingFileError } from "./errors.js"
import { type LoraAdapter, type LoraConfig, loraFromWeights, moduleShape, type TargetModules, targetedModules } from "./lora.js"
import type { Params } from "./model.js"
import type { ModelConfig } from "./model-config.js"
import { readSafetensors, type TensorToSave, writeSafetensors } from "./safetensors.js"

/**
 * PEFT LoRA adapter folders, as `PeftModel.save_pretrained` writes them and `PeftModel.from_pretrained` reads
 * them:
 *
 *   adapter_config.json        LoraConfig.to_dict(): peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, …
 *   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in] / .lora_B.weight [out, r]
 *
 * Loading validates the config field by field (ConfigError naming the file and field) and refuses the LoRA
 * variants this implementation does not compute (DoRA, rsLoRA, biases, per-module rank/alpha patterns, …)
 * rather than silently loading something that would give different outputs. The weights file is checked against
 * the config and the model: every targeted module present with both matrices of the right shape, nothing else.
 */
export const ADAPTER_CONFIG_FILE = "adapter_config.json"
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"

/** PEFT's prefix on every adapter tensor of a *ForCausalLM. */
const PREFIX = "base_model.model."

/** PEFT's default target modules for llama / mistral when target_modules is null. */
const DEFAULT_TARGETS = ["q_proj", "v_proj"]

export const peftTensorName = (module: string, which: "A" | "B"): string => `${PREFIX}${module}.lora_${which}.weight`

export interface SavePeftOptions {
  /** Written as base_model_name_or_path (PEFT uses it to find the base model). */
  readonly baseModelNameOrPath?: string | null
  /** Storage dtype of the weights (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16"
}

/** The adapter_config.json PEFT would write for this adapter. */
export function peftConfigJson(config: ModelConfig, adapter: LoraAdapter, baseModelNameOrPath: string | null = null): Record<string, unknown> {
  const t = adapter.config.targetModules
  let targets: string[] | string
  if (t === "all-linear") targets = [...new Set(targetedModules(config, t).map((m) => m.slice(m.lastIndexOf(".") + 1)))].sort()
  else if ("regex" in t) targets = (t as { regex: string }).regex
  else targets = [...new Set(t as readonly string[])]
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelNameOrPath,
    bias: "none",
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: adapter.config.alpha,
    lora_bias: false,
    lora_dropout: adapter.config.dropout,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: adapter.config.r,
    rank_pattern: {},
    revision: null,
    target_modules: targets,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: false,
  }
}

/** Write an adapter folder (created if needed). Files are written to a temporary name and renamed into place. */
export async function savePeftAdapter(dir: string, config: ModelConfig, adapter: LoraAdapter, options: SavePeftOptions = {}): Promise<void> {
  await mkdir(dir, { recursive: true })
  const tensors: Record<string, TensorToSave> = {}
  for (const m of adapter.modules)
    for (const which of ["A", "B"] as const) {
      const t = adapter.weights[`${m}.lora_${which}.weight`]
      tensors[peftTensorName(m, which)] = { shape: [...t.shape], data: (await t.data()) as Float32Array, dtype: options.dtype ?? "F32" }
    }
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), tensors, { format: "pt" })
  const json = `${JSON.stringify(peftConfigJson(config, adapter, options.baseModelNameOrPath ?? null), null, 2)}\n`
  const cfgPath = join(dir, ADAPTER_CONFIG_FILE)
  const temp = `${cfgPath}.tmp-${process.pid}`
  await writeFile(temp, json)
  await rename(temp, cfgPath)
}

export interface PeftAdapterConfig extends LoraConfig {
  readonly baseModelNameOrPath: string | null
  /** The parsed JSON as found (for fields this module does not interpret). */
  readonly raw: Readonly<Record<string, unknown>>
}

const isEmpty = (v: unknown): boolean =>
  v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && Object.keys(v as object).length === 0)

/** Validate an adapter_config.json object. `file` names it in errors. */
export function parsePeftConfig(json: unknown, file: string): PeftAdapterConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw configError(file, "(root)", "must be a JSON object")
  const o = json as Record<string, unknown>
  const peftType = o.peft_type
  if (peftType !== "LORA") throw configError(file, "peft_type", `only LORA adapters are supported, got ${JSON.stringify(peftType)}`)
  const taskType = o.task_type
  if (taskType !== undefined && taskType !== null && taskType !== "CAUSAL_LM")
    throw configError(file, "task_type", `only CAUSAL_LM adapters are supported, got ${JSON.stringify(taskType)}`)
  const r = o.r
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0) throw configError(file, "r", `must be a positive integer, got ${JSON.stringify(r)}`)
  const alpha = o.lora_alpha ?? 8
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) throw configError(file, "lora_alpha", `must be a number, got ${JSON.stringify(o.lora_alpha)}`)
  const dropout = o.lora_dropout ?? 0
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) throw configError(file, "lora_dropout", `must be a number in [0, 1), got ${JSON.stringify(o.lora_dropout)}`)

  let targetModules: TargetModules
  const tm = o.target_modules
  if (tm === undefined || tm === null) targetModules = DEFAULT_TARGETS
  else if (tm === "all-linear") targetModules = "all-linear"
  else if (typeof tm === "string") {
    try {
      new RegExp(tm)
    } catch {
      throw configError(file, "target_modules", `is not a valid regular expression: ${JSON.stringify(tm)}`)
    }
    targetModules = { regex: tm }
  } else if (Array.isArray(tm) && tm.length > 0 && tm.every((x) => typeof x === "string" && x.length > 0)) targetModules = tm as string[]
  else throw configError(file, "target_modules", `must be a non-empty list of module names or a string, got ${JSON.stringify(tm)}`)

  const unsupported = (field: string, what: string) => configError(file, field, `${what} is not supported by this implementation (found ${JSON.stringify(o[field])})`)
  if (o.bias !== undefined && o.bias !== "none") throw unsupported("bias", 'a LoRA bias other than "none"')
  if (o.use_dora === true) throw unsupported("use_dora", "DoRA (weight-decomposed LoRA)")
  if (o.use_rslora === true) throw unsupported("use_rslora", "rank-stabilised LoRA (scaling alpha/√r)")
  if (o.fan_in_fan_out === true) throw unsupported("fan_in_fan_out", "fan_in_fan_out (Conv1D weights)")
  if (o.lora_bias === true) throw unsupported("lora_bias", "a bias on lora_B")
  if (o.use_qalora === true) throw unsupported("use_qalora", "QA-LoRA")
  for (const [field, what] of [
    ["modules_to_save", "modules_to_save (fully trained extra modules)"],
    ["rank_pattern", "per-module ranks (rank_pattern)"],
    ["alpha_pattern", "per-module alphas (alpha_pattern)"],
    ["layers_to_transform", "layers_to_transform"],
    ["layer_replication", "layer_replication"],
    ["exclude_modules", "exclude_modules"],
    ["trainable_token_indices", "trainable_token_indices"],
    ["target_parameters", "target_parameters"],
    ["alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"],
    ["arrow_config", "Arrow routing (arrow_config)"],
    ["kasa_config", "KaSA (kasa_config)"],
    ["monteclora_config", "MonteCLoRA (monteclora_config)"],
    ["velora_config", "VeLoRA (velora_config)"],
    ["use_bdlora", "block-diagonal LoRA (use_bdlora)"],
  ] as const)
    if (!isEmpty(o[field])) throw unsupported(field, what)
  // Initialisations that rewrite the base weights (PiSSA, OLoRA, CorDA, LoftQ) need that modified base unless
  // the adapter was converted to plain LoRA when saved (PEFT then writes init_lora_weights: true).
  const initMethod = o.init_lora_weights
  if (typeof initMethod === "string" && !["gaussian", "eva"].includes(initMethod))
    throw configError(
      file,
      "init_lora_weights",
      `${JSON.stringify(initMethod)} initialisation changes the base model's weights; save the adapter converted to plain LoRA (PEFT's save_pretrained(path_initial_model_for_weight_conversion=...)) to use it here`,
    )
  const base = o.base_model_name_or_path
  if (base !== undefined && base !== null && typeof base !== "string")
    throw configError(file, "base_model_name_or_path", `must be a string or null, got ${JSON.stringify(base)}`)
  return { r, alpha, dropout, targetModules, baseModelNameOrPath: (base as string | null | undefined) ?? null, raw: o }
}

export interface LoadedPeftAdapter {
  readonly adapter: LoraAdapter
  readonly config: PeftAdapterConfig
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8")
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new MissingFileError({ file: path, message: `${path}: not found (a PEFT adapter folder needs ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE})` })
    throw e
  }
}

/** Load a PEFT LoRA adapter folder for a model with this config; tensors are created on `dev`. */
export async function loadPeftAdapter(dev: Device, dir: string, config: ModelConfig): Promise<LoadedPeftAdapter> {
  const cfgPath = join(dir, ADAPTER_CONFIG_FILE)
  const text = await readText(cfgPath)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw configError(cfgPath, "(root)", `is not valid JSON: ${(e as Error).message}`)
  }
  const peftConfig = parsePeftConfig(json, cfgPath)
  let modules: string[]
  try {
    modules = targetedModules(config, peftConfig.targetModules)
  } catch (e) {
    throw configError(cfgPath, "target_modules", (e as Error).message)
  }

  const wPath = join(dir, ADAPTER_WEIGHTS_FILE)
  try {
    await access(wPath)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT")
      throw new MissingFileError({ file: wPath, message: `${wPath}: not found (only safetensors adapters are supported, not adapter_model.bin)` })
    throw e
  }
  const loaded = await readSafetensors(wPath)
  const expected = new Map<string, { module: string; which: "A" | "B"; shape: number[] }>()
  for (const m of modules) {
    const [out, inp] = moduleShape(config, m)
    expected.set(peftTensorName(m, "A"), { module: m, which: "A", shape: [peftConfig.r, inp] })
    expected.set(peftTensorName(m, "B"), { module: m, which: "B", shape: [out, peftConfig.r] })
  }
  for (const name of loaded.keys()) {
    if (expected.has(name)) continue
    if (/lora_magnitude_vector/.test(name)) throw checkpointError(wPath, "DoRA magnitude vectors are not supported", name)
    if (/lora_embedding_[AB]/.test(name)) throw checkpointError(wPath, "LoRA on embeddings is not supported", name)
    throw checkpointError(wPath, `unexpected tensor: target_modules ${JSON.stringify(peftConfig.raw.target_modules ?? DEFAULT_TARGETS)} of ${ADAPTER_CONFIG_FILE} do not adapt it`, name)
  }
  for (const [name, want] of expected) {
    const t = loaded.get(name)
    if (t === undefined) throw checkpointError(wPath, `missing tensor for targeted module ${want.module}`, name)
    if (t.shape.length !== 2 || t.shape[0] !== want.shape[0] || t.shape[1] !== want.shape[1])
      throw checkpointError(wPath, `shape [${t.shape}] but r=${peftConfig.r} and the model imply [${want.shape}]`, name)
    for (let i = 0; i < t.data.length; i++)
      if (!Number.isFinite(t.data[i])) throw checkpointError(wPath, `non-finite value at element ${i}`, name)
  }
  const weights: Params = {}
  try {
    for (const [name, want] of expected) weights[`${want.module}.lora_${want.which}.weight`] = dev.tensor(loaded.get(name)!.data, want.shape)
    const adapter = loraFromWeights(config, { r: peftConfig.r, alpha: peftConfig.alpha, dropout: peftConfig.dropout, targetModules: peftConfig.targetModules }, weights)
    return { adapter, config: peftConfig }
  } catch (e) {
    for (const t of Object.values(weights) as Tensor[]) t.dispose()
    throw e
  }
}
