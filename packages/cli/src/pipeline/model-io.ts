import { readFile, stat } from "node:fs/promises"
import { join } from "node:path"
import { type Device, TensorDevice } from "@bdvax/core-tensor"
import {
  disposeLora,
  loadGgufModel,
  loadModelFolder,
  loadPeftAdapter,
  type LoraAdapter,
  type ModelConfig,
  openGguf,
  type Params,
  parseModelConfig,
  readGgufMetadata,
  Tokenizer,
  tokenizerFromGguf,
} from "@bdvax/llm"
import { type DefenseResult, savePurified } from "@bdvax/purify"
import { Effect } from "effect"
import { attempt } from "../context.js"
import type { StageError } from "../errors.js"
import type { StageInput } from "../store/store.js"
import type { Located } from "./located.js"

/**
 * Models as the stages see them. A model is a Hugging Face folder or a GGUF file, optionally with a PEFT LoRA
 * adapter on top (then the adapter is the suspect and the folder its frozen base). Its tokenizer comes from the
 * folder, or from the GGUF metadata — and a model saved from a GGUF source (a planted or purified HF folder) keeps
 * pointing at that GGUF file for its tokenizer, since a GGUF tokenizer cannot be written as tokenizer.json.
 */
export interface ModelLocation {
  readonly model: Located
  readonly adapter: Located | null
  /** Where the tokenizer is read from when not from `model` (a .gguf file or another folder). */
  readonly tokenizer?: Located | null
}

/** The model folder of a full-model artifact (toy-base, a full-mode plant, a purified model). */
export const MODEL_DIR = "model"
/** The PEFT adapter folder of an adapter artifact. */
export const ADAPTER_DIR = "adapter"

export const isGguf = (path: string): boolean => /\.gguf$/i.test(path)

/** The hashed inputs a model location contributes to a stage: model, adapter and tokenizer source. */
export function modelInputs(m: ModelLocation): Record<string, StageInput> {
  const inputs: Record<string, StageInput> = { model: m.model.input }
  if (m.adapter) inputs.adapter = m.adapter.input
  if (m.tokenizer) inputs.tokenizer = m.tokenizer.input
  return inputs
}

/** A tokenizer from a model folder (tokenizer.json) or a GGUF file (its metadata). */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  if (isGguf(path)) return tokenizerFromGguf((await readGgufMetadata(path)).metadata, path)
  return Tokenizer.fromFolder(path)
}

/** The folder or GGUF file the tokenizer of `m` is read from. */
export const tokenizerPath = (m: ModelLocation): string => m.tokenizer?.path ?? m.model.path

/** A loaded model: weights on the device, tokenizer, and the adapter when there is one. */
export interface LoadedModel {
  readonly config: ModelConfig
  /** Full weights (no adapter), or the frozen base (with one). */
  readonly params: Params
  readonly adapter: LoraAdapter | null
  readonly tokenizer: Tokenizer
  readonly generationConfig: Record<string, unknown> | null
}

export async function loadModelAt(dev: Device, m: ModelLocation): Promise<LoadedModel> {
  const tokenizer = await loadTokenizer(tokenizerPath(m))
  const loaded = isGguf(m.model.path) ? await loadGgufModel(dev, m.model.path) : await loadModelFolder(dev, m.model.path)
  if (m.adapter === null) return { config: loaded.config, params: loaded.params, adapter: null, tokenizer, generationConfig: loaded.generationConfig }
  try {
    const { adapter } = await loadPeftAdapter(dev, m.adapter.path, loaded.config)
    return { config: loaded.config, params: loaded.params, adapter, tokenizer, generationConfig: loaded.generationConfig }
  } catch (e) {
    for (const t of Object.values(loaded.params)) t.dispose()
    throw e
  }
}

export function disposeModel(m: LoadedModel): void {
  for (const t of Object.values(m.params)) t.dispose()
  if (m.adapter !== null) disposeLora(m.adapter)
}

/** Load the model for the duration of `use`; its tensors are freed however `use` ends. */
export const withModel = <A, E, R>(label: string, m: ModelLocation, use: (model: LoadedModel) => Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const dev = yield* TensorDevice
    return yield* Effect.acquireUseRelease(
      attempt(label, () => loadModelAt(dev, m)),
      use,
      (model) => Effect.sync(() => disposeModel(model)),
    )
  })

/** The config of a model without loading its weights (config.json, or the GGUF header). */
export const modelConfigAt = (label: string, m: ModelLocation): Effect.Effect<ModelConfig, StageError> =>
  attempt(label, async () => {
    if (isGguf(m.model.path)) {
      const reader = await openGguf(m.model.path)
      try {
        return reader.config
      } finally {
        await reader.close()
      }
    }
    const path = join(m.model.path, "config.json")
    return parseModelConfig(JSON.parse(await readFile(path, "utf8")), path)
  })

/** Is this path a folder (a model folder) rather than a file (a GGUF)? */
export const isFolder = (path: string): Promise<boolean> => stat(path).then((s) => s.isDirectory(), () => false)

/**
 * Save a defense's result next to its input's format — a Hugging Face folder for a full model (with the input's
 * tokenizer files copied when it has a folder) or a PEFT adapter for an adapter — and say where the model now is.
 * `source` is where the input came from; a result of a GGUF model keeps the GGUF as its tokenizer source.
 */
export async function saveDefended(dir: string, model: LoadedModel, source: ModelLocation, result: DefenseResult): Promise<string> {
  const tokenizerFrom = tokenizerPath(source)
  if (result.mode === "full") {
    await savePurified(join(dir, MODEL_DIR), model.config, result, {
      model: { tokenizerFrom: isGguf(tokenizerFrom) ? undefined : tokenizerFrom, generationConfig: model.generationConfig },
    })
    return MODEL_DIR
  }
  await savePurified(join(dir, ADAPTER_DIR), model.config, result, { adapter: { baseModelNameOrPath: source.model.path } })
  return ADAPTER_DIR
}

/**
 * Where a defended (or planted) artifact's model is: its own folder (full) or the input's base plus the artifact's
 * adapter. The tokenizer source carries over from the input when that was not a folder with tokenizer files.
 */
export function producedModel(artifact: StageInput, produced: string, source: ModelLocation): ModelLocation {
  const tokenizer = isGguf(tokenizerPath(source)) ? (source.tokenizer ?? source.model) : null
  const at = { input: artifact, path: join(artifact.path, produced) }
  return produced === MODEL_DIR ? { model: at, adapter: null, tokenizer } : { model: source.model, adapter: at, tokenizer: source.tokenizer ?? null }
}
