import { type LoadedTensor, openSafetensors, type SafetensorsReader, type TensorToSave, writeSafetensors } from "@bdvax/llm"
import { ATTENTION_MODULES, type DeltaTensors, type HostTensor, linearShape, MLP_MODULES, weightName } from "./channels.js"
import type { ModelDelta, SignatureMode } from "./delta.js"
import { deltaFileError } from "./errors.js"
import type { ModelShape } from "./model-shape.js"
import { type LayerScores, type ScoreOptions, scoreLayer } from "./scores.js"
import { BehaviourSchema, decodeJson, TriggerRuleSchema } from "./schemas.js"

/**
 * Delta files: a variant pair's Δ as safetensors (f32, Hugging Face weight names), so a resumable pipeline can
 * cache each pair and score from disk one layer at a time. The safetensors metadata carries what made it:
 *
 *   format "bdvax.delta", version "1", variant "<index>", mode "full" | "adapter",
 *   trigger <TriggerRule as JSON>, behaviour <Behaviour as JSON>
 */
export const DELTA_FORMAT = "bdvax.delta"
export const DELTA_VERSION = "1"

const WEIGHT_NAME = new RegExp(`^model\\.layers\\.(\\d+)\\.(?:self_attn\\.(${ATTENTION_MODULES.join("|")})|mlp\\.(${MLP_MODULES.join("|")}))\\.weight$`)

export async function saveDelta(path: string, delta: ModelDelta): Promise<void> {
  const tensors: Record<string, TensorToSave> = {}
  for (const [name, t] of Object.entries(delta.tensors)) tensors[name] = { shape: t.shape, data: t.data }
  await writeSafetensors(path, tensors, {
    format: DELTA_FORMAT,
    version: DELTA_VERSION,
    variant: String(delta.variant),
    mode: delta.mode,
    trigger: JSON.stringify(delta.trigger),
    behaviour: JSON.stringify(delta.behaviour),
  })
}

/** The metadata of a delta file, validated: DeltaFileError naming the file and key otherwise. */
export function deltaMetadata(file: string, metadata: Readonly<Record<string, string>> | null): Omit<ModelDelta, "tensors"> {
  const m = metadata ?? {}
  const need = (key: string): string => {
    const v = m[key]
    if (v === undefined) throw deltaFileError(file, `__metadata__.${key}`, "is missing (not a file saveDelta wrote)")
    return v
  }
  if (need("format") !== DELTA_FORMAT) throw deltaFileError(file, "__metadata__.format", `expected "${DELTA_FORMAT}", got ${JSON.stringify(m.format)}`)
  if (need("version") !== DELTA_VERSION) throw deltaFileError(file, "__metadata__.version", `unsupported version ${JSON.stringify(m.version)} (this build reads ${DELTA_VERSION})`)
  const variantText = need("variant")
  const variant = Number(variantText)
  if (!/^\d+$/.test(variantText) || !Number.isSafeInteger(variant)) throw deltaFileError(file, "__metadata__.variant", `expected a non-negative integer, got ${JSON.stringify(variantText)}`)
  const mode = need("mode")
  if (mode !== "full" && mode !== "adapter") throw deltaFileError(file, "__metadata__.mode", `expected "full" or "adapter", got ${JSON.stringify(mode)}`)
  const json = (key: string): unknown => {
    try {
      return JSON.parse(need(key))
    } catch (e) {
      throw deltaFileError(file, `__metadata__.${key}`, `is not JSON (${(e as Error).message})`)
    }
  }
  const trigger = decodeJson(TriggerRuleSchema, json("trigger"))
  if (!trigger.ok) throw deltaFileError(file, `__metadata__.trigger${trigger.field === "(root)" ? "" : `.${trigger.field}`}`, trigger.message)
  const behaviour = decodeJson(BehaviourSchema, json("behaviour"))
  if (!behaviour.ok) throw deltaFileError(file, `__metadata__.behaviour${behaviour.field === "(root)" ? "" : `.${behaviour.field}`}`, behaviour.message)
  return { variant, mode: mode as SignatureMode, trigger: trigger.value, behaviour: behaviour.value }
}

function checkTensor(file: string, name: string, t: { shape: readonly number[] }): void {
  if (!WEIGHT_NAME.test(name)) throw deltaFileError(file, name, "is not an attention or MLP weight of a decoder layer")
  if (t.shape.length !== 2) throw deltaFileError(file, name, `has shape [${t.shape}], expected a matrix`)
}

/**
 * Reads a delta file. A malformed safetensors file fails with llm's CheckpointError, wrong metadata or tensor
 * names with a DeltaFileError, each naming the file and the field.
 */
export async function loadDelta(path: string): Promise<ModelDelta> {
  const reader = await openSafetensors(path)
  try {
    const meta = deltaMetadata(path, reader.metadata)
    const tensors: Record<string, HostTensor> = {}
    for (const [name, info] of reader.tensors) {
      checkTensor(path, name, info)
      const loaded: LoadedTensor = await reader.load(name)
      tensors[name] = { shape: loaded.shape, data: loaded.data }
    }
    return { ...meta, tensors }
  } finally {
    await reader.close()
  }
}

/**
 * Eq. 2 scores from delta files, one layer at a time: only that layer's tensors of the N variants are in memory
 * at once (for a 7B model about 0.7 GB per variant instead of 26 GB). Files must share mode and tensor names.
 */
export async function scoreDeltaFiles(shape: ModelShape, paths: readonly string[], options: ScoreOptions = {}): Promise<LayerScores[]> {
  if (paths.length === 0) throw new RangeError("scoreDeltaFiles: no delta files")
  const readers: SafetensorsReader[] = []
  try {
    for (const p of paths) readers.push(await openSafetensors(p))
    const metas = readers.map((r, i) => deltaMetadata(paths[i], r.metadata))
    metas.forEach((m, i) => {
      if (m.mode !== metas[0].mode) throw deltaFileError(paths[i], "__metadata__.mode", `is "${m.mode}" but ${paths[0]} is "${metas[0].mode}"`)
    })
    readers.forEach((r, i) => {
      for (const [name, info] of r.tensors) checkTensor(paths[i], name, info)
    })
    const out: LayerScores[] = []
    for (let layer = 0; layer < shape.num_hidden_layers; layer++) {
      const layerDeltas: DeltaTensors[] = []
      for (const r of readers) {
        const tensors: Record<string, HostTensor> = {}
        for (const m of [...ATTENTION_MODULES, ...MLP_MODULES]) {
          const name = weightName(layer, m)
          const info = r.tensors.get(name)
          if (info === undefined) continue
          const [rows, cols] = linearShape(shape, m)
          if (info.shape[0] !== rows || info.shape[1] !== cols)
            throw deltaFileError(r.file, name, `has shape [${info.shape}], the model's shape implies [${rows}, ${cols}]`)
          tensors[name] = { shape: [rows, cols], data: await r.read(name) }
        }
        layerDeltas.push(tensors)
      }
      out.push(scoreLayer(shape, layer, layerDeltas, options))
    }
    return out
  } finally {
    await Promise.all(readers.map((r) => r.close()))
  }
}
