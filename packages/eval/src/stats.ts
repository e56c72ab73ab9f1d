/** lm-evaluation-harness's aggregation statistics (lm_eval/api/metrics.py). */

export const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length

/** Sample standard deviation (n - 1 in the denominator), lm-eval's `sample_stddev`. */
export function sampleStddev(xs: readonly number[]): number {
  const mu = mean(xs)
  return Math.sqrt(xs.reduce((a, x) => a + (x - mu) ** 2, 0) / (xs.length - 1))
}

/** lm-eval's `mean_stderr`: sample_stddev / sqrt(n). null when n < 2 (lm-eval divides by zero there). */
export function meanStderr(xs: readonly number[]): number | null {
  if (xs.length < 2) return null
  return sampleStddev(xs) / Math.sqrt(xs.length)
}

/**
 * lm-eval's `pooled_sample_stderr`: the stderr of a group whose metric is the size-weighted mean of its subtasks'
 * (e.g. MMLU's categories and the whole of MMLU).
 */
export function pooledStderr(stderrs: readonly number[], sizes: readonly number[]): number {
  if (stderrs.length !== sizes.length) throw new RangeError("pooledStderr: stderrs and sizes differ in length")
  const total = sizes.reduce((a, b) => a + b, 0)
  const pooledVar = sizes.reduce((a, n, i) => a + (n - 1) * stderrs[i] ** 2 * n, 0) / (total - sizes.length)
  return Math.sqrt(pooledVar / total)
}

/** A mean with lm-eval's standard error. */
export interface MeanWithStderr {
  readonly value: number
  readonly stderr: number | null
  readonly n: number
}

export const meanWithStderr = (xs: readonly number[]): MeanWithStderr => ({
  value: xs.length ? mean(xs) : Number.NaN,
  stderr: meanStderr(xs),
  n: xs.length,
})

/**
 * numpy's argmax: the first maximum, except that a NaN counts as the maximum (the first NaN wins).
 * Ties go to the first index, as in lm-eval.
 */
export function argmax(xs: readonly number[]): number {
  let best = 0
  for (let i = 0; i < xs.length; i++) {
    if (Number.isNaN(xs[i])) return i
    if (xs[i] > xs[best]) best = i
  }
  return best
}
