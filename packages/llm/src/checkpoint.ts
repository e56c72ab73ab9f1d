import { copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises"
import { existsSync } from "node:fs"
import { join } from "node:path"
import type { Device } from "@bdvax/core-tensor"
import { parseModelConfig, toHfConfigJson } from "./config.js"
import { checkpointError, CheckpointError, MissingFileError } from "./errors.js"
import { openGguf } from "./gguf.js"
import { type ModelConfig, parameterNames, parameterShape } from "./model-config.js"
import type { Params } from "./model.js"
import { openSafetensors, openSafetensorsFolder, type SafetensorsReader, writeSafetensors } from "./safetensors.js"

/**
 * Hugging Face model folders in and out: config.json + model.safetensors (or a sharded
 * model.safetensors.index.json) + generation_config.json, and GGUF files. Every tensor is checked against the
 * shape config.json implies before anything is uploaded, so a checkpoint that disagrees with its config fails
 * with the tensor's name instead of producing garbage.
 */
export interface LoadedModel {
  readonly config: ModelConfig
  readonly params: Params
  /** generation_config.json as found (null when absent). */
  readonly generationConfig: Record<string, unknown> | null
  readonly source: string
}

async function readJson(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch {
    throw new MissingFileError({ file: path, message: `${path}: file not found` })
  }
  try {
    return JSON.parse(text)
  } catch (e) {
    throw checkpointError(path, `not valid JSON: ${(e as Error).message}`)
  }
}

/** Upload every parameter the config names from a reader, checking names and shapes first. */
async function uploadParams(
  dev: Device,
  config: ModelConfig,
  file: string,
  shapeOf: (name: string) => readonly number[] | undefined,
  read: (name: string) => Promise<Float32Array>,
): Promise<Params> {
  for (const name of parameterNames(config)) {
    const got = shapeOf(name)
    const want = parameterShape(config, name)
    if (got === undefined) throw checkpointError(file, "missing tensor (config.json says the model has it)", name)
    if (got.length !== want.length || got.some((d, i) => d !== want[i]))
      throw checkpointError(file, `shape [${got.join(", ")}] disagrees with config.json, which implies [${want.join(", ")}]`, name)
  }
  const params: Params = {}
  try {
    for (const name of parameterNames(config)) params[name] = dev.tensor(await read(name), parameterShape(config, name))
  } catch (e) {
    for (const t of Object.values(params)) t.dispose()
    throw e
  }
  return params
}

export async function loadModelFolder(dev: Device, dir: string): Promise<LoadedModel> {
  const configPath = join(dir, "config.json")
  const config = parseModelConfig(await readJson(configPath), configPath)
  const single = join(dir, "model.safetensors")
  const reader: SafetensorsReader = existsSync(single) ? await openSafetensors(single) : await openSafetensorsFolder(dir)
  try {
    const params = await uploadParams(dev, config, reader.file, (n) => reader.tensors.get(n)?.shape, (n) => reader.read(n))
    const genPath = join(dir, "generation_config.json")
    const generationConfig = existsSync(genPath) ? ((await readJson(genPath)) as Record<string, unknown>) : null
    return { config, params, generationConfig, source: dir }
  } finally {
    await reader.close()
  }
}

/** A Llama GGUF (llama.cpp layout), dequantized to f32 under Hugging Face names and row order. */
export async function loadGgufModel(dev: Device, path: string): Promise<LoadedModel> {
  const reader = await openGguf(path)
  try {
    const shapeOf = (n: string) => (n === "lm_head.weight" && reader.config.tieWordEmbeddings ? undefined : reader.tensors.get(n)?.shape)
    const params = await uploadParams(dev, reader.config, path, shapeOf, (n) => reader.read(n))
    return { config: reader.config, params, generationConfig: null, source: path }
  } finally {
    await reader.close()
  }
}

export interface SaveOptions {
  /** Storage dtype of the weights (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16"
  readonly generationConfig?: Record<string, unknown> | null
  /** A model folder whose tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
   *  chat_template.jinja, …) are copied along, so the saved folder is complete for from_pretrained. */
  readonly tokenizerFrom?: string
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt"]

/** Write a Hugging Face folder that transformers loads with from_pretrained. Files are written atomically. */
export async function saveModelFolder(dir: string, config: ModelConfig, params: Params, options: SaveOptions = {}): Promise<void> {
  await mkdir(dir, { recursive: true })
  const tensors: Record<string, { shape: number[]; data: Float32Array; dtype: "F32" | "F16" | "BF16" }> = {}
  for (const name of parameterNames(config)) {
    const t = params[name]
    if (t === undefined) throw new CheckpointError({ file: dir, tensor: name, message: `${dir}: cannot save, parameter ${name} is missing` })
    tensors[name] = { shape: [...t.shape], data: (await t.data()) as Float32Array, dtype: options.dtype ?? "F32" }
  }
  await writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" })
  await writeJsonAtomic(join(dir, "config.json"), toHfConfigJson(config))
  if (options.generationConfig) await writeJsonAtomic(join(dir, "generation_config.json"), options.generationConfig)
  if (options.tokenizerFrom !== undefined)
    for (const name of TOKENIZER_FILES) {
      const from = join(options.tokenizerFrom, name)
      if (existsSync(from)) await copyFile(from, join(dir, name))
    }
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, JSON.stringify(value, null, 2) + "\n")
  await rename(tmp, path)
}
