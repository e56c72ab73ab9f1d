/**
 * Training progress: the event the trainer emits after every optimizer step, and a console printer for it.
 */
export interface ProgressEvent {
  /** 1-based optimizer step just completed. */
  readonly step: number
  readonly totalSteps: number
  /** Fractional epoch reached (1.5 = halfway through the second epoch), as Hugging Face logs it. */
  readonly epoch: number
  /** Mean cross-entropy over the step's loss tokens (all micro-batches together). */
  readonly loss: number
  /** Rate used for this step. */
  readonly lr: number
  /** Global L2 norm of the gradient before clipping. */
  readonly gradNorm: number
  /** Loss tokens and real input tokens of this step. */
  readonly lossTokens: number
  readonly inputTokens: number
  /** Real input tokens per second, over the run so far. */
  readonly tokensPerSecond: number
  readonly elapsedMs: number
  /** Estimated time left, from the mean step time so far. */
  readonly etaMs: number
}

export type ProgressCallback = (event: ProgressEvent) => void

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "?"
  const s = Math.max(0, Math.round(ms / 1000))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const sec = s % 60
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`
  if (m > 0) return `${m}m${String(sec).padStart(2, "0")}s`
  return `${sec}s`
}

export function formatProgress(e: ProgressEvent): string {
  const width = String(e.totalSteps).length
  return [
    `step ${String(e.step).padStart(width)}/${e.totalSteps}`,
    `epoch ${e.epoch.toFixed(2)}`,
    `loss ${e.loss.toFixed(4)}`,
    `lr ${e.lr.toExponential(2)}`,
    `grad ${e.gradNorm.toFixed(3)}`,
    `${Math.round(e.tokensPerSecond)} tok/s`,
    `elapsed ${formatDuration(e.elapsedMs)}`,
    `ETA ${formatDuration(e.etaMs)}`,
  ].join(" | ")
}

export interface ConsoleProgressOptions {
  /** Print every n steps (and always the last). Default 1. */
  readonly every?: number
  /** Default: a line on stderr. */
  readonly write?: (line: string) => void
}

/** A ProgressCallback printing one line per `every` steps. */
export function consoleProgress(options: ConsoleProgressOptions = {}): ProgressCallback {
  const every = Math.max(1, options.every ?? 1)
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`))
  return (e) => {
    if (e.step % every === 0 || e.step === e.totalSteps || e.step === 1) write(formatProgress(e))
  }
}
