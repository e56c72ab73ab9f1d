import { ops, type Rng, type Tensor, tidy } from "@bdvax/core-tensor"
import { KVCache } from "./kv-cache.js"
import { forward, type LoraWeights, type Params } from "./model.js"
import type { ModelConfig } from "./model-config.js"
import { hostUniforms, logSoftmaxRow, sampleRow, type SamplingOptions, validateSampling } from "./sampling.js"

/**
 * Autoregressive generation with a KV cache, batched the way Hugging Face's generate does it: prompts of
 * different lengths are LEFT-padded, the attention mask marks the pads, and position ids are
 * cumsum(attention_mask) − 1 with pads at 1 (so each row's real tokens sit at 0, 1, 2, … exactly as when it
 * runs alone). Each step reads the last position's logits [B, V] back to the host and picks the next token
 * there (sampling.ts). A row that emits a stop token is finished and keeps receiving the pad token.
 */
export interface GenerateOptions extends SamplingOptions {
  readonly maxNewTokens: number
  /** Tokens that finish a row (kept in its output). Default: config.eosTokenId. */
  readonly stopTokens?: readonly number[]
  /** Required when temperature > 0. One stream is drawn per step (B uniforms). */
  readonly rng?: Rng
  /** An adapter applied in evaluation mode (no dropout). */
  readonly lora?: LoraWeights
  /** Default: config.padTokenId, else the first eos token, else 0 (as Hugging Face). */
  readonly padTokenId?: number
  /** Also return the log-probability of each chosen token under the model (raw logits, no temperature). */
  readonly logprobs?: boolean
  /** Prompt positions per prefill forward (default: as many as keep the [B, chunk, V] logits ≤ 16M values). */
  readonly prefillChunk?: number
  /** Called for every token a still-running row receives (the stop token included), in row order per step. */
  readonly onToken?: (event: TokenEvent) => void
}

export interface TokenEvent {
  readonly row: number
  readonly token: number
  /** 0-based index of the token among the row's new tokens. */
  readonly index: number
  /** The token is a stop token (the row is finished). */
  readonly stop: boolean
}

export interface GenerateStats {
  readonly promptTokens: number
  /** New tokens of unfinished rows (pads after a stop are not counted). */
  readonly newTokens: number
  /** Forward passes run (prefill included). */
  readonly steps: number
  readonly prefillMs: number
  readonly decodeMs: number
  /** newTokens / (prefill + decode) seconds. */
  readonly tokensPerSecond: number
  /** Decode steps per second over the rows (excludes the prefill). */
  readonly decodeTokensPerSecond: number
}

export interface GenerateResult {
  /** Per row: the new tokens up to and including the stop token (if one came). */
  readonly tokens: number[][]
  /** Per row, all steps: pads after a row finished (Hugging Face's output layout, without the prompt). */
  readonly padded: number[][]
  readonly finishReasons: ("stop" | "length")[]
  /** Per row, aligned with `tokens`, when options.logprobs. */
  readonly logprobs?: number[][]
  readonly stats: GenerateStats
}

/** Logit values (f32) one prefill forward may produce before the prompt is split into chunks. */
const PREFILL_LOGITS_BUDGET = 16 * 1024 * 1024

/** Left-pad prompts: ids, attention mask and Hugging Face's position ids ([B][L] each). */
export function leftPad(prompts: readonly (readonly number[])[], padTokenId: number): { ids: number[][]; mask: number[][]; positions: number[][] } {
  const width = prompts.reduce((m, p) => Math.max(m, p.length), 0)
  const ids: number[][] = []
  const mask: number[][] = []
  const positions: number[][] = []
  for (const p of prompts) {
    const pads = width - p.length
    ids.push([...new Array<number>(pads).fill(padTokenId), ...p])
    mask.push(Array.from({ length: width }, (_, j) => (j < pads ? 0 : 1)))
    positions.push(Array.from({ length: width }, (_, j) => (j < pads ? 1 : j - pads)))
  }
  return { ids, mask, positions }
}

export async function generate(config: ModelConfig, params: Params, promptIds: readonly (readonly number[])[], options: GenerateOptions): Promise<GenerateResult> {
  const b = promptIds.length
  const { maxNewTokens } = options
  const temperature = options.temperature ?? 0
  const stop = new Set(options.stopTokens ?? config.eosTokenId)
  const pad = options.padTokenId ?? config.padTokenId ?? config.eosTokenId[0] ?? 0
  const v = config.vocabSize
  if (b === 0) throw new RangeError("generate: no prompts")
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new RangeError(`generate: maxNewTokens must be a non-negative integer, got ${maxNewTokens}`)
  validateSampling({ ...options, temperature })
  if (temperature > 0 && options.rng === undefined) throw new RangeError("generate: sampling (temperature > 0) needs an rng")
  if (!Number.isInteger(pad) || pad < 0 || pad >= v) throw new RangeError(`generate: padTokenId ${pad} is outside the vocabulary (${v})`)
  promptIds.forEach((p, i) => {
    if (p.length === 0) throw new RangeError(`generate: prompt ${i} is empty`)
    for (const t of p) if (!Number.isInteger(t) || t < 0 || t >= v) throw new RangeError(`generate: prompt ${i} has token ${t} outside the vocabulary (${v})`)
  })

  const dev = params["model.embed_tokens.weight"].device
  const { ids, mask, positions } = leftPad(promptIds, pad)
  const lengths = promptIds.map((p) => p.length)
  const padded = ids.some((_, i) => lengths[i] !== ids[0].length)
  const tokens: number[][] = promptIds.map(() => [])
  const paddedOut: number[][] = promptIds.map(() => [])
  const logprobs: number[][] = promptIds.map(() => [])
  const finished = new Array<boolean>(b).fill(false)
  const reasons: ("stop" | "length")[] = new Array(b).fill("length")
  const t0 = performance.now()
  let prefillMs = 0
  let newTokens = 0
  let steps = 0

  // A long batched prompt is prefilled in chunks through the KV cache (exact) so that the attention scores
  // [B, H, chunk, keys] stay within a budget; only the last position's logits are computed.
  const chunk = options.prefillChunk ?? Math.max(16, Math.floor(PREFILL_LOGITS_BUDGET / (b * v)))
  if (!Number.isInteger(chunk) || chunk < 1) throw new RangeError(`generate: prefillChunk must be a positive integer, got ${chunk}`)
  const cache = new KVCache(config.numHiddenLayers)
  try {
    /** Feed `input` through the cache in column chunks; the last position's logits [B, V]. */
    const step = (input: number[][], pos: number[][]) => {
      const t = input[0].length
      let last: Tensor | null = null
      for (let start = 0; start < t; start += chunk) {
        const end = Math.min(t, start + chunk)
        last = tidy(() => {
          const n = end - start
          const inputTensor = dev.tensor(input.flatMap((r) => r.slice(start, end)), [b, n], "int32")
          const keys = cache.length + n
          const keyMask = padded ? dev.tensor(mask.flatMap((m) => m.slice(0, keys)), [b, keys], "bool") : undefined
          const chunkPositions = pos.map((r) => r.slice(start, end))
          const { logits } = forward(config, params, inputTensor, { cache, positions: chunkPositions, keyMask, lora: options.lora, lastPositionOnly: true })
          return end === t ? ops.contiguous(logits) : null
        })
      }
      return last!
    }
    let input = ids
    let inputPositions = positions
    for (let stepNo = 0; stepNo < maxNewTokens; stepNo++) {
      const last = step(input, inputPositions)
      let row: Float32Array
      try {
        row = (await last.data()) as Float32Array
      } finally {
        last.dispose()
      }
      steps += 1
      // CPU reads resolve at once: give the event loop a turn now and then during long generations
      if (steps % 16 === 0) await new Promise<void>((resolve) => setImmediate(resolve))
      if (stepNo === 0) prefillMs = performance.now() - t0
      const u = temperature > 0 ? hostUniforms(options.rng!, b) : null
      const next: number[] = []
      for (let i = 0; i < b; i++) {
        if (finished[i]) {
          next.push(pad)
          paddedOut[i].push(pad)
          continue
        }
        const token = sampleRow(row, i * v, v, { ...options, temperature }, u === null ? 0 : u[i])
        next.push(token)
        paddedOut[i].push(token)
        tokens[i].push(token)
        newTokens += 1
        if (options.logprobs) logprobs[i].push(logSoftmaxRow(row, i * v, v)[token])
        const isStop = stop.has(token)
        options.onToken?.({ row: i, token, index: tokens[i].length - 1, stop: isStop })
        if (isStop) {
          finished[i] = true
          reasons[i] = "stop"
        }
      }
      if (finished.every(Boolean) || stepNo === maxNewTokens - 1) break
      // Hugging Face extends the attention mask with ones for every new token (pads of finished rows too).
      for (const m of mask) m.push(1)
      inputPositions = promptIds.map((_, i) => [lengths[i] + stepNo])
      input = next.map((t) => [t])
    }
  } finally {
    cache.dispose()
  }
  const totalMs = performance.now() - t0
  const decodeMs = totalMs - prefillMs
  const stats: GenerateStats = {
    promptTokens: lengths.reduce((a, x) => a + x, 0),
    newTokens,
    steps,
    prefillMs,
    decodeMs,
    tokensPerSecond: totalMs > 0 ? (newTokens * 1000) / totalMs : 0,
    decodeTokensPerSecond: decodeMs > 0 ? ((steps - 1) * b * 1000) / decodeMs : 0,
  }
  return { tokens, padded: paddedOut, finishReasons: reasons, ...(options.logprobs ? { logprobs } : {}), stats }
}

/** Convenience: greedy continuation of one prompt. */
export async function greedy(config: ModelConfig, params: Params, prompt: readonly number[], maxNewTokens: number, lora?: LoraWeights): Promise<number[]> {
  const r = await generate(config, params, [prompt], { maxNewTokens, temperature: 0, lora })
  return r.tokens[0]
}
