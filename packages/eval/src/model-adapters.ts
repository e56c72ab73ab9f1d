import { ops, tidy } from "@bdvax/core-tensor"
import { forward, generate, type LoraWeights, loraWeights, type ModelConfig, type Tokenizer } from "@bdvax/llm"
import { type EvalModel, stopTokenIds } from "./eval-model.js"
import { cutAtStop, type Generate, type LogLikelihood, type TokenNll } from "./model.js"

/**
 * eval's three model callbacks (`LogLikelihood`, `Generate`, `TokenNll`) for a bdvax model (`EvalModel`: an
 * @bdvax/llm config + params + tokenizer, optionally with a LoRA adapter).
 *
 * Scoring runs one forward per sub-batch of sequences, RIGHT-padded (causal attention never lets a real token see
 * the pads after it, so no mask is needed and every row is computed as if alone). Only the positions that are
 * scored go through the final norm and the LM head, and the log-softmax, target pick and max are reduced on the
 * device, so a 49k vocabulary costs [scored tokens, V] once rather than [B, T, V].
 */

export interface ScoringOptions {
  /** Sequences per forward (default 16). */
  readonly batchSize?: number
  /**
   * Padded tokens per forward (rows × longest row); long rows get smaller batches. Default `defaultMaxBatchTokens`:
   * about 1 GiB of activations (forward keeps every layer's intermediates until it returns).
   */
  readonly maxBatchTokens?: number
}

export interface LogLikelihoodOptions extends ScoringOptions {
  /**
   * Let the tokenizer add its special tokens (BOS) when encoding. Default false: lm-eval's HFLM encodes with
   * add_special_tokens = add_bos_token, which is False unless `add_bos_token=True` is passed (Gemma aside).
   */
  readonly addSpecialTokens?: boolean
  /** The token an empty context becomes (lm-eval's prefix_token_id): default BOS, else EOS. */
  readonly prefixTokenId?: number
  /** Longest input (context + continuation − 1) the model reads; older context is cut on the left. Default config.maxPositionEmbeddings. */
  readonly maxLength?: number
}

export interface GeneratorOptions {
  /** Prompts per generate() call (default 16). */
  readonly batchSize?: number
  /** Default: the config's eos ids and the tokenizer's eos (`stopTokenIds`). */
  readonly stopTokens?: readonly number[]
  /** Encode prompts with the tokenizer's special tokens (BOS). Default false: the prompt is fed as formatted (chat templates write their own markup; @bdvax/llm's SFT encodes without special tokens). */
  readonly addSpecialTokens?: boolean
  /** Default true, as transformers' decode(skip_special_tokens=True) in the usual eval scripts. */
  readonly skipSpecialTokens?: boolean
  /** Stop strings applied to every call in addition to the caller's. */
  readonly stop?: readonly string[]
  /** Called after every generate() call with its stats. */
  readonly onBatch?: (info: { readonly prompts: number; readonly newTokens: number; readonly ms: number }) => void
}

export interface TokenNllOptions extends ScoringOptions {
  /** Encode with the tokenizer's special tokens (BOS), as `tokenizer(text)` in transformers does. Default true. */
  readonly addSpecialTokens?: boolean
}

/**
 * Tokens per scoring forward that keep its activations near 1 GiB: forward holds each layer's intermediates
 * (≈ 12·hidden + 5·intermediate floats per token and layer, measured 1.4–1.8 MB per token on SmolLM2-135M)
 * until it returns. Never below 64.
 */
export function defaultMaxBatchTokens(config: ModelConfig): number {
  const floatsPerToken = config.numHiddenLayers * (12 * config.hiddenSize + 5 * config.intermediateSize) + 2 * config.hiddenSize
  return Math.max(64, Math.floor(2 ** 28 / floatsPerToken))
}

/** What one scoring row asks: the log-probability of ids[j] given ids[< j], for every j ≥ from. */
interface ScoreRow {
  readonly ids: readonly number[]
  readonly from: number
}

interface RowScores {
  /** log P(ids[j] | ids[< j]) for j = from … ids.length − 1 */
  readonly logprobs: number[]
  /** ids[j] is the most likely next token (its log-probability is the row maximum) */
  readonly greedy: boolean[]
}

const loraOf = (model: EvalModel): LoraWeights | undefined => (model.lora ? loraWeights(model.lora) : undefined)

const padIdOf = (model: EvalModel): number => model.config.padTokenId ?? model.config.eosTokenId[0] ?? 0

/** Score one sub-batch: one forward over the right-padded inputs (ids[:-1] of every row). */
async function scoreBatch(model: EvalModel, rows: readonly ScoreRow[]): Promise<RowScores[]> {
  const { config, params } = model
  const dev = params["model.embed_tokens.weight"].device
  const b = rows.length
  const t = Math.max(...rows.map((r) => r.ids.length - 1))
  const v = config.vocabSize
  const pad = padIdOf(model)
  const input = new Int32Array(b * t).fill(pad)
  const at: number[] = []
  const targets: number[] = []
  rows.forEach((r, i) => {
    for (let j = 0; j < r.ids.length - 1; j++) input[i * t + j] = r.ids[j]
    for (let j = r.from; j < r.ids.length; j++) {
      // position j − 1 predicts ids[j]
      at.push(i * t + j - 1)
      targets.push(r.ids[j])
    }
  })
  const n = at.length
  const out: RowScores[] = rows.map(() => ({ logprobs: [], greedy: [] }))
  if (n === 0) return out
  const [picked, best] = tidy(() => {
    const ids = dev.tensor(input, [b, t], "int32")
    const { hidden } = forward(config, params, ids, { lora: loraOf(model), lastPositionOnly: true, collectHidden: true })
    // hidden[L]: the last layer's output before the final norm, [B, T, H]
    const h = hidden[config.numHiddenLayers]
    const scored = ops.gather(ops.reshape(h, [b * t, config.hiddenSize]), dev.tensor(at, [n], "int32"))
    const normed = ops.rmsNorm(scored, params["model.norm.weight"], config.rmsNormEps)
    const head = config.tieWordEmbeddings ? params["model.embed_tokens.weight"] : params["lm_head.weight"]
    const logp = ops.logSoftmax(ops.linear(normed, head)) // [N, V]
    const flatTargets = dev.tensor(targets.map((tok, k) => k * v + tok), [n], "int32")
    return [ops.gather(ops.reshape(logp, [n * v, 1]), flatTargets), ops.max(logp, -1)] as const
  })
  let lp: Float32Array
  let mx: Float32Array
  try {
    lp = (await picked.data()) as Float32Array
    mx = (await best.data()) as Float32Array
  } finally {
    picked.dispose()
    best.dispose()
  }
  let k = 0
  rows.forEach((r, i) => {
    for (let j = r.from; j < r.ids.length; j++, k++) {
      out[i].logprobs.push(lp[k])
      // the same device values: the target is an argmax iff its log-probability equals the row maximum
      out[i].greedy.push(lp[k] >= mx[k])
    }
  })
  return out
}

/** Score rows in sub-batches, longest first (as lm-eval's Collator orders them), results in input order. */
async function scoreRows(model: EvalModel, rows: readonly ScoreRow[], options: ScoringOptions): Promise<RowScores[]> {
  const batchSize = options.batchSize ?? 16
  const maxTokens = options.maxBatchTokens ?? defaultMaxBatchTokens(model.config)
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`)
  const out: RowScores[] = new Array(rows.length)
  const scorable = (r: ScoreRow) => r.ids.length >= 2 && r.from < r.ids.length
  const order = rows.map((_, i) => i).filter((i) => scorable(rows[i]))
  rows.forEach((r, i) => {
    if (!scorable(r)) out[i] = { logprobs: [], greedy: [] }
  })
  order.sort((x, y) => rows[y].ids.length - rows[x].ids.length || x - y)
  for (let s = 0; s < order.length; ) {
    const width = rows[order[s]].ids.length - 1
    const take = Math.max(1, Math.min(batchSize, Math.floor(maxTokens / Math.max(1, width))))
    const group = order.slice(s, s + take)
    const scores = await scoreBatch(model, group.map((i) => rows[i]))
    group.forEach((i, g) => (out[i] = scores[g]))
    s += group.length
  }
  return out
}

/** Python's str.isspace() characters (what rstrip() removes). */
const PY_TRAILING_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/

/**
 * lm-eval HFLM's `_encode_pair`: trailing whitespace of the context moves onto the continuation; the whole is
 * encoded at once and the continuation's tokens are the tail after the context's own encoding.
 */
export function encodePair(tokenizer: Tokenizer, context: string, continuation: string, addSpecialTokens = false): { context: number[]; continuation: number[] } {
  const spaces = PY_TRAILING_SPACE.exec(context)?.[0] ?? ""
  if (spaces.length > 0) {
    continuation = spaces + continuation
    context = context.slice(0, context.length - spaces.length)
  }
  const encode = (s: string) => tokenizer.encode(s, { addSpecialTokens })
  const whole = encode(context + continuation)
  const ctx = encode(context)
  return { context: ctx, continuation: whole.slice(ctx.length) }
}

/**
 * lm-eval's `loglikelihood` for a bdvax model: for each {context, continuation}, Σ log-softmax of the
 * continuation's tokens and whether every one of them is the argmax. An empty context becomes the prefix token
 * (BOS, else EOS) and the continuation is encoded alone, as lm-eval does.
 */
export function logLikelihood(model: EvalModel, options: LogLikelihoodOptions = {}): LogLikelihood {
  const { tokenizer, config } = model
  const add = options.addSpecialTokens ?? false
  const maxLength = options.maxLength ?? config.maxPositionEmbeddings
  return async (requests) => {
    const rows: ScoreRow[] = requests.map(({ context, continuation }) => {
      const prefix = (): number[] => {
        const id = options.prefixTokenId ?? tokenizer.bosTokenId ?? tokenizer.eosTokenId
        if (id === null) throw new RangeError("logLikelihood: an empty context needs a prefix token (the tokenizer has neither BOS nor EOS; pass prefixTokenId)")
        return [id]
      }
      let ctx: number[]
      let cont: number[]
      if (context === "") {
        ctx = prefix()
        cont = tokenizer.encode(continuation, { addSpecialTokens: add })
      } else {
        ;({ context: ctx, continuation: cont } = encodePair(tokenizer, context, continuation, add))
        // a whitespace-only context leaves nothing to condition on: treat it as empty (lm-eval would slice oddly)
        if (ctx.length === 0) ctx = prefix()
      }
      if (cont.length > maxLength) throw new RangeError(`logLikelihood: continuation of ${cont.length} tokens exceeds maxLength ${maxLength}`)
      // lm-eval: inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
      const all = [...ctx, ...cont].slice(-(maxLength + 1))
      return { ids: all, from: all.length - cont.length }
    })
    const scores = await scoreRows(model, rows, options)
    return scores.map((s) => ({ logprob: s.logprobs.reduce((a, x) => a + x, 0), isGreedy: s.greedy.every(Boolean) }))
  }
}

/**
 * eval's `TokenNll`: the model reads encode(prompt + answer); the answer's tokens are those after the first
 * len(encode(prompt)) (the usual prompt-masked labels), and nll is minus their summed log-probabilities. The
 * first token of a sequence is never scored (it has no predecessor).
 */
export function tokenNll(model: EvalModel, options: TokenNllOptions = {}): TokenNll {
  const add = options.addSpecialTokens ?? true
  return async (pairs) => {
    const rows: ScoreRow[] = pairs.map(({ prompt, answer }) => {
      const ids = model.tokenizer.encode(prompt + answer, { addSpecialTokens: add })
      const promptLength = prompt === "" ? 0 : model.tokenizer.encode(prompt, { addSpecialTokens: add }).length
      return { ids, from: Math.max(1, promptLength) }
    })
    const scores = await scoreRows(model, rows, options)
    return scores.map((s) => ({ nll: -s.logprobs.reduce((a, x) => a + x, 0), tokens: s.logprobs.length }))
  }
}

/**
 * eval's `Generate`, greedy: prompts (already formatted by the caller) are encoded, generated with @bdvax/llm's
 * batched KV-cache `generate` (left padding), stopped at the stop tokens (default eos), and the new tokens
 * decoded with special tokens skipped, then cut at the first stop string.
 */
export function generator(model: EvalModel, options: GeneratorOptions = {}): Generate {
  const { config, params, tokenizer } = model
  const batchSize = options.batchSize ?? 16
  const stopTokens = options.stopTokens ?? stopTokenIds(model)
  const add = options.addSpecialTokens ?? false
  const skip = options.skipSpecialTokens ?? true
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`generator: batchSize must be a positive integer, got ${batchSize}`)
  return async (prompts, o) => {
    const encoded = prompts.map((p) => tokenizer.encode(p, { addSpecialTokens: add }))
    const out: string[] = new Array(prompts.length)
    // longest first, so a batch's rows have similar lengths (left padding is exact, this only saves work)
    const order = encoded.map((_, i) => i).sort((x, y) => encoded[y].length - encoded[x].length || x - y)
    const stop = [...(options.stop ?? []), ...(o.stop ?? [])]
    for (let s = 0; s < order.length; s += batchSize) {
      const group = order.slice(s, s + batchSize)
      const empty = group.filter((i) => encoded[i].length === 0)
      if (empty.length > 0) throw new RangeError(`generator: prompt ${empty[0]} encodes to no tokens`)
      const t0 = performance.now()
      const res = await generate(config, params, group.map((i) => encoded[i]), {
        maxNewTokens: o.maxNewTokens,
        temperature: 0,
        stopTokens,
        lora: loraOf(model),
      })
      group.forEach((i, g) => {
        const toks = res.tokens[g].filter((tok) => !stopTokens.includes(tok))
        out[i] = cutAtStop(tokenizer.decode(toks, { skipSpecialTokens: skip }), stop)
      })
      options.onBatch?.({ prompts: group.length, newTokens: res.stats.newTokens, ms: performance.now() - t0 })
    }
    return out
  }
}

/** All three callbacks at once. */
export function evalCallbacks(
  model: EvalModel,
  options: { readonly logLikelihood?: LogLikelihoodOptions; readonly generate?: GeneratorOptions; readonly tokenNll?: TokenNllOptions } = {},
): { logLikelihood: LogLikelihood; generate: Generate; tokenNll: TokenNll } {
  return {
    logLikelihood: logLikelihood(model, options.logLikelihood),
    generate: generator(model, options.generate),
    tokenNll: tokenNll(model, options.tokenNll),
  }
}
