import type { McItem } from "./benchmarks/types.js"
import { pyLen } from "./io.js"
import { inBatches, type LogLikelihood } from "./model.js"
import { argmax, meanWithStderr, type MeanWithStderr } from "./stats.js"

/** The per-item part of lm-eval's multiple_choice `process_results`. */
export interface McScore {
  /** argmax of the summed log-probabilities (ties → the first) */
  readonly pred: number
  /** argmax of log-probability / length of the choice in characters */
  readonly predNorm: number
  readonly acc: 0 | 1
  readonly accNorm: 0 | 1
  /** whether greedy decoding would produce the gold continuation (lm-eval's `exact_match` for MC) */
  readonly goldIsGreedy: boolean
}

export interface McScoreRecord extends McScore {
  readonly id: string
  readonly label: number
  readonly group?: string
  readonly logprobs: readonly number[]
}

/**
 * Score one item from its options' log-likelihoods, as lm-eval does: acc = [argmax(ll) == gold];
 * acc_norm = [argmax(ll / len(choice)) == gold], len in characters (code points) of the choice without the
 * target delimiter (`McOption.choice`, defaulting to the continuation); numpy's argmax, so ties go to the first.
 */
export function scoreMcItem(item: McItem, results: ReadonlyArray<{ logprob: number; isGreedy: boolean }>): McScore {
  if (results.length !== item.options.length) throw new RangeError(`${item.id}: ${results.length} results for ${item.options.length} options`)
  const lls = results.map((r) => r.logprob)
  const lens = item.options.map((o) => pyLen(o.choice ?? o.continuation))
  const pred = argmax(lls)
  const predNorm = argmax(lls.map((ll, i) => ll / lens[i]))
  return {
    pred,
    predNorm,
    acc: pred === item.label ? 1 : 0,
    accNorm: predNorm === item.label ? 1 : 0,
    goldIsGreedy: results[item.label]?.isGreedy ?? false,
  }
}

export interface McResult {
  readonly n: number
  readonly acc: MeanWithStderr
  readonly accNorm: MeanWithStderr
  readonly records: readonly McScoreRecord[]
}

/** acc and acc_norm means with lm-eval's stderr over a set of scored records. */
export function summarizeMc(records: readonly McScoreRecord[]): Omit<McResult, "records"> {
  return {
    n: records.length,
    acc: meanWithStderr(records.map((r) => r.acc)),
    accNorm: meanWithStderr(records.map((r) => r.accNorm)),
  }
}

/**
 * Run every option of every item through `logLikelihood` (in batches of `batchSize` requests, in item order) and
 * score them. Items are validated first (label in range, at least 2 options).
 */
export async function evaluateMultipleChoice(
  items: readonly McItem[],
  logLikelihood: LogLikelihood,
  options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<McResult> {
  for (const it of items) {
    if (it.options.length < 2) throw new RangeError(`${it.id}: fewer than 2 options`)
    if (!Number.isInteger(it.label) || it.label < 0 || it.label >= it.options.length) throw new RangeError(`${it.id}: label ${it.label} out of range`)
  }
  const requests = items.flatMap((it) => it.options.map((o) => ({ context: o.context, continuation: o.continuation })))
  const results = await inBatches(requests, options.batchSize ?? 64, "LogLikelihood", logLikelihood, options.onProgress)
  let k = 0
  const records: McScoreRecord[] = items.map((it) => {
    const rs = results.slice(k, k + it.options.length)
    k += it.options.length
    return {
      id: it.id,
      label: it.label,
      ...(it.group !== undefined ? { group: it.group } : {}),
      logprobs: rs.map((r) => r.logprob),
      ...scoreMcItem(it, rs),
    }
  })
  return { ...summarizeMc(records), records }
}
