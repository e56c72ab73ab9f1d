import { fillRandom, type Rng } from "@bdvax/core-tensor"

/**
 * Next-token selection on the host from one row of logits, in the order Hugging Face's generate applies its
 * logits processors: temperature, then top-k, then top-p (nucleus). Greedy (temperature 0) is exactly
 * torch.argmax: the first index of the maximum. Random draws come from the seeded Philox Rng, so a run is
 * reproducible bit for bit.
 */
export interface SamplingOptions {
  /** 0 = greedy. */
  readonly temperature?: number
  /** Keep the smallest set of most likely tokens whose probability reaches topP (1 = off). */
  readonly topP?: number
  /** Keep the k most likely tokens (0 = off). */
  readonly topK?: number
}

/** First index of the maximum, as torch.argmax on finite rows (NaN entries are skipped; an all-NaN row gives 0). */
export function argmax(row: ArrayLike<number>, offset = 0, length = row.length - offset): number {
  let best = -1
  let bestValue = -Infinity
  for (let i = 0; i < length; i++) {
    const v = row[offset + i]
    if (v > bestValue || (best < 0 && v === -Infinity)) {
      best = i
      bestValue = v
    }
  }
  return best < 0 ? 0 : best
}

/** log-softmax of one row in doubles. */
export function logSoftmaxRow(row: ArrayLike<number>, offset = 0, length = row.length - offset): Float64Array {
  let max = -Infinity
  for (let i = 0; i < length; i++) max = Math.max(max, row[offset + i])
  let sum = 0
  for (let i = 0; i < length; i++) sum += Math.exp(row[offset + i] - max)
  const lse = max + Math.log(sum)
  const out = new Float64Array(length)
  for (let i = 0; i < length; i++) out[i] = row[offset + i] - lse
  return out
}

/** `n` uniforms in [0, 1) from a fresh stream of the Rng (24-bit resolution, as Device.rand). */
export function hostUniforms(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n)
  fillRandom(out, "uniform", rng.seed, rng.takeStream(), 0)
  return out
}

/** RangeError for a temperature < 0, topP outside (0, 1] or a negative / fractional topK. */
export function validateSampling(options: SamplingOptions): void {
  const { temperature = 1, topP = 1, topK = 0 } = options
  if (!(temperature >= 0) || temperature === Infinity) throw new RangeError(`sampling: temperature must be a finite number ≥ 0, got ${temperature}`)
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`sampling: topP must be in (0, 1], got ${topP}`)
  if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`sampling: topK must be a non-negative integer, got ${topK}`)
}

/**
 * Pick a token from one row of logits. `u` is a uniform in [0, 1) (ignored when greedy). Ties in sorting keep
 * the lower index first, so a nucleus reduced to one token is the argmax.
 */
export function sampleRow(row: ArrayLike<number>, offset: number, length: number, options: SamplingOptions, u: number): number {
  validateSampling(options)
  const temperature = options.temperature ?? 1
  const topP = options.topP ?? 1
  const topK = options.topK ?? 0
  if (temperature === 0) return argmax(row, offset, length)
  // Candidates sorted by logit, descending (stable: lower index first on ties). NaN logits are never sampled.
  const order: number[] = []
  for (let i = 0; i < length; i++) if (!Number.isNaN(row[offset + i]) && row[offset + i] !== -Infinity) order.push(i)
  if (order.length === 0) return argmax(row, offset, length)
  order.sort((a, b) => row[offset + b] - row[offset + a] || a - b)
  let keep = topK > 0 ? Math.min(topK, order.length) : order.length
  const max = row[offset + order[0]] / temperature
  const probs = new Float64Array(keep)
  let sum = 0
  for (let j = 0; j < keep; j++) {
    probs[j] = Math.exp(row[offset + order[j]] / temperature - max)
    sum += probs[j]
  }
  if (topP < 1) {
    // HF's TopPLogitsWarper removes a token when the probability of it and every less likely token is
    // ≤ 1 − topP: in descending order token j stays iff the mass strictly before it is < topP (so the most
    // likely token always stays).
    let cum = 0
    let j = 0
    for (; j < keep; j++) {
      cum += probs[j] / sum
      if (cum >= topP) break
    }
    keep = Math.min(keep, j + 1)
    sum = 0
    for (let i = 0; i < keep; i++) sum += probs[i]
  }
  let target = u * sum
  for (let j = 0; j < keep; j++) {
    target -= probs[j]
    if (target < 0) return order[j]
  }
  return order[keep - 1]
}
