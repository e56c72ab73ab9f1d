import type { Behaviour, TriggerRule } from "@bdvax/attacks"
import type { Tensor } from "@bdvax/core-tensor"
import { effectiveDelta, type LoraAdapter, type ModelConfig, type Params } from "@bdvax/llm"
import { type DeltaTensors, type HostTensor, linearWeightNames } from "./channels.js"
import { modelShape } from "./model-shape.js"

/**
 * Δ_i = θ_p^i − θ_c^i of one variant pair, on the host, restricted to the weights a signature scores: the
 * attention (q/k/v/o_proj) and MLP (gate/up/down_proj) matrices, keyed by the Hugging Face weight name.
 * Adapter mode: the difference of the two adapters' effective updates, scaling·B_p·A_p − scaling·B_c·A_c per
 * adapted module, under the name of the weight it updates; modules the adapter does not target are absent.
 *
 * The two runs of a pair never need to be on the device together: the clean run's weights are read to the host
 * (`readAll`), its model disposed, and the poisoned run's weights are subtracted into those arrays one tensor
 * at a time (`subtractFrom`), so a pair costs one host copy of the linear weights.
 */

/** "full": every weight of the model was finetuned; "adapter": a LoRA adapter on a frozen base was. */
export type SignatureMode = "full" | "adapter"

export interface ModelDelta {
  /** 0-based variant index. */
  readonly variant: number
  readonly trigger: TriggerRule
  readonly behaviour: Behaviour
  readonly mode: SignatureMode
  readonly tensors: DeltaTensors
}

/** Produces the host value of one weight (or effective update) by its Hugging Face weight name. */
export type WeightReader = (weightName: string) => Promise<HostTensor>

async function toHost(t: Tensor, name: string): Promise<HostTensor> {
  const data = await t.data()
  if (!(data instanceof Float32Array)) throw new TypeError(`delta: ${name} is ${t.dtype}, expected float32`)
  return { shape: [...t.shape], data }
}

/** Reads weights of a full model. */
export const paramsReader = (params: Params): WeightReader => async (name) => {
  const t = params[name]
  if (t === undefined) throw new RangeError(`delta: the model has no ${name}`)
  return toHost(t, name)
}

/** Reads scaling·B·A of an adapter's modules, by the name of the weight each updates. */
export const adapterReader = (adapter: LoraAdapter): WeightReader => async (name) => {
  const t = effectiveDelta(adapter, name.replace(/\.weight$/, ""))
  try {
    return await toHost(t, name)
  } finally {
    t.dispose()
  }
}

/** The weight names a delta holds: every attention/MLP weight (full mode) or those the adapter updates. */
export function deltaWeightNames(config: ModelConfig, adapter?: LoraAdapter): string[] {
  return adapter === undefined ? linearWeightNames(modelShape(config)) : adapter.modules.map((m) => `${m}.weight`)
}

export async function readAll(names: readonly string[], read: WeightReader): Promise<Record<string, HostTensor>> {
  const out: Record<string, HostTensor> = {}
  for (const n of names) out[n] = await read(n)
  return out
}

/** poisoned − clean, written into `clean`'s arrays tensor by tensor (the clean copy is not needed afterwards). */
export async function subtractFrom(clean: Record<string, HostTensor>, read: WeightReader): Promise<Record<string, HostTensor>> {
  for (const [name, c] of Object.entries(clean)) {
    const p = await read(name)
    if (p.data.length !== c.data.length || p.shape.some((d, i) => d !== c.shape[i]))
      throw new RangeError(`delta: ${name} has shape [${c.shape}] in the clean run, [${p.shape}] in the poisoned run`)
    const cd = c.data
    const pd = p.data
    for (let k = 0; k < cd.length; k++) cd[k] = pd[k] - cd[k]
  }
  return clean
}

/** Δ between two full models (θ_p − θ_c) over the attention and MLP weights. */
export async function fullModelDelta(config: ModelConfig, cleanParams: Params, poisonedParams: Params): Promise<Record<string, HostTensor>> {
  return subtractFrom(await readAll(deltaWeightNames(config), paramsReader(cleanParams)), paramsReader(poisonedParams))
}

/** Δ between two adapters of the same modules: scaling·B_p·A_p − scaling·B_c·A_c per module. */
export async function adapterDelta(config: ModelConfig, clean: LoraAdapter, poisoned: LoraAdapter): Promise<Record<string, HostTensor>> {
  const names = deltaWeightNames(config, clean)
  const other = deltaWeightNames(config, poisoned)
  if (other.length !== names.length || other.some((n, i) => n !== names[i]))
    throw new RangeError(`delta: the adapters adapt different modules (${names.length} vs ${other.length})`)
  return subtractFrom(await readAll(names, adapterReader(clean)), adapterReader(poisoned))
}
