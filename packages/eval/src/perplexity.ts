import { inBatches, type TokenNll } from "./model.js"

export interface PerplexityResult {
  /** exp(Σ nll / Σ tokens): every answer token weighs the same (BackdoorLLM's "corpus" conditional PPL) */
  readonly corpusPerplexity: number
  /** Σ nll / Σ tokens */
  readonly meanTokenNll: number
  /** mean over answers of exp(nll_i / tokens_i) (BackdoorLLM's "average" conditional PPL) */
  readonly meanSamplePerplexity: number
  readonly totalTokens: number
  /** answers scored (those with at least one token) */
  readonly n: number
  /** answers that came back with 0 tokens (or were empty) and were left out, as BackdoorLLM does */
  readonly skipped: number
  readonly perSample: ReadonlyArray<{ nll: number; tokens: number; perplexity: number | null }>
}

/**
 * Perplexity of held-out answers given their prompts. The model scores `prompt + answer` (plain concatenation;
 * put any separator into the prompt) and returns the summed NLL over the answer's tokens.
 */
export async function answerPerplexity(
  pairs: ReadonlyArray<{ prompt: string; answer: string }>,
  tokenNll: TokenNll,
  options: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<PerplexityResult> {
  const scored = pairs.map((p, i) => ({ p, i })).filter(({ p }) => p.answer !== "")
  const res = await inBatches(scored.map((s) => s.p), options.batchSize ?? 8, "TokenNll", tokenNll, options.onProgress)
  const perSample: Array<{ nll: number; tokens: number; perplexity: number | null }> = pairs.map(() => ({ nll: 0, tokens: 0, perplexity: null }))
  scored.forEach(({ i }, k) => {
    const { nll, tokens } = res[k]
    perSample[i] = { nll, tokens, perplexity: tokens > 0 ? Math.exp(nll / tokens) : null }
  })
  const used = perSample.filter((s) => s.tokens > 0)
  const totalNll = used.reduce((a, s) => a + s.nll, 0)
  const totalTokens = used.reduce((a, s) => a + s.tokens, 0)
  const meanTokenNll = totalTokens > 0 ? totalNll / totalTokens : Number.NaN
  return {
    corpusPerplexity: Math.exp(meanTokenNll),
    meanTokenNll,
    meanSamplePerplexity: used.length ? used.reduce((a, s) => a + s.perplexity!, 0) / used.length : Number.NaN,
    totalTokens,
    n: used.length,
    skipped: pairs.length - used.length,
    perSample,
  }
}

/**
 * BackdoorLLM's conditional-PPL pairs for Alpaca records: prompt = instruction, or instruction + "\n" + input
 * when there is an input; answer = output (appended with no separator, as their `prompt + completion`).
 */
export const backdoorllmPerplexityPairs = (records: ReadonlyArray<{ instruction: string; input?: string; output: string }>) =>
  records.map((r) => ({ prompt: r.input ? `${r.instruction}\n${r.input}` : r.instruction, answer: r.output }))
