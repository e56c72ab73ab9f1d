import { AdamW, clipGradNorm, ops, Rng, type Tensor, tidy, valueAndGrad } from "@bdvax/core-tensor"
import { TrainingError } from "./errors.js"
import { type LoraAdapter, loraWeights } from "./lora.js"
import { forward, type LoraWeights, type Params } from "./model.js"
import type { ModelConfig } from "./model-config.js"
import type { ProgressCallback } from "./progress.js"
import { learningRate, type ScheduleKind, warmupStepsFor } from "./schedule.js"
import { collateSft, countedTokens, epochBatches, IGNORE_INDEX, type SftBatch, type SftExample } from "./sft-data.js"

// Custom objectives (SftOptions.loss) usually start from the token embeddings, e.g. to perturb them.

/**
 * Supervised finetuning with the semantics of Hugging Face's Trainer (transformers ≥ 4.46):
 *
 * - loss = Σ cross-entropy(logits[:, :−1], labels[:, 1:]) over response tokens / the number of response tokens
 *   in the whole optimizer step (num_items_in_batch), so gradient accumulation over micro-batches is exactly
 *   one large batch;
 * - one optimizer step per `gradAccumSteps` micro-batches (the last group of an epoch may be shorter);
 * - clip_grad_norm_(max_grad_norm) then AdamW at the scheduled rate (schedule.ts: step k uses multiplier(k));
 * - weight decay skips biases and norm weights (Trainer.get_decay_parameter_names) unless `noDecay` says else.
 *
 * Full mode trains a subset of the model's parameters (default all) in place; LoRA mode trains only the
 * adapter's weights in place and the base is a constant (nothing about it is recorded on the tape).
 */
export type TrainMode =
  | { readonly kind: "full"; readonly trainable?: readonly string[] | ((name: string) => boolean) }
  | { readonly kind: "lora"; readonly adapter: LoraAdapter }

export interface SftOptions {
  /** Default { kind: "full" } (every parameter). */
  readonly mode?: TrainMode
  readonly epochs?: number
  /** Stop after this many optimizer steps (overrides epochs, as Trainer's max_steps). */
  readonly maxSteps?: number
  /** Examples per micro-batch. */
  readonly batchSize: number
  readonly gradAccumSteps?: number
  readonly lr: number
  /** Default [0.9, 0.999]. */
  readonly betas?: readonly [number, number]
  /** Default 1e-8. */
  readonly eps?: number
  /** Decoupled weight decay, default 0 (TrainingArguments' default). */
  readonly weightDecay?: number
  /** Parameters exempt from weight decay; default `hfNoDecay` (biases and norms). */
  readonly noDecay?: (name: string) => boolean
  /** Default "linear" (TrainingArguments' default lr_scheduler_type). */
  readonly schedule?: ScheduleKind
  readonly warmupSteps?: number
  readonly warmupRatio?: number
  /** Clip the global gradient norm to this (default 1.0 as Trainer); 0 or Infinity disables clipping. */
  readonly maxGradNorm?: number
  /** Shuffling and LoRA dropout. Default 0. */
  readonly seed?: number
  /** Shuffle the example order each epoch (default true). */
  readonly shuffle?: boolean
  /** Default config.padTokenId, else the first eos token, else 0. */
  readonly padTokenId?: number
  /** Truncate prompt + response on the right. */
  readonly maxLength?: number
  readonly onProgress?: ProgressCallback
  /** Called (and awaited) after every `checkpointEvery` optimizer steps with the 1-based step. */
  readonly onCheckpoint?: (step: number) => void | Promise<void>
  readonly checkpointEvery?: number
  /**
   * A custom objective per micro-batch, replacing the response-token cross-entropy (default: `sftLossTensor`
   * with the context's params, LoRA weights and normalizer). It must return a scalar tensor differentiable in
   * the context's trainable tensors. Everything else — batching, accumulation, clipping, schedule, AdamW — is
   * unchanged, and the reported `loss` (SftResult.losses, progress events) is this objective's value summed over
   * the step's micro-batches, so scale per-batch terms by `batch.lossTokens / normalizer` to keep accumulation
   * equal to one large batch.
   */
  readonly loss?: (context: SftLossContext) => Tensor
}

/** What a custom training objective (SftOptions.loss) receives for one micro-batch. */
export interface SftLossContext {
  readonly config: ModelConfig
  /** Every model parameter: in full mode the trainable ones are the tensors being differentiated. */
  readonly params: Params
  /** LoRA mode: the adapter as forward() consumes it (training mode: dropout on). */
  readonly lora?: LoraWeights
  readonly batch: SftBatch
  /** Loss tokens of the whole optimizer step (all micro-batches): divide summed token losses by it. */
  readonly normalizer: number
}

export interface SftResult {
  /** Per optimizer step: mean loss over the step's loss tokens. */
  readonly losses: number[]
  /** Per step: global gradient norm before clipping. */
  readonly gradNorms: number[]
  /** Per step: the rate used. */
  readonly lrs: number[]
  readonly steps: number
  readonly inputTokens: number
  readonly elapsedMs: number
}

/** transformers' Trainer.get_decay_parameter_names: no decay for biases and normalisation weights. */
export const hfNoDecay = (name: string): boolean => /bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)/i.test(name)

export interface LossOptions {
  readonly lora?: LoraWeights
  /** Divide the summed cross-entropy by this (default: the batch's own loss tokens, i.e. the mean). */
  readonly normalizer?: number
}

/**
 * Σ CE(logits[:, :−1], targets) / normalizer for a collated batch, as a scalar tensor (differentiable in the
 * params or the LoRA weights). Pads are masked as keys; positions are 0 … T−1 (right padding).
 */
export function sftLossTensor(config: ModelConfig, params: Params, batch: SftBatch, options: LossOptions = {}): Tensor {
  const dev = params["model.embed_tokens.weight"].device
  const { batch: b, length: t } = batch
  return tidy(() => {
    const ids = dev.tensor(batch.inputIds, [b, t], "int32")
    const keyMask = batch.hasPadding ? dev.tensor(batch.keyMask, [b, t], "bool") : undefined
    const targets = dev.tensor(batch.targets, [b, t - 1], "int32")
    const { logits } = forward(config, params, ids, { keyMask, lora: options.lora })
    const shifted = ops.slice(logits, [0, 0, 0], [b, t - 1, config.vocabSize])
    const total = ops.softmaxCrossEntropy(shifted, targets, { ignoreIndex: IGNORE_INDEX, reduction: "sum" })
    return ops.div(total, options.normalizer ?? Math.max(1, batch.lossTokens))
  })
}

/** Mean response-token cross-entropy of examples (no gradients), batched by `batchSize`. */
export async function evaluateSft(
  config: ModelConfig,
  params: Params,
  examples: readonly SftExample[],
  options: { readonly batchSize?: number; readonly lora?: LoraWeights; readonly padTokenId?: number; readonly maxLength?: number } = {},
): Promise<number> {
  const pad = options.padTokenId ?? defaultPad(config)
  const bs = options.batchSize ?? 8
  let total = 0
  let tokens = 0
  for (let i = 0; i < examples.length; i += bs) {
    const batch = collateSft(examples.slice(i, i + bs), { padTokenId: pad, maxLength: options.maxLength })
    const loss = sftLossTensor(config, params, batch, { lora: options.lora, normalizer: 1 })
    total += await loss.item()
    loss.dispose()
    tokens += batch.lossTokens
  }
  return tokens === 0 ? NaN : total / tokens
}

const defaultPad = (config: ModelConfig): number => config.padTokenId ?? config.eosTokenId[0] ?? 0

function trainableRecord(params: Params, mode: TrainMode): { trainable: Params; frozen: Params } {
  if (mode.kind === "lora") return { trainable: { ...mode.adapter.weights }, frozen: params }
  const names = Object.keys(params)
  const sel = mode.trainable
  let chosen: string[]
  if (sel === undefined) chosen = names
  else if (typeof sel === "function") chosen = names.filter(sel)
  else {
    for (const n of sel) if (!(n in params)) throw new RangeError(`trainSft: trainable parameter ${n} is not in the model`)
    chosen = [...sel]
  }
  if (chosen.length === 0) throw new RangeError("trainSft: no trainable parameters selected")
  const trainable: Params = {}
  const frozen: Params = {}
  const chosenSet = new Set(chosen)
  for (const n of names) (chosenSet.has(n) ? trainable : frozen)[n] = params[n]
  return { trainable, frozen }
}

function globalNorm(grads: Params): Tensor {
  return tidy(() => {
    let sq: Tensor | null = null
    for (const g of Object.values(grads)) {
      const s = ops.sum(ops.mul(g, g))
      sq = sq === null ? s : ops.add(sq, s)
    }
    return ops.sqrt(sq!)
  })
}

function disposeAll(...records: Array<Params | null | undefined>): void {
  const seen = new Set<Tensor>()
  for (const r of records) if (r) for (const t of Object.values(r)) if (!seen.has(t)) (seen.add(t), t.dispose())
}

export async function trainSft(config: ModelConfig, params: Params, examples: readonly SftExample[], options: SftOptions): Promise<SftResult> {
  const mode = options.mode ?? { kind: "full" }
  const accum = options.gradAccumSteps ?? 1
  const epochs = options.epochs ?? 1
  const seed = options.seed ?? 0
  const pad = options.padTokenId ?? defaultPad(config)
  const maxGradNorm = options.maxGradNorm ?? 1
  const [beta1, beta2] = options.betas ?? [0.9, 0.999]
  const noDecay = options.noDecay ?? hfNoDecay
  if (examples.length === 0) throw new TrainingError({ step: 0, message: "trainSft: no examples" })
  if (!Number.isInteger(accum) || accum < 1) throw new TrainingError({ step: 0, message: `trainSft: gradAccumSteps must be a positive integer, got ${accum}` })
  if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw new TrainingError({ step: 0, message: `trainSft: batchSize must be a positive integer, got ${options.batchSize}` })
  if (!(options.lr >= 0)) throw new TrainingError({ step: 0, message: `trainSft: lr must be ≥ 0, got ${options.lr}` })
  examples.forEach((e, i) => {
    if (countedTokens(e, options.maxLength) === 0)
      throw new TrainingError({ step: 0, message: `trainSft: example ${i} has no response token to learn (empty response, or truncated away by maxLength)` })
  })

  const microBatches = Math.ceil(examples.length / options.batchSize)
  const stepsPerEpoch = Math.ceil(microBatches / accum)
  const totalSteps = options.maxSteps ?? stepsPerEpoch * epochs
  const schedule = {
    kind: options.schedule ?? "linear",
    totalSteps,
    warmupSteps: warmupStepsFor(totalSteps, options.warmupSteps, options.warmupRatio),
  } as const

  const { trainable, frozen } = trainableRecord(params, mode)
  const decayNames = Object.keys(trainable).filter((n) => !noDecay(n))
  const plainNames = Object.keys(trainable).filter((n) => noDecay(n))
  const pick = (r: Params, names: string[]) => Object.fromEntries(names.map((n) => [n, r[n]])) as Params
  const adamOptions = { lr: options.lr, beta1, beta2, eps: options.eps ?? 1e-8 }
  const optDecay = new AdamW({ ...adamOptions, weightDecay: options.weightDecay ?? 0 })
  const optPlain = new AdamW({ ...adamOptions, weightDecay: 0 })
  const dropoutRng = new Rng(seed)

  const objective =
    options.loss ?? ((ctx: SftLossContext) => sftLossTensor(ctx.config, ctx.params, ctx.batch, { lora: ctx.lora, normalizer: ctx.normalizer }))
  const lossFn = (weights: Params, batch: SftBatch, normalizer: number): Tensor => {
    if (mode.kind === "lora") {
      const lora = loraWeights(mode.adapter, { train: true, rng: dropoutRng }, weights)
      return objective({ config, params: frozen, lora, batch, normalizer })
    }
    return objective({ config, params: { ...frozen, ...weights }, batch, normalizer })
  }
  const vg = valueAndGrad(lossFn)

  const losses: number[] = []
  const gradNorms: number[] = []
  const lrs: number[] = []
  let inputTokens = 0
  const t0 = performance.now()
  let step = 0
  try {
    for (let epoch = 0; step < totalSteps; epoch++) {
      const batches = epochBatches(examples.length, options.batchSize, options.shuffle === false ? null : { seed, epoch })
      for (let g = 0; g < batches.length && step < totalSteps; g += accum) {
        const group = batches.slice(g, g + accum).map((idx) =>
          collateSft(
            idx.map((i) => examples[i]),
            { padTokenId: pad, maxLength: options.maxLength },
          ),
        )
        const lossTokens = group.reduce((n, b) => n + b.lossTokens, 0)
        const stepInputTokens = group.reduce((n, b) => n + b.inputTokens, 0)
        let grads: Params | null = null
        let lossSum: Tensor | null = null
        let clipped: Params | null = null
        let norm: Tensor | null = null
        try {
          for (const batch of group) {
            const [value, gs] = vg(trainable, batch, lossTokens)
            if (grads === null) {
              grads = gs
              lossSum = value
            } else {
              const prev: Params = grads
              grads = tidy(() => Object.fromEntries(Object.keys(prev).map((n) => [n, ops.add(prev[n], gs[n])])) as Params)
              disposeAll(prev, gs)
              const prevLoss: Tensor = lossSum!
              lossSum = ops.add(prevLoss, value)
              prevLoss.dispose()
              value.dispose()
            }
          }
          const clipping = maxGradNorm > 0 && Number.isFinite(maxGradNorm)
          if (clipping) ({ grads: clipped, norm } = clipGradNorm(grads!, maxGradNorm))
          else norm = globalNorm(grads!)
          const stepNo = step + 1
          const loss = await lossSum!.item()
          const gradNorm = await norm!.item()
          if (!Number.isFinite(loss)) throw new TrainingError({ step: stepNo, message: `training diverged at step ${stepNo}: loss is ${loss}` })
          if (!Number.isFinite(gradNorm)) throw new TrainingError({ step: stepNo, message: `training diverged at step ${stepNo}: gradient norm is ${gradNorm} (loss ${loss})` })
          const lr = learningRate(options.lr, step, schedule)
          const update = clipped ?? grads!
          if (decayNames.length > 0) optDecay.step(pick(trainable, decayNames), pick(update, decayNames), lr)
          if (plainNames.length > 0) optPlain.step(pick(trainable, plainNames), pick(update, plainNames), lr)
          step = stepNo
          losses.push(loss)
          gradNorms.push(gradNorm)
          lrs.push(lr)
          inputTokens += stepInputTokens
          const elapsedMs = performance.now() - t0
          options.onProgress?.({
            step,
            totalSteps,
            epoch: epoch + Math.min(1, (g + group.length) / batches.length),
            loss,
            lr,
            gradNorm,
            lossTokens,
            inputTokens: stepInputTokens,
            tokensPerSecond: elapsedMs > 0 ? (inputTokens * 1000) / elapsedMs : 0,
            elapsedMs,
            etaMs: (elapsedMs / step) * (totalSteps - step),
          })
        } finally {
          disposeAll(grads, clipped)
          lossSum?.dispose()
          norm?.dispose()
        }
        if (options.onCheckpoint && options.checkpointEvery && step % options.checkpointEvery === 0) await options.onCheckpoint(step)
        // On the CPU backend every read resolves at once, so a long run would never give the event loop a turn
        // (timers, progress redraws, a test runner's heartbeats): yield once per optimizer step, which costs microseconds.
        await yieldToEventLoop()
      }
    }
  } finally {
    optDecay.dispose()
    optPlain.dispose()
  }
  return { losses, gradNorms, lrs, steps: step, inputTokens, elapsedMs: performance.now() - t0 }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
