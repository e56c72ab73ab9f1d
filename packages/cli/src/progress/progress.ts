import { type ProgressCallback } from "@bdvax/llm"
import { Context, Effect, Layer } from "effect"
import { type BarState, formatBar, formatLine } from "./format.js"

/**
 * The Progress service: every long step (training, generation, evaluation) reports through it, so the same
 * pipeline draws a live bar on a terminal and writes sparse, grep-able lines under CI or into a log file.
 * Everything goes to stderr; stdout is kept for results (`--json`).
 *
 *  - "tty":   one bar redrawn in place (at most every 80 ms), notes printed above it;
 *  - "lines": a line at the first update, each further 10% of the work (or every 15 s), and at the end;
 *  - "off":   notes only.
 *
 * Bars are plain objects with synchronous methods because they are fed from library callbacks (llm's trainer
 * `onProgress`, eval's `onProgress`) that run outside Effect.
 */
export type ProgressMode = "tty" | "lines" | "off"

export interface ProgressSink {
  readonly write: (text: string) => void
  readonly columns: () => number
}

export interface Metrics {
  readonly loss?: number
  readonly tokensPerSecond?: number
  readonly etaMs?: number
}

export interface ProgressBar {
  /** `done` of `total` units (pass a total when it was unknown at the start). */
  readonly update: (done: number, total?: number, metrics?: Metrics) => void
  /** llm's training progress (step/total, loss, tokens/s, ETA). */
  readonly onTraining: ProgressCallback
  /** eval's `onProgress(done, total)`. */
  readonly onItems: (done: number, total: number) => void
  readonly finish: () => void
}

export interface ProgressShape {
  readonly mode: ProgressMode
  /** A status line (stage started, reused, finished). */
  readonly note: (line: string) => Effect.Effect<void>
  readonly bar: (label: string, unit: string, total?: number) => ProgressBar
}

const LINE_EVERY_MS = 15_000
const REDRAW_MS = 80

export function makeProgress(mode: ProgressMode, sink: ProgressSink, now: () => number = () => performance.now()): ProgressShape {
  let drawn: (() => string) | null = null // the bar currently on the terminal's last line
  const clear = () => {
    if (drawn !== null) sink.write("\r\x1b[2K")
  }
  const note = (line: string) =>
    Effect.sync(() => {
      if (mode === "tty") {
        clear()
        sink.write(`${line}\n`)
        if (drawn !== null) sink.write(drawn())
      } else sink.write(`${line}\n`)
    })

  const bar = (label: string, unit: string, total0 = 0): ProgressBar => {
    const start = now()
    let state: BarState = { label, unit, done: 0, total: total0, elapsedMs: 0 }
    let lastDraw = -Infinity
    let lastBucket = -1
    let lastLine = -Infinity
    let finished = false
    const render = () => formatBar(state, Math.max(40, sink.columns()))
    const show = (force: boolean) => {
      const t = now()
      if (mode === "tty") {
        if (!force && t - lastDraw < REDRAW_MS) return
        lastDraw = t
        drawn = render
        sink.write(`\r\x1b[2K${render()}`)
      } else if (mode === "lines") {
        const bucket = state.total > 0 ? Math.floor((10 * state.done) / state.total) : -1
        if (force || bucket !== lastBucket || t - lastLine >= LINE_EVERY_MS) {
          lastBucket = bucket
          lastLine = t
          sink.write(`${formatLine(state)}\n`)
        }
      }
    }
    const update = (done: number, total?: number, m: Metrics = {}) => {
      if (finished) return
      state = { ...state, ...m, done, total: total ?? state.total, elapsedMs: now() - start }
      show(state.total > 0 && done >= state.total)
    }
    return {
      update,
      onTraining: (e) => update(e.step, e.totalSteps, { loss: e.loss, tokensPerSecond: e.tokensPerSecond, etaMs: e.etaMs }),
      onItems: (done, total) => update(done, total),
      finish: () => {
        if (finished) return
        finished = true
        state = { ...state, elapsedMs: now() - start, etaMs: 0 }
        if (mode === "tty") {
          sink.write(`\r\x1b[2K${formatLine(state, true)}\n`)
          if (drawn === render) drawn = null
        } else if (mode === "lines") sink.write(`${formatLine(state, true)}\n`)
      },
    }
  }
  return { mode, note, bar }
}

export const stderrSink: ProgressSink = {
  write: (text) => void process.stderr.write(text),
  columns: () => process.stderr.columns || 100,
}

/** "tty" on an interactive stderr outside CI, else "lines"; BDVAX_PROGRESS=tty|lines|off overrides. */
export function detectProgressMode(env: NodeJS.ProcessEnv = process.env, isTTY = process.stderr.isTTY === true): ProgressMode {
  const forced = env.BDVAX_PROGRESS
  if (forced === "tty" || forced === "lines" || forced === "off") return forced
  return isTTY && !env.CI ? "tty" : "lines"
}

export class Progress extends Context.Service<Progress, ProgressShape>()("@bdvax/cli/Progress") {
  /** Progress on stderr, mode detected from the terminal and BDVAX_PROGRESS. */
  static readonly layer: Layer.Layer<Progress> = Layer.sync(Progress, () => makeProgress(detectProgressMode(), stderrSink))
  /** Progress into any sink (tests, log files). */
  static layerWith(mode: ProgressMode, sink: ProgressSink): Layer.Layer<Progress> {
    return Layer.succeed(Progress, makeProgress(mode, sink))
  }
}

/** Run `use` with a bar that is finished however `use` ends. */
export const withBar = <A, E, R>(label: string, unit: string, use: (bar: ProgressBar) => Effect.Effect<A, E, R>, total?: number) =>
  Effect.gen(function* () {
    const progress = yield* Progress
    const bar = progress.bar(label, unit, total)
    return yield* use(bar).pipe(Effect.ensuring(Effect.sync(() => bar.finish())))
  })

/** Print a status line through the Progress service. */
export const note = (line: string): Effect.Effect<void, never, Progress> =>
  Effect.gen(function* () {
    const progress = yield* Progress
    yield* progress.note(line)
  })
