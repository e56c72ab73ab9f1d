import { ModelContractError } from "./errors.js"

/**
 * The model side of evaluation, supplied by the caller (bdvax's `@bdvax/llm` runtime, or anything else).
 * Everything in this package is written against these three callbacks only.
 */

/**
 * log P(continuation | context) summed over the continuation's tokens, and whether greedy decoding would produce it.
 * Same contract as lm-evaluation-harness's `loglikelihood` requests: the continuation usually begins with the
 * target delimiter (" "), and an implementation should tokenize like lm-eval's HF adapter does (encode
 * context + continuation as a whole and take the continuation's tokens as the difference; move trailing spaces
 * of the context onto the continuation).
 */
export type LogLikelihood = (
  requests: ReadonlyArray<{ context: string; continuation: string }>,
) => Promise<ReadonlyArray<{ logprob: number; isGreedy: boolean }>>

/**
 * Greedy (or configured) generation for a batch of prompts. Returns only the newly generated text (not the prompt),
 * cut at the first `stop` string when one is given (callers cut again defensively).
 */
export type Generate = (
  prompts: readonly string[],
  options: { maxNewTokens: number; stop?: readonly string[] },
) => Promise<readonly string[]>

/**
 * Token-level negative log-likelihood of `answer` given `prompt`, for each pair: the model sees `prompt + answer`
 * (plain concatenation, no separator) and the loss is summed over the answer's tokens only; `tokens` is how many
 * answer tokens were scored.
 */
export type TokenNll = (
  pairs: ReadonlyArray<{ prompt: string; answer: string }>,
) => Promise<ReadonlyArray<{ nll: number; tokens: number }>>

/** Call `fn` on consecutive chunks of `xs` and check that each chunk's answer has one result per request. */
export async function inBatches<T, R>(
  xs: readonly T[],
  batchSize: number,
  name: string,
  fn: (chunk: readonly T[]) => Promise<readonly R[]>,
  onProgress?: (done: number, total: number) => void,
): Promise<R[]> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`)
  const out: R[] = []
  for (let i = 0; i < xs.length; i += batchSize) {
    const chunk = xs.slice(i, i + batchSize)
    const res = await fn(chunk)
    if (!Array.isArray(res) || res.length !== chunk.length) {
      throw new ModelContractError({
        callback: name,
        message: `${name} returned ${Array.isArray(res) ? res.length : typeof res} results for ${chunk.length} requests`,
      })
    }
    out.push(...res)
    onProgress?.(out.length, xs.length)
  }
  return out
}

/** Cut a generation at the first occurrence of any stop string (lm-eval's `until`). */
export function cutAtStop(text: string, stop: readonly string[] | undefined): string {
  if (!stop || stop.length === 0) return text
  let end = text.length
  for (const s of stop) {
    if (s === "") continue
    const i = text.indexOf(s)
    if (i >= 0 && i < end) end = i
  }
  return text.slice(0, end)
}
