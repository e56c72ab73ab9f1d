import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { cutAtStop, inBatches, type Generate } from "../model.js"
import { meanWithStderr, type MeanWithStderr } from "../stats.js"
import { selectSubset, type Subset } from "../subset.js"

/**
 * GSM8K test, generative, scored like lm-eval's `gsm8k` task (v3): prompt "Question: {question}\nAnswer:",
 * greedy until "Question:", "</s>" or "<|im_end|>" (256 new tokens, lm-eval's default `max_gen_toks`), then two
 * filters on the same output:
 * - strict-match: the first `#### (-?[0-9.,]+)`;
 * - flexible-extract: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` (its first non-empty group);
 * and exact_match against the whole gold answer with lm-eval's `regexes_to_ignore`
 * [",", "\\$", "(?s).*#### ", "\\.$"] and ignore_case applied to both sides. The comparison is of strings, so
 * "18.00" does not match "18": that is lm-eval's behaviour, and `numericMatch` is offered on the side.
 */
export interface Gsm8kItem {
  readonly id: string
  readonly question: string
  /** the full reference solution, with `<<calc>>` notes and the final "#### N" */
  readonly answer: string
  /** the text after "####", as in the file (may hold thousands commas) */
  readonly goldRaw: string
  /** lm-eval's normalised gold string (commas, "$" and the rationale removed) */
  readonly gold: string
  /** the gold as a number */
  readonly goldNumber: number
}

const Gsm8kRecord = Schema.Struct({ question: Schema.String, answer: Schema.String })

export function parseGsm8k(text: string, file: string, subset?: Subset): Gsm8kItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(Gsm8kRecord, value, file, line, "GSM8K record {question, answer}")
    const parts = r.answer.split("####")
    if (parts.length !== 2) throw evalDataError(file, line, `answer must hold exactly one "####", found ${parts.length - 1}`)
    const goldRaw = parts[1].trim()
    const gold = normalizeGsm8k(r.answer)
    const goldNumber = Number(goldRaw.replaceAll(",", ""))
    if (goldRaw === "" || !Number.isFinite(goldNumber)) throw evalDataError(file, line, `final answer ${JSON.stringify(goldRaw)} is not a number`)
    return { id: `gsm8k-${i}`, question: r.question, answer: r.answer, goldRaw, gold, goldNumber }
  })
  return selectSubset(items, subset)
}

export const loadGsm8k = async (path: string, subset?: Subset) => parseGsm8k(await readText(path), path, subset)

/** lm-eval's fallback when a filter finds nothing. */
export const INVALID = "[invalid]"

/** lm-eval strict-match: the first "#### N". */
export function strictExtract(output: string): string {
  const m = /#### (-?[0-9.,]+)/.exec(output)
  return m ? m[1].trim() : INVALID
}

/** lm-eval flexible-extract: the last number-like run, `(-?[$0-9.,]{2,})|(-?[0-9]+)`, group_select -1. */
export function flexibleExtract(output: string): string {
  const matches = [...output.matchAll(/(-?[$0-9.,]{2,})|(-?[0-9]+)/g)]
  if (matches.length === 0) return INVALID
  const last = matches[matches.length - 1]
  const group = last[1] || last[2]
  return group ? group.trim() : INVALID
}

/**
 * lm-eval's exact_match normalisation for GSM8K: re.sub each of ",", "\\$", "(?s).*#### ", "\\.$" (Python's `$`
 * also matches before a final newline), then lower-case.
 */
export function normalizeGsm8k(s: string): string {
  let t = s.replace(/,/g, "")
  t = t.replace(/\$/g, "")
  t = t.replace(/^[\s\S]*#### /, "")
  t = t.replace(/\.(?=\n?$)/, "")
  return t.toLowerCase()
}

/** The extracted answer as a number (commas and "$" dropped, a trailing "." allowed), or null. */
export function gsm8kNumber(extracted: string): number | null {
  if (extracted === INVALID) return null
  const t = extracted.replace(/[,$]/g, "").replace(/\.$/, "")
  if (!/^-?(\d+\.?\d*|\.\d+)$/.test(t)) return null
  const v = Number(t)
  return Number.isFinite(v) ? v : null
}

export interface Gsm8kScore {
  readonly strict: string
  readonly flexible: string
  /** lm-eval exact_match under each filter */
  readonly strictMatch: 0 | 1
  readonly flexibleMatch: 0 | 1
  /** not lm-eval: the flexible extraction compared as a number (so "18.00" = "18") */
  readonly numericMatch: 0 | 1
}

export function scoreGsm8k(output: string, item: Pick<Gsm8kItem, "gold" | "goldNumber">): Gsm8kScore {
  const strict = strictExtract(output)
  const flexible = flexibleExtract(output)
  const n = gsm8kNumber(flexible)
  return {
    strict,
    flexible,
    strictMatch: normalizeGsm8k(strict) === item.gold ? 1 : 0,
    flexibleMatch: normalizeGsm8k(flexible) === item.gold ? 1 : 0,
    numericMatch: n !== null && Math.abs(n - item.goldNumber) < 1e-9 ? 1 : 0,
  }
}

export const GSM8K_STOP = ["Question:", "</s>", "<|im_end|>"] as const

/**
 * The prompt. Zero-shot by default; `fewshot` examples (question + full reference answer, e.g. from the GSM8K
 * train split, which the shared data does not hold) are laid out as lm-eval does:
 * "Question: q1\nAnswer: a1\n\nQuestion: q2\nAnswer: a2\n\nQuestion: q\nAnswer:".
 */
export function gsm8kPrompt(question: string, fewshot: ReadonlyArray<{ question: string; answer: string }> = []): string {
  const shots = fewshot.map((s) => `Question: ${s.question}\nAnswer: ${s.answer}\n\n`).join("")
  return `${shots}Question: ${question}\nAnswer:`
}

export interface Gsm8kRecordResult extends Gsm8kScore {
  readonly id: string
  readonly gold: string
  readonly output: string
}

export interface Gsm8kResult {
  readonly n: number
  readonly strictMatch: MeanWithStderr
  readonly flexibleExtract: MeanWithStderr
  readonly numericMatch: MeanWithStderr
  readonly records: readonly Gsm8kRecordResult[]
}

export async function evaluateGsm8k(
  items: readonly Gsm8kItem[],
  generate: Generate,
  options: {
    batchSize?: number
    maxNewTokens?: number
    fewshot?: ReadonlyArray<{ question: string; answer: string }>
    stop?: readonly string[]
    onProgress?: (done: number, total: number) => void
  } = {},
): Promise<Gsm8kResult> {
  const stop = options.stop ?? GSM8K_STOP
  const maxNewTokens = options.maxNewTokens ?? 256
  const prompts = items.map((it) => gsm8kPrompt(it.question, options.fewshot))
  const outputs = await inBatches(prompts, options.batchSize ?? 16, "Generate", (chunk) => generate(chunk, { maxNewTokens, stop }), options.onProgress)
  const records = items.map((it, i) => {
    const output = cutAtStop(outputs[i], stop)
    return { id: it.id, gold: it.gold, output, ...scoreGsm8k(output, it) }
  })
  return {
    n: records.length,
    strictMatch: meanWithStderr(records.map((r) => r.strictMatch)),
    flexibleExtract: meanWithStderr(records.map((r) => r.flexibleMatch)),
    numericMatch: meanWithStderr(records.map((r) => r.numericMatch)),
    records,
  }
}
