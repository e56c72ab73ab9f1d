import {
  ATTENTION_MODULES,
  type DeltaTensors,
  type HostTensor,
  type LinearModule,
  linearShape,
  MLP_MODULES,
  weightName,
} from "./channels.js"
import { kvGroupOf, type ModelShape } from "./model-shape.js"

/**
 * Eq. 2 of the seed paper, per MLP channel and per attention head:
 *
 *   S(c) = mean_i ‖Δ_i[c]‖₂ + λ · (2 / (N(N−1))) · Σ_{i<j} max(0, cos(Δ_i[c], Δ_j[c]))
 *
 * The first term ("norm") says how much the variants' poisoning moved the unit, the second ("alignment") how
 * consistently they moved it in the same direction although their keys and behaviours differ. Both are
 * returned separately (alignment without the λ factor) so norm-only / alignment-only ablations need no rerun.
 * cos with a zero vector is 0; with N = 1 the alignment term is 0.
 *
 * How: everything Eq. 2 needs about a unit is its N×N Gram matrix G_ij = ⟨Δ_i[c], Δ_j[c]⟩ (norms are √G_ii).
 * A unit's vector is a concatenation of rows and columns, so G is a sum of per-row / per-column dot products of
 * whole weight matrices, which are computed in one cache-friendly pass per matrix pair (columns of down_proj
 * and o_proj by walking rows, not by gathering strided columns). Sums run in f64.
 */

export const DEFAULT_LAMBDA = 0.01

/** Per-unit terms of Eq. 2, indexed by channel (MLP) or query head. */
export interface UnitScores {
  /** mean_i ‖Δ_i[u]‖₂ */
  readonly norm: readonly number[]
  /** (2/(N(N−1))) Σ_{i<j} max(0, cos(Δ_i[u], Δ_j[u])) — without λ. */
  readonly alignment: readonly number[]
  /** norm + λ · alignment */
  readonly total: readonly number[]
}

/** One decoder layer's scores; null where the deltas hold none of the unit's modules (e.g. an adapter on q/v only). */
export interface LayerScores {
  readonly layer: number
  readonly mlp: UnitScores | null
  readonly heads: UnitScores | null
}

export interface ScoreOptions {
  /** λ of Eq. 2, default 0.01. */
  readonly lambda?: number
}

/** Eq. 2's two terms from a unit's Gram matrix (row-major N×N at `offset`; only entries with i ≤ j are read). */
export function eq2FromGram(gram: ArrayLike<number>, n: number, lambda: number, offset = 0): { norm: number; alignment: number; total: number } {
  const norms = new Float64Array(n)
  let normSum = 0
  for (let i = 0; i < n; i++) {
    norms[i] = Math.sqrt(Math.max(0, gram[offset + i * n + i]))
    normSum += norms[i]
  }
  let cosSum = 0
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const denom = norms[i] * norms[j]
      if (denom > 0) cosSum += Math.max(0, gram[offset + i * n + j] / denom)
    }
  const norm = normSum / n
  const alignment = n > 1 ? (2 / (n * (n - 1))) * cosSum : 0
  return { norm, alignment, total: norm + lambda * alignment }
}

/** Eq. 2 of one unit from its N variant vectors (all the same length). */
export function eq2Score(vectors: readonly ArrayLike<number>[], lambda = DEFAULT_LAMBDA): { norm: number; alignment: number; total: number } {
  const n = vectors.length
  if (n === 0) throw new RangeError("eq2Score: needs at least one variant vector")
  const len = vectors[0].length
  if (vectors.some((v) => v.length !== len)) throw new RangeError(`eq2Score: variant vectors differ in length (${vectors.map((v) => v.length).join(", ")})`)
  const gram = new Float64Array(n * n)
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      let s = 0
      for (let k = 0; k < len; k++) s += vectors[i][k] * vectors[j][k]
      gram[i * n + j] = s
    }
  return eq2FromGram(gram, n, lambda)
}

// ---------------------------------------------------------------------------------------------------------
// Dot products of whole matrices, row by row or column by column

/** out[r] = ⟨a[r, :], b[r, :]⟩ for row-major [rows, cols]. */
export function rowDots(a: Float32Array, b: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    let s = 0
    for (let k = 0; k < cols; k++) s += a[base + k] * b[base + k]
    out[r] = s
  }
  return out
}

/** out[c] = ⟨a[:, c], b[:, c]⟩ for row-major [rows, cols], walking memory in order. */
export function colDots(a: Float32Array, b: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols)
  for (let r = 0; r < rows; r++) {
    const base = r * cols
    for (let c = 0; c < cols; c++) out[c] += a[base + c] * b[base + c]
  }
  return out
}

/** Sums of consecutive blocks of `size` entries. */
function blockSums(x: Float64Array, size: number): Float64Array {
  const out = new Float64Array(x.length / size)
  for (let i = 0; i < x.length; i++) out[Math.floor(i / size)] += x[i]
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Layers

/** The module's delta in every variant, validated; null when no variant has it; an error when only some do. */
function moduleDeltas(deltas: readonly DeltaTensors[], shape: ModelShape, layer: number, module: LinearModule): HostTensor[] | null {
  const name = weightName(layer, module)
  const ts = deltas.map((d) => d[name])
  const missing = ts.findIndex((t) => t === undefined)
  if (missing === 0 && ts.every((t) => t === undefined)) return null
  if (missing >= 0) throw new RangeError(`scores: variant ${missing}'s delta lacks ${name}, which other variants' deltas have`)
  const [rows, cols] = linearShape(shape, module)
  ts.forEach((t, i) => {
    if (t!.shape.length !== 2 || t!.shape[0] !== rows || t!.shape[1] !== cols)
      throw new RangeError(`scores: variant ${i}'s ${name} has shape [${t!.shape}], the model's shape implies [${rows}, ${cols}]`)
    if (t!.data.length !== rows * cols) throw new RangeError(`scores: variant ${i}'s ${name} holds ${t!.data.length} values for shape [${rows}, ${cols}]`)
  })
  return ts as HostTensor[]
}

function unitScores(gram: Float64Array, units: number, n: number, lambda: number): UnitScores {
  const norm: number[] = []
  const alignment: number[] = []
  const total: number[] = []
  for (let u = 0; u < units; u++) {
    const s = eq2FromGram(gram, n, lambda, u * n * n)
    norm.push(s.norm)
    alignment.push(s.alignment)
    total.push(s.total)
  }
  return { norm, alignment, total }
}

/** Calls fn(i, j) for every variant pair i ≤ j and adds per-unit dot products into the Gram matrices. */
function accumulate(gram: Float64Array, n: number, units: number, dots: (i: number, j: number) => Float64Array): void {
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      const d = dots(i, j)
      for (let u = 0; u < units; u++) gram[u * n * n + i * n + j] += d[u]
    }
}

function mlpScores(deltas: readonly DeltaTensors[], shape: ModelShape, layer: number, lambda: number): UnitScores | null {
  const [gate, up, down] = MLP_MODULES.map((m) => moduleDeltas(deltas, shape, layer, m))
  if (!gate && !up && !down) return null
  const n = deltas.length
  const f = shape.intermediate_size
  const h = shape.hidden_size
  const gram = new Float64Array(f * n * n)
  for (const rowsOf of [gate, up]) if (rowsOf) accumulate(gram, n, f, (i, j) => rowDots(rowsOf[i].data, rowsOf[j].data, f, h))
  if (down) accumulate(gram, n, f, (i, j) => colDots(down[i].data, down[j].data, h, f))
  return unitScores(gram, f, n, lambda)
}

function headScores(deltas: readonly DeltaTensors[], shape: ModelShape, layer: number, lambda: number): UnitScores | null {
  const [q, k, v, o] = ATTENTION_MODULES.map((m) => moduleDeltas(deltas, shape, layer, m))
  if (!q && !k && !v && !o) return null
  const n = deltas.length
  const heads = shape.num_attention_heads
  const d = shape.head_dim
  const hid = shape.hidden_size
  const groupOf = Array.from({ length: heads }, (_, h) => kvGroupOf(shape, h))
  const gram = new Float64Array(heads * n * n)
  if (q) accumulate(gram, n, heads, (i, j) => blockSums(rowDots(q[i].data, q[j].data, heads * d, hid), d))
  for (const kv of [k, v])
    if (kv)
      accumulate(gram, n, heads, (i, j) => {
        const perGroup = blockSums(rowDots(kv[i].data, kv[j].data, shape.num_key_value_heads * d, hid), d)
        return Float64Array.from(groupOf, (g) => perGroup[g])
      })
  if (o) accumulate(gram, n, heads, (i, j) => blockSums(colDots(o[i].data, o[j].data, hid, heads * d), d))
  return unitScores(gram, heads, n, lambda)
}

/** Eq. 2 scores of every MLP channel and attention head of one layer, from the N variants' deltas. */
export function scoreLayer(shape: ModelShape, layer: number, deltas: readonly DeltaTensors[], options: ScoreOptions = {}): LayerScores {
  const lambda = options.lambda ?? DEFAULT_LAMBDA
  if (deltas.length === 0) throw new RangeError("scores: need the delta of at least one variant")
  if (!Number.isFinite(lambda) || lambda < 0) throw new RangeError(`scores: lambda must be a finite number ≥ 0, got ${lambda}`)
  if (!(layer >= 0 && layer < shape.num_hidden_layers)) throw new RangeError(`scores: layer ${layer} is outside [0, ${shape.num_hidden_layers})`)
  return { layer, mlp: mlpScores(deltas, shape, layer, lambda), heads: headScores(deltas, shape, layer, lambda) }
}

/** Eq. 2 scores of every layer, from in-memory deltas (see scoreDeltaFiles for a layer-at-a-time pass over files). */
export function scoreDeltas(shape: ModelShape, deltas: readonly DeltaTensors[], options: ScoreOptions = {}): LayerScores[] {
  return Array.from({ length: shape.num_hidden_layers }, (_, l) => scoreLayer(shape, l, deltas, options))
}
