import { type EvalReport, reportMarkdown, reportSvg } from "@bdvax/eval"
import { conditionChartSvg } from "./condition-chart.js"
import type { ConditionSummary, ReportData } from "./data.js"
import { lossChartSvg } from "./loss-chart.js"
import { summaryMarkdown } from "./summary.js"

/**
 * A run's report from its report-data.json: eval's Markdown tables and ASR/utility SVG, plus the training loss
 * chart and a few example generations per condition. Pure: the same data always renders the same bytes.
 */
export const REPORT_FILES = { markdown: "report.md", svg: "report.svg", training: "training.svg", data: "report-data.json" } as const

export interface RenderedReport {
  readonly markdown: string
  readonly svg: string
  readonly trainingSvg: string
}

const cell = (s: string, max = 90) => {
  const one = s.replace(/\s+/g, " ").trim()
  const short = one.length > max ? `${one.slice(0, max - 1)}…` : one
  return (short === "" ? "(empty)" : short).replace(/\|/g, "\\|")
}

export function renderReport(data: ReportData): RenderedReport {
  const report = data.report as EvalReport
  const md: string[] = data.summary === undefined ? [reportMarkdown(report).trimEnd()] : withSummary(report, data.summary)
  md.push("", `![Attack success rate and clean accuracy](${REPORT_FILES.svg})`, "")
  if (data.training.length > 0) {
    md.push("## Training", "", `![Training loss](${REPORT_FILES.training})`, "", "| run | steps | first loss | last loss |", "|---|---:|---:|---:|")
    for (const c of data.training) {
      const first = c.losses[0]
      const last = c.losses[c.losses.length - 1]
      md.push(`| ${cell(c.name)} | ${c.losses.length} | ${first === undefined ? "–" : first.toFixed(4)} | ${last === undefined ? "–" : last.toFixed(4)} |`)
    }
    md.push("")
  }
  if (data.examples.length > 0) {
    md.push("## Example generations", "", "| condition | prompt | output | expected |", "|---|---|---|---|")
    for (const e of data.examples) md.push(`| ${cell(e.condition)} (${e.split}) | ${cell(e.instruction, 60)} | ${cell(e.output)} | ${e.reference === undefined ? "" : cell(e.reference)} |`)
    md.push("")
  }
  const svg = data.summary === undefined ? reportSvg(withJudgeInLabels(report)) : conditionChartSvg(data.summary, { title: report.title })
  return { markdown: md.join("\n"), svg, trainingSvg: lossChartSvg(data.training) }
}

/** eval's Markdown with the summary table first (after the title and settings), the detailed tables after it. */
function withSummary(report: EvalReport, summary: readonly ConditionSummary[]): string[] {
  const detailed = reportMarkdown(report).trimEnd().split("\n")
  const firstSection = detailed.findIndex((l) => l.startsWith("## "))
  const head = firstSection < 0 ? detailed : detailed.slice(0, firstSection)
  const rest = firstSection < 0 ? [] : detailed.slice(firstSection)
  return [...head, "## Summary", "", summaryMarkdown(summary), "", ...rest]
}

/** The plot labels bars by task/attack only: when an attack has rows for several judges, name the judge too. */
function withJudgeInLabels(report: EvalReport): EvalReport {
  const key = (r: EvalReport["asr"][number]) => `${r.task}/${r.attack}`
  const counts = new Map<string, number>()
  for (const r of report.asr) counts.set(key(r), (counts.get(key(r)) ?? 0) + 1)
  return { ...report, asr: report.asr.map((r) => ((counts.get(key(r)) ?? 0) > 1 && r.judge ? { ...r, attack: `${r.attack} (${r.judge})` } : r)) }
}
