import type { ConditionSummary } from "./data.js"

/**
 * The summary table of a run — one row per condition: ASR (keyword judge, triggered prompts), false-trigger rate
 * (the same judge on clean prompts), clean exact match, and the defense's wall time — as Markdown (report.md)
 * and as the cells of a text table (what `bdvax demo` prints).
 */
export const SUMMARY_HEADERS = ["condition", "role", "ASR", "false trigger", "clean exact match", "wall time"] as const

const pct = (x: number | null) => (x === null || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(1)}%`)

/** 3.04 → "3.0 s"; 125 → "2 min 5 s"; null → "–". */
export function formatSeconds(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return "–"
  if (s < 60) return `${s.toFixed(1)} s`
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`
}

export const summaryCells = (r: ConditionSummary): string[] => [
  r.draws > 1 ? `${r.name} (mean of ${r.draws})` : r.name,
  r.role,
  pct(r.asr),
  pct(r.falseTrigger),
  pct(r.cleanAccuracy),
  formatSeconds(r.wallSeconds),
]

const md = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ")

export function summaryMarkdown(rows: readonly ConditionSummary[]): string {
  const head = [...SUMMARY_HEADERS, "note"]
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i >= 2 && i <= 5 ? "---:" : "---")).join("|")}|`]
  for (const r of rows) lines.push(`| ${[...summaryCells(r), r.note ?? ""].map(md).join(" | ")} |`)
  return lines.join("\n")
}
