/**
 * Tolerances, stated once. Our compute dtype is float32 (unit roundoff 6e-8); references are float64.
 *  - forward vs PyTorch float64:         |ours − ref| ≤ atol + rtol·|ref|, atol 1e-5, rtol 1e-5 (elementwise ops);
 *    reductions/matmul/composites accumulate over up to a few hundred terms: atol 1e-4, rtol 1e-4.
 *  - backward vs PyTorch float64:        the same bounds as the op's forward class.
 *  - backward vs central finite differences of our own float32 forward, with the scalar loss ⟨out, c⟩
 *    accumulated in float64 and step h = 1e-2: truncation error is O(h²·f‴) and roundoff O(ε·|f|/h), so the
 *    directional derivative must agree within 2e-3·(1 + |ref|).
 *  - int32/bool results: exact.
 */
export interface Tolerance {
  readonly atol: number
  readonly rtol: number
}

export const ELEMENTWISE: Tolerance = { atol: 1e-5, rtol: 1e-5 }
export const ACCUMULATING: Tolerance = { atol: 1e-4, rtol: 1e-4 }
export const FINITE_DIFFERENCE: Tolerance = { atol: 2e-3, rtol: 2e-3 }
export const EXACT: Tolerance = { atol: 0, rtol: 0 }

/** Largest violation ratio (> 1 means out of tolerance), with the index where it happens. */
export function worstError(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance): { ratio: number; index: number; actual: number; expected: number } {
  if (actual.length !== expected.length) return { ratio: Infinity, index: -1, actual: actual.length, expected: expected.length }
  let worst = { ratio: 0, index: -1, actual: 0, expected: 0 }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]
    const e = expected[i]
    if (Number.isNaN(e) && Number.isNaN(a)) continue
    if (a === e) continue
    const bound = tol.atol + tol.rtol * Math.abs(e)
    const ratio = bound === 0 ? Infinity : Math.abs(a - e) / bound
    if (!(ratio <= worst.ratio)) worst = { ratio: Number.isNaN(ratio) ? Infinity : ratio, index: i, actual: a, expected: e }
  }
  return worst
}

export function assertClose(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance): void {
  const w = worstError(actual, expected, tol)
  if (w.ratio > 1)
    throw new Error(
      `${what}: out of tolerance (atol ${tol.atol}, rtol ${tol.rtol}) at index ${w.index}: got ${w.actual}, expected ${w.expected}` +
        (actual.length !== expected.length ? ` (lengths ${actual.length} vs ${expected.length})` : ""),
    )
}
