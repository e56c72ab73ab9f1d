import { Console, Effect } from "effect"
import { JsonFlag } from "./flags.js"

/**
 * What a command prints on stdout: a JSON document under `--json`, else text for people. Progress and notes go to
 * stderr (progress/), so `bdvax … --json | jq` always sees exactly one JSON value.
 */
export interface CommandResult {
  readonly json: unknown
  readonly text: string
}

/** JSON with NaN and ±Infinity as null (JSON has no spelling for them). */
export const toJson = (value: unknown): string =>
  JSON.stringify(value, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)

export const emit = (result: CommandResult) =>
  Effect.gen(function* () {
    const json = yield* JsonFlag
    yield* Console.log(json ? toJson(result.json) : result.text)
  })

/** A plain-text table with columns padded to their widest cell; numeric-looking cells are right-aligned. */
export function table(headers: readonly string[], rows: ReadonlyArray<ReadonlyArray<string>>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const numeric = (s: string) => /^[-+]?[\d.]+%?$|^–$/.test(s)
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (numeric(c) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd()
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

/** 0.8125 → "81.3%"; null/NaN → "–". */
export const percent = (x: number | null | undefined): string =>
  x === null || x === undefined || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(1)}%`
