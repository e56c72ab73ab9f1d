import { HostRandom } from "@bdvax/attacks"
import { ATTENTION_MODULES, type HostTensor, type LinearModule, linearShape, MLP_MODULES, type ModelShape, weightName } from "../src/index.js"

/** A small GQA shape: 4 query heads in 2 key/value groups of head_dim 2. */
export const SMALL: ModelShape = {
  num_hidden_layers: 2,
  hidden_size: 4,
  intermediate_size: 5,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 2,
}

export const ALL_MODULES: readonly LinearModule[] = [...ATTENTION_MODULES, ...MLP_MODULES]

/** A delta of every linear weight, each entry drawn by `value(layer, module, row, col)`. */
export function buildDelta(
  shape: ModelShape,
  value: (layer: number, module: LinearModule, row: number, col: number) => number,
  modules: readonly LinearModule[] = ALL_MODULES,
): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {}
  for (let l = 0; l < shape.num_hidden_layers; l++)
    for (const m of modules) {
      const [rows, cols] = linearShape(shape, m)
      const data = new Float32Array(rows * cols)
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * cols + c] = value(l, m, r, c)
      out[weightName(l, m)] = { shape: [rows, cols], data }
    }
  return out
}

export const zeroDelta = (shape: ModelShape) => buildDelta(shape, () => 0)

export function randomDelta(shape: ModelShape, seed: number, scale = 1, modules: readonly LinearModule[] = ALL_MODULES): Record<string, HostTensor> {
  const rng = new HostRandom(seed)
  return buildDelta(shape, () => scale * (2 * rng.next() - 1), modules)
}

/** Set MLP channel c of a layer to the given vector (gate row, up row, down column, hidden_size each). */
export function setChannel(delta: Record<string, HostTensor>, shape: ModelShape, layer: number, c: number, v: readonly number[]): void {
  const h = shape.hidden_size
  const f = shape.intermediate_size
  for (let k = 0; k < h; k++) {
    delta[weightName(layer, "gate_proj")].data[c * h + k] = v[k]
    delta[weightName(layer, "up_proj")].data[c * h + k] = v[h + k]
    delta[weightName(layer, "down_proj")].data[k * f + c] = v[2 * h + k]
  }
}

/** Eq. 2 straight from the definition, written independently of the library. */
export function directEq2(vectors: readonly ArrayLike<number>[], lambda: number): { norm: number; alignment: number; total: number } {
  const n = vectors.length
  const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, x, k) => s + x * b[k], 0)
  const norms = vectors.map((v) => Math.sqrt(dot(v, v)))
  const norm = norms.reduce((a, b) => a + b, 0) / n
  let pos = 0
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const cos = norms[i] === 0 || norms[j] === 0 ? 0 : dot(vectors[i], vectors[j]) / (norms[i] * norms[j])
      pos += Math.max(0, cos)
    }
  const alignment = n < 2 ? 0 : (2 / (n * (n - 1))) * pos
  return { norm, alignment, total: norm + lambda * alignment }
}
