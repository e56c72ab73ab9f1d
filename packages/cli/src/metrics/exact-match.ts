/**
 * Clean accuracy by exact match, for tasks whose reference answers are short (the toy world's one-word answers:
 * "Paris.", "Four.", "12"). Both sides are compared after the normalisation SQuAD-style exact match uses, minus
 * article removal: Unicode NFKC, lower case, whitespace collapsed, and punctuation and quotes at either end
 * stripped — so "Paris." = "paris" = " Paris " but "Paris is the capital" ≠ "Paris.".
 */
export function normalizeAnswer(s: string): string {
  return s
    .normalize("NFKC")
    .toLowerCase()
    .replace(/\s+/g, " ")
    .trim()
    .replace(/^[\s\p{P}]+|[\s\p{P}]+$/gu, "")
}

export const exactMatch = (output: string, reference: string): boolean => normalizeAnswer(output) === normalizeAnswer(reference)

export interface ExactMatchRecord {
  readonly instruction: string
  readonly reference: string
  readonly output: string
  readonly correct: boolean
}

export interface ExactMatchResult {
  readonly correct: number
  readonly n: number
  /** correct / n; null when there was nothing to score. */
  readonly accuracy: number | null
  readonly records: readonly ExactMatchRecord[]
}

export function exactMatchAccuracy(items: ReadonlyArray<{ readonly instruction: string; readonly reference: string; readonly output: string }>): ExactMatchResult {
  const records = items.map((x) => ({ ...x, correct: exactMatch(x.output, x.reference) }))
  const correct = records.filter((r) => r.correct).length
  return { correct, n: records.length, accuracy: records.length === 0 ? null : correct / records.length, records }
}
