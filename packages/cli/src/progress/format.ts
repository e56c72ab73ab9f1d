import { formatDuration } from "@bdvax/llm"

/**
 * Progress text, as pure functions of a bar's state: a redrawn bar for terminals and one-line records for logs
 * and CI. Rates are tokens/s when the work reports tokens (training), else items/s (generation, evaluation).
 */
export interface BarState {
  readonly label: string
  /** What is counted: "step", "prompt", … */
  readonly unit: string
  readonly done: number
  /** 0 while unknown. */
  readonly total: number
  readonly elapsedMs: number
  readonly loss?: number
  readonly tokensPerSecond?: number
  /** An estimate from the worker itself (the trainer's); otherwise derived from the mean rate so far. */
  readonly etaMs?: number
}

export function etaMs(s: BarState): number {
  if (s.etaMs !== undefined) return s.etaMs
  if (s.done <= 0 || s.total <= 0) return Number.NaN
  return (s.elapsedMs / s.done) * Math.max(0, s.total - s.done)
}

function rate(s: BarState): string | null {
  if (s.tokensPerSecond !== undefined) return `${Math.round(s.tokensPerSecond)} tok/s`
  if (s.done <= 0 || s.elapsedMs <= 0) return null
  const perSecond = (s.done * 1000) / s.elapsedMs
  return `${perSecond >= 10 ? Math.round(perSecond) : perSecond.toFixed(1)} ${s.unit}s/s`
}

function metrics(s: BarState, finished: boolean): string[] {
  const out: string[] = []
  if (s.loss !== undefined) out.push(`loss ${s.loss.toFixed(4)}`)
  const r = rate(s)
  if (r !== null) out.push(r)
  out.push(finished ? `took ${formatDuration(s.elapsedMs)}` : `ETA ${formatDuration(etaMs(s))}`)
  return out
}

const count = (s: BarState): string => (s.total > 0 ? `${s.done}/${s.total}` : `${s.done}`)

/** The terminal bar, fitted to `columns`: `plant [#########.........] 12/40 · loss 1.2345 · 812 tok/s · ETA 5s`. */
export function formatBar(s: BarState, columns: number): string {
  const tail = ` ${count(s)} · ${metrics(s, false).join(" · ")}`
  const room = columns - s.label.length - tail.length - 4
  const width = Math.max(0, Math.min(30, room))
  let bar = ""
  if (width >= 5) {
    const filled = s.total > 0 ? Math.round((width * Math.min(s.done, s.total)) / s.total) : 0
    bar = ` [${"#".repeat(filled)}${".".repeat(width - filled)}]`
  }
  const line = `${s.label}${bar}${tail}`
  return line.length > columns ? line.slice(0, Math.max(0, columns - 1)) : line
}

/** One log line: `[plant] step 12/40 (30%) · loss 1.2345 · 812 tok/s · ETA 5s`. */
export function formatLine(s: BarState, finished = false): string {
  const pct = s.total > 0 ? ` (${Math.floor((100 * s.done) / s.total)}%)` : ""
  return `[${s.label}] ${s.unit} ${count(s)}${pct} · ${metrics(s, finished).join(" · ")}`
}
