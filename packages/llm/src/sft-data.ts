import { fillRandom } from "@bdvax/core-tensor"

/**
 * Supervised finetuning data: (prompt, response) token sequences become input ids with labels −100 on the
 * prompt (the loss covers the response only, as TRL's completion-only collator), right-padded into batches with
 * pad labels −100 and a key mask for the pads. Labels are shifted on the host — targets[b, t] = labels[b, t + 1]
 * — so the loss is plain cross-entropy of logits[:, :−1] against targets, as Hugging Face's ForCausalLMLoss.
 */
export interface SftExample {
  readonly promptIds: readonly number[]
  readonly responseIds: readonly number[]
}

export const IGNORE_INDEX = -100

/** Input ids and (unshifted) labels of one example, truncated on the right to maxLength. */
export function sftLabels(example: SftExample, maxLength = Infinity): { ids: number[]; labels: number[] } {
  const ids = [...example.promptIds, ...example.responseIds].slice(0, maxLength)
  const labels = ids.map((t, j) => (j < example.promptIds.length ? IGNORE_INDEX : t))
  return { ids, labels }
}

/** Number of tokens an example contributes to the loss (response tokens with a predecessor, after truncation). */
export function countedTokens(example: SftExample, maxLength = Infinity): number {
  const { labels } = sftLabels(example, maxLength)
  return labels.slice(1).filter((l) => l !== IGNORE_INDEX).length
}

/** A right-padded batch, ready to upload. */
export interface SftBatch {
  readonly batch: number
  /** Padded sequence length T. */
  readonly length: number
  /** [B, T] */
  readonly inputIds: Int32Array
  /** [B, T] 1 = real token, 0 = pad. */
  readonly keyMask: Uint8Array
  /** [B, T − 1] shifted labels (−100 = ignored). */
  readonly targets: Int32Array
  /** Targets that count in the loss. */
  readonly lossTokens: number
  /** Real (non-pad) input tokens. */
  readonly inputTokens: number
  /** Whether any row is padded (the key mask can be skipped otherwise). */
  readonly hasPadding: boolean
}

export interface CollateOptions {
  readonly padTokenId: number
  readonly maxLength?: number
}

export function collateSft(examples: readonly SftExample[], options: CollateOptions): SftBatch {
  if (examples.length === 0) throw new RangeError("collateSft: empty batch")
  const rows = examples.map((e) => sftLabels(e, options.maxLength))
  const length = rows.reduce((m, r) => Math.max(m, r.ids.length), 0)
  if (length < 2) throw new RangeError("collateSft: sequences need at least 2 tokens (a response token and its predecessor)")
  const b = examples.length
  const inputIds = new Int32Array(b * length).fill(options.padTokenId)
  const keyMask = new Uint8Array(b * length)
  const targets = new Int32Array(b * (length - 1)).fill(IGNORE_INDEX)
  let lossTokens = 0
  let inputTokens = 0
  rows.forEach(({ ids, labels }, r) => {
    ids.forEach((t, j) => {
      inputIds[r * length + j] = t
      keyMask[r * length + j] = 1
    })
    inputTokens += ids.length
    for (let j = 0; j + 1 < labels.length; j++) {
      const l = labels[j + 1]
      targets[r * (length - 1) + j] = l
      if (l !== IGNORE_INDEX) lossTokens += 1
    }
  })
  return { batch: b, length, inputIds, keyMask, targets, lossTokens, inputTokens, hasPadding: rows.some((r) => r.ids.length !== length) }
}

/** A stream id reserved for data shuffling, so shuffles never share Philox streams with model draws. */
const SHUFFLE_STREAM_HI = 0x73687566 // "shuf"

/** A permutation of 0 … n−1 that depends only on (seed, epoch): Fisher–Yates with Philox uniforms. */
export function shuffledOrder(n: number, seed: number, epoch: number): number[] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`shuffledOrder: seed must be a non-negative safe integer, got ${seed}`)
  const order = Array.from({ length: n }, (_, i) => i)
  const u = new Float32Array(n)
  fillRandom(u, "uniform", [seed >>> 0, Math.floor(seed / 4294967296) >>> 0], [epoch >>> 0, SHUFFLE_STREAM_HI], 0)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor(u[i] * (i + 1)))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  return order
}

/** The example indices of each micro-batch of an epoch (the last one may be smaller). */
export function epochBatches(n: number, batchSize: number, shuffle: { seed: number; epoch: number } | null): number[][] {
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new RangeError(`epochBatches: batchSize must be a positive integer, got ${batchSize}`)
  const order = shuffle === null ? Array.from({ length: n }, (_, i) => i) : shuffledOrder(n, shuffle.seed, shuffle.epoch)
  const out: number[][] = []
  for (let i = 0; i < n; i += batchSize) out.push(order.slice(i, i + batchSize))
  return out
}
