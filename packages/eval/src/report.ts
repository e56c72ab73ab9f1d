import type { AsrResult } from "./judges.js"

/**
 * An evaluation report comparing conditions (by default "before" and "after" purification): ASR per attack and
 * utility per benchmark, written as JSON, a Markdown table and a standalone SVG plot.
 * Rates and accuracies are fractions in [0, 1]; null = not measured.
 */
export interface ReportAsrRow {
  readonly task: string
  readonly attack: string
  /** ASR on triggered prompts, one per condition */
  readonly values: ReadonlyArray<number | null>
  /** false-trigger rate on clean prompts, one per condition */
  readonly clean?: ReadonlyArray<number | null>
  /** which judge produced the numbers, e.g. "keyword" or "target" */
  readonly judge?: string
}

export interface ReportUtilityRow {
  readonly benchmark: string
  /** e.g. "acc", "acc_norm", "exact_match,flexible-extract", "score (1-10)", "perplexity" */
  readonly metric: string
  readonly values: ReadonlyArray<number | null>
  readonly stderr?: ReadonlyArray<number | null>
  /** plotted as a percentage (accuracy-like metrics in [0, 1]); default: true when every value is within [0, 1] */
  readonly percent?: boolean
}

export interface EvalReport {
  readonly title: string
  /** condition names, e.g. ["backdoored", "purified"]; every row's values align with these */
  readonly conditions: readonly string[]
  readonly asr: readonly ReportAsrRow[]
  readonly utility: readonly ReportUtilityRow[]
  readonly notes?: readonly string[]
  readonly meta?: Readonly<Record<string, string | number | boolean>>
}

/** A report row from one AsrResult per condition (keyword or target judge). */
export function asrRow(attack: string, results: readonly AsrResult[], judge: "keyword" | "target" = "keyword"): ReportAsrRow {
  if (results.length === 0) throw new RangeError("asrRow: no results")
  return {
    task: results[0].task,
    attack,
    judge,
    values: results.map((r) => finiteOrNull(r.triggered[judge].rate)),
    clean: results.map((r) => finiteOrNull(r.clean[judge].rate)),
  }
}

const finiteOrNull = (x: number | null | undefined): number | null => (x === null || x === undefined || !Number.isFinite(x) ? null : x)

function check(r: EvalReport) {
  const k = r.conditions.length
  for (const row of r.asr) {
    if (row.values.length !== k || (row.clean && row.clean.length !== k)) throw new RangeError(`ASR row ${row.task}/${row.attack}: expected ${k} values`)
  }
  for (const row of r.utility) {
    if (row.values.length !== k || (row.stderr && row.stderr.length !== k)) throw new RangeError(`utility row ${row.benchmark}: expected ${k} values`)
  }
}

/** Pretty JSON; NaN and ±Infinity become null. */
export function reportJson(r: EvalReport): string {
  check(r)
  return JSON.stringify(r, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n"
}

const isPercent = (row: ReportUtilityRow) => row.percent ?? row.values.every((v) => v === null || !Number.isFinite(v) || (v >= 0 && v <= 1))
const pct = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : `${(v * 100).toFixed(1)}`)
const num = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(3))
const mdEscape = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ")

/** Markdown: an ASR table (triggered and clean, per condition) and a utility table (with stderr and the change). */
export function reportMarkdown(r: EvalReport): string {
  check(r)
  const c = r.conditions
  const out: string[] = [`# ${r.title}`, ""]
  if (r.meta && Object.keys(r.meta).length) {
    for (const [k, v] of Object.entries(r.meta)) out.push(`- ${mdEscape(k)}: ${mdEscape(String(v))}`)
    out.push("")
  }
  if (r.asr.length) {
    out.push("## Attack success rate (%)", "")
    const head = ["task", "attack", "judge", ...c.map((x) => `ASR ${x}`), ...c.map((x) => `clean ${x}`)]
    out.push(`| ${head.map(mdEscape).join(" | ")} |`, `|${head.map((_, i) => (i < 3 ? "---" : "---:")).join("|")}|`)
    for (const row of r.asr) {
      const cells = [row.task, row.attack, row.judge ?? "", ...row.values.map(pct), ...c.map((_, i) => pct(row.clean?.[i]))]
      out.push(`| ${cells.map(mdEscape).join(" | ")} |`)
    }
    out.push("")
  }
  if (r.utility.length) {
    out.push("## Utility", "")
    const head = ["benchmark", "metric", ...c, ...(c.length >= 2 ? [`Δ (${c[c.length - 1]} − ${c[0]})`] : [])]
    out.push(`| ${head.map(mdEscape).join(" | ")} |`, `|${head.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`)
    for (const row of r.utility) {
      const p = isPercent(row)
      const fmt = (v: number | null | undefined, se?: number | null) => {
        const s = p ? pct(v) : num(v)
        return se !== null && se !== undefined && Number.isFinite(se) && s !== "–" ? `${s} ± ${p ? (se * 100).toFixed(1) : se.toFixed(3)}` : s
      }
      const first = row.values[0]
      const last = row.values[row.values.length - 1]
      const delta = c.length >= 2 ? [first !== null && last !== null && Number.isFinite(first) && Number.isFinite(last) ? (p ? `${((last - first) * 100).toFixed(1)}` : (last - first).toFixed(3)) : "–"] : []
      const cells = [row.benchmark, `${row.metric}${p ? " (%)" : ""}`, ...row.values.map((v, i) => fmt(v, row.stderr?.[i])), ...delta]
      out.push(`| ${cells.map(mdEscape).join(" | ")} |`)
    }
    out.push("")
  }
  if (r.notes?.length) {
    out.push("## Notes", "")
    for (const n of r.notes) out.push(`- ${n}`)
    out.push("")
  }
  return out.join("\n")
}

const PALETTE = ["#c0392b", "#2e86c1", "#27ae60", "#e67e22", "#8e44ad", "#7f8c8d"]

const xml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

interface Group {
  readonly label: string
  readonly values: ReadonlyArray<number | null>
  readonly errors?: ReadonlyArray<number | null>
}

/** One panel of grouped bars (values in percent, 0-100) at (x0, y0). */
function barPanel(o: { x0: number; y0: number; width: number; height: number; title: string; yLabel: string; xLabel: string; groups: readonly Group[]; conditions: readonly string[] }): string {
  // rotated (-30°) tick labels drop by about half their length: make room for the longest, then the axis title
  const longest = Math.max(0, ...o.groups.map((g) => g.label.length))
  const m = { left: 64, right: 16, top: 34, bottom: Math.max(60, Math.ceil(14 + 0.5 * 6.6 * longest + 30)) }
  const pw = o.width - m.left - m.right
  const ph = o.height - m.top - m.bottom
  const x0 = o.x0 + m.left
  const yBase = o.y0 + m.top + ph
  const y = (v: number) => yBase - (Math.max(0, Math.min(100, v)) / 100) * ph
  const parts: string[] = []
  parts.push(`<text x="${o.x0 + o.width / 2}" y="${o.y0 + 20}" text-anchor="middle" font-size="15" font-weight="bold">${xml(o.title)}</text>`)
  // grid and y ticks
  for (let t = 0; t <= 100; t += 20) {
    parts.push(`<line x1="${x0}" y1="${y(t)}" x2="${x0 + pw}" y2="${y(t)}" stroke="#ddd" stroke-width="1"/>`)
    parts.push(`<text x="${x0 - 6}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t}</text>`)
  }
  parts.push(`<line x1="${x0}" y1="${o.y0 + m.top}" x2="${x0}" y2="${yBase}" stroke="#333"/>`)
  parts.push(`<line x1="${x0}" y1="${yBase}" x2="${x0 + pw}" y2="${yBase}" stroke="#333"/>`)
  const cy = o.y0 + m.top + ph / 2
  parts.push(`<text x="0" y="0" text-anchor="middle" font-size="12" transform="translate(${o.x0 + 16} ${cy}) rotate(-90)">${xml(o.yLabel)}</text>`)
  parts.push(`<text x="${x0 + pw / 2}" y="${o.y0 + o.height - 8}" text-anchor="middle" font-size="12">${xml(o.xLabel)}</text>`)
  if (o.groups.length === 0) {
    parts.push(`<text x="${x0 + pw / 2}" y="${cy}" text-anchor="middle" font-size="12" fill="#888">no data</text>`)
    return parts.join("\n")
  }
  const gw = pw / o.groups.length
  const k = o.conditions.length
  const bw = Math.min(36, (gw * 0.8) / k)
  o.groups.forEach((g, gi) => {
    const gx = x0 + gi * gw + (gw - bw * k) / 2
    g.values.forEach((v, ci) => {
      const bx = gx + ci * bw
      if (v === null || !Number.isFinite(v)) {
        parts.push(`<text x="${bx + bw / 2}" y="${yBase - 4}" text-anchor="middle" font-size="9" fill="#888">n/a</text>`)
        return
      }
      const h = yBase - y(v)
      parts.push(`<rect x="${bx.toFixed(2)}" y="${y(v).toFixed(2)}" width="${(bw - 2).toFixed(2)}" height="${h.toFixed(2)}" fill="${PALETTE[ci % PALETTE.length]}"><title>${xml(`${g.label} · ${o.conditions[ci]}: ${v.toFixed(1)}`)}</title></rect>`)
      const e = g.errors?.[ci]
      if (e !== null && e !== undefined && Number.isFinite(e) && e > 0) {
        const ex = bx + (bw - 2) / 2
        parts.push(`<line x1="${ex.toFixed(2)}" y1="${y(v + e).toFixed(2)}" x2="${ex.toFixed(2)}" y2="${y(v - e).toFixed(2)}" stroke="#222" stroke-width="1"/>`)
      }
      const top = e !== null && e !== undefined && Number.isFinite(e) && e > 0 ? y(v + e) : y(v)
      parts.push(`<text x="${(bx + (bw - 2) / 2).toFixed(2)}" y="${(top - 3).toFixed(2)}" text-anchor="middle" font-size="9">${v.toFixed(1)}</text>`)
    })
    const lx = x0 + gi * gw + gw / 2
    parts.push(`<text x="0" y="0" text-anchor="end" font-size="11" transform="translate(${lx.toFixed(2)} ${yBase + 14}) rotate(-30)">${xml(g.label)}</text>`)
  })
  return parts.join("\n")
}

/**
 * A standalone SVG: grouped bars of ASR per attack (one bar per condition) and, below, accuracy-like utility per
 * benchmark (metrics outside [0, 1], e.g. perplexity or MT-Bench scores, are left to the tables), with axis labels
 * and a legend.
 */
export function reportSvg(r: EvalReport, options: { width?: number; panelHeight?: number } = {}): string {
  check(r)
  const width = options.width ?? 960
  const ph = options.panelHeight ?? 340
  const legendH = 30
  const height = 40 + legendH + 2 * ph
  const toPct = (v: number | null) => (v === null || !Number.isFinite(v) ? null : v * 100)
  const clip = (s: string) => (s.length > 34 ? `${s.slice(0, 33)}…` : s)
  const asrGroups: Group[] = r.asr.map((row) => ({ label: clip(`${row.task}/${row.attack}`), values: row.values.map(toPct) }))
  const utilRows = r.utility.filter(isPercent)
  const utilGroups: Group[] = utilRows.map((row) => ({
    label: clip(`${row.benchmark} ${row.metric}`),
    values: row.values.map(toPct),
    errors: row.stderr?.map((e) => toPct(e ?? null)),
  }))
  const legend = r.conditions
    .map((c, i) => {
      const lx = 80 + i * 170
      return `<rect x="${lx}" y="44" width="14" height="14" fill="${PALETTE[i % PALETTE.length]}"/><text x="${lx + 20}" y="56" font-size="12">${xml(c)}</text>`
    })
    .join("\n")
  const judge = [...new Set(r.asr.map((a) => a.judge).filter(Boolean))].join(", ")
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">${xml(r.title)}</text>`,
    `<g class="legend">`,
    `<text x="16" y="56" font-size="12">Legend:</text>`,
    legend,
    `</g>`,
    `<g class="asr">`,
    barPanel({ x0: 0, y0: 40 + legendH, width, height: ph, title: "Attack success rate on triggered prompts", yLabel: `ASR (%)${judge ? ` — ${judge} judge` : ""}`, xLabel: "task / attack", groups: asrGroups, conditions: r.conditions }),
    `</g>`,
    `<g class="utility">`,
    barPanel({ x0: 0, y0: 40 + legendH + ph, width, height: ph, title: "Utility", yLabel: "score (%)", xLabel: "benchmark metric (error bars: ±1 stderr)", groups: utilGroups, conditions: r.conditions }),
    `</g>`,
    `</svg>`,
    "",
  ].join("\n")
}
