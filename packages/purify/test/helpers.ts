import { Device, type Tensor } from "@bdvax/core-tensor"
import type { Params, SftExample } from "@bdvax/llm"

/** The llm tests' tiny Llama (GQA: 4 query heads in 2 KV groups, head_dim 8); override what a test needs. */
export { tinyConfig } from "../../llm/test/tiny-config.js"

let cpu: Promise<Device> | null = null
export const cpuDevice = (): Promise<Device> => (cpu ??= Device.create("cpu"))

export type HostParams = Record<string, { shape: readonly number[]; data: Float32Array }>

export async function snapshot(params: Params): Promise<HostParams> {
  const out: HostParams = {}
  for (const [n, t] of Object.entries(params)) out[n] = { shape: [...t.shape], data: (await t.data()) as Float32Array }
  return out
}

export const hostOf = async (t: Tensor): Promise<Float32Array> => (await t.data()) as Float32Array

/** Bitwise equality of two f32 arrays (distinguishes −0 from 0 and compares NaN payloads). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
  return true
}

export function disposeAll(...records: Params[]): void {
  const seen = new Set<Tensor>()
  for (const r of records) for (const t of Object.values(r)) if (!seen.has(t)) (seen.add(t), t.dispose())
}

/** A few (prompt, response) token sequences of varied lengths (so batches are padded). */
export const examples: SftExample[] = [
  { promptIds: [1, 5, 9], responseIds: [13, 7, 2] },
  { promptIds: [1, 22, 31, 8, 4], responseIds: [17, 2] },
  { promptIds: [1, 6], responseIds: [11, 12, 13, 14, 2] },
  { promptIds: [1, 30, 29, 28], responseIds: [3, 2] },
  { promptIds: [1, 10, 11], responseIds: [25, 26, 27, 2] },
  { promptIds: [1, 33, 34, 35, 36, 37], responseIds: [19, 2] },
]
