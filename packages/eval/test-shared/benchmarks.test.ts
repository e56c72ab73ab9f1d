import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import {
  loadArc, loadBoolq, loadGsm8k, loadHellaswag, loadMmlu, loadOpenBookQa, loadPiqa, loadRte, loadSharedMc, loadWinogrande,
  MMLU_CATEGORIES, mmluFiles, parseHellaswag, parseLabelList, parseJsonLines, type McItem,
} from "../src/index.js"
import { countBy, P, ROOT } from "./data-root.js"

/** Every item is well formed: 2+ options, the gold in range, and lm-eval's " " delimiter on every continuation. */
function wellFormed(items: readonly McItem[]) {
  for (const it of items) {
    expect(it.options.length).toBeGreaterThanOrEqual(2)
    expect(it.label).toBeGreaterThanOrEqual(0)
    expect(it.label).toBeLessThan(it.options.length)
    for (const o of it.options) expect(o.continuation.startsWith(" ")).toBe(true)
  }
  expect(new Set(items.map((i) => i.id)).size).toBe(items.length)
}

describe("multiple-choice benchmarks over the full shared files (counts and labels as in shared/data/README.md)", () => {
  it("ARC-Challenge: 1172; 22 numeric keys; 7 items with 3 or 5 choices", async () => {
    const items = await loadArc(P.arcChallenge)
    expect(items.length).toBe(1172)
    wellFormed(items)
    const raw = parseJsonLines(readFileSync(P.arcChallenge, "utf8"), P.arcChallenge).map((l) => l.value as { answerKey: string })
    expect(raw.filter((r) => /^[0-9]$/.test(r.answerKey)).length).toBe(22)
    expect(items.filter((i) => i.options.length !== 4).length).toBe(7)
    expect(items.every((i) => i.options[0].context.startsWith("Question: ") && i.options[0].context.endsWith("\nAnswer:"))).toBe(true)
  })

  it("ARC-Easy: 2376; 97 numeric keys; 11 items with 3 or 5 choices", async () => {
    const items = await loadArc(P.arcEasy)
    expect(items.length).toBe(2376)
    wellFormed(items)
    const raw = parseJsonLines(readFileSync(P.arcEasy, "utf8"), P.arcEasy).map((l) => l.value as { answerKey: string })
    expect(raw.filter((r) => /^[0-9]$/.test(r.answerKey)).length).toBe(97)
    expect(items.filter((i) => i.options.length !== 4).length).toBe(11)
    expect(new Set(items.map((i) => i.options.length))).toEqual(new Set([3, 4, 5]))
  })

  it("BoolQ: 3270; true (yes = 1) 2033, false 1237", async () => {
    const items = await loadBoolq(P.boolq)
    expect(items.length).toBe(3270)
    wellFormed(items)
    expect(countBy(items, (i) => i.label)).toEqual({ 1: 2033, 0: 1237 })
    expect(items[0].options[0].context).toMatch(/\nQuestion: .*\?\nAnswer:$/)
  })

  it("HellaSwag: 10042 across 3 parts (5331 + 3525 + 1186), idx 0-10041, labels 2515/2485/2584/2458", async () => {
    const parts = await Promise.all(P.hellaswag.map((p) => loadHellaswag(p)))
    expect(parts.map((p) => p.length)).toEqual([5331, 3525, 1186])
    const items = await loadHellaswag(P.hellaswag)
    expect(items.length).toBe(10042)
    wellFormed(items)
    expect(items.map((i) => i.id)).toEqual(Array.from({ length: 10042 }, (_, i) => `hellaswag-${i}`))
    expect(countBy(items, (i) => i.label)).toEqual({ 0: 2515, 1: 2485, 2: 2584, 3: 2458 })
    expect(items.every((i) => i.options.length === 4)).toBe(true)
    // the documented deviation: ctx_b is not capitalised in this copy
    expect(items[0].options[0].context).toBe("Roof shingle removal: A man is sitting on a roof. he")
  })

  it("HellaSwag raw 500-item sample vs the converted set: the known whitespace deviation from lm-eval's preprocess", async () => {
    const full = await loadHellaswag(P.hellaswag)
    const sample = parseHellaswag(readFileSync(P.hellaswagRawSample, "utf8"), P.hellaswagRawSample)
    expect(sample.length).toBe(500)
    const ws = (s: string) => s.replace(/\s+/g, " ").trim()
    const key = (i: McItem) => i.options.map((o) => ws(o.choice!)).join("|")
    const byKey = new Map(full.map((i) => [key(i), i]))
    let found = 0
    let differing = 0
    for (const s of sample) {
      const f = byKey.get(key(s))
      if (!f) continue
      found++
      expect(f.label).toBe(s.label)
      s.options.forEach((o, k) => {
        if (o.choice === f.options[k].choice) return
        differing++
        // lm-eval strips before removing tags, so a raw ending that starts with "[substeps] " keeps a leading
        // space; the converted set stripped it. That is the only difference in the endings.
        expect(o.choice).toBe(` ${f.options[k].choice}`)
      })
    }
    // one raw item does not match at all (its "[title]"-led ending was converted differently)
    expect(found).toBe(499)
    expect(differing).toBe(574)
  })

  it("WinoGrande: 1267; answers 1: 628, 2: 639; agrees with dev-labels.lst", async () => {
    const items = await loadWinogrande(P.winogrande)
    expect(items.length).toBe(1267)
    wellFormed(items)
    expect(countBy(items, (i) => i.label + 1)).toEqual({ 1: 628, 2: 639 })
    const labels = parseLabelList(readFileSync(P.winograndeLabels, "utf8"), P.winograndeLabels)
    expect(items.map((i) => i.label + 1)).toEqual(labels)
    // partial scoring: shared continuation, different contexts
    expect(items.every((i) => i.options[0].continuation === i.options[1].continuation && i.options[0].context !== i.options[1].context)).toBe(true)
    expect(items[2].options[0].continuation).toContain("was't") // the original typo is kept
  })

  it("OpenBookQA: 500; the TSV and the llm-foundry JSONL give identical items; keys A 138, B 126, C 132, D 104", async () => {
    const a = await loadOpenBookQa(P.openbookqaTsv)
    const b = await loadOpenBookQa(P.openbookqa)
    expect(a.length).toBe(500)
    expect(b.length).toBe(500)
    wellFormed(a)
    expect(a.map((i) => [i.options, i.label])).toEqual(b.map((i) => [i.options, i.label]))
    expect(countBy(a, (i) => "ABCD"[i.label])).toEqual({ A: 138, B: 126, C: 132, D: 104 })
  })

  it("PIQA: 1838; labels 0: 910, 1: 928", async () => {
    const items = await loadPiqa(P.piqa, { labelsPath: P.piqaLabels })
    expect(items.length).toBe(1838)
    wellFormed(items)
    expect(countBy(items, (i) => i.label)).toEqual({ 0: 910, 1: 928 })
  })

  it("RTE: 277; entailment (0) 146, not_entailment (1) 131", async () => {
    const items = await loadRte(P.rte)
    expect(items.length).toBe(277)
    wellFormed(items)
    expect(countBy(items, (i) => i.label)).toEqual({ 0: 146, 1: 131 })
  })

  it("MMLU: 14042 test over 57 subjects (all in lm-eval's category map); answers 3222/3462/3582/3776; dev 285 = 5 per subject", async () => {
    const items = await loadMmlu(P.mmluTest)
    expect(items.length).toBe(14042)
    wellFormed(items)
    expect(countBy(items, (i) => i.label)).toEqual({ 0: 3222, 1: 3462, 2: 3582, 3: 3776 })
    const subjects = new Set(items.map((i) => i.group!))
    expect(subjects.size).toBe(57)
    expect([...subjects].sort()).toEqual(Object.keys(MMLU_CATEGORIES).sort())
    const dev = await loadMmlu(P.mmluDev)
    expect(dev.length).toBe(285)
    expect(Object.values(countBy(dev, (i) => i.group!)).every((n) => n === 5)).toBe(true)
    expect((await mmluFiles(P.mmluTest)).length).toBe(57)
    // 5-shot from the dev folder, per subject limit
    const fiveShot = await loadMmlu(P.mmluTest, { subjects: ["abstract_algebra"], limit: 2, fewshot: { devDir: P.mmluDev, k: 5 } })
    expect(fiveShot.length).toBe(2)
    expect(fiveShot[0].options[0].context.split("\nAnswer:").length).toBe(7) // 5 shots + the question + the tail
  })

  it("every multiple-choice task loads by its lm-eval name; --limit and seeded samples work on real files", async () => {
    for (const name of ["arc_easy", "arc_challenge", "boolq", "hellaswag", "winogrande", "openbookqa", "piqa", "rte", "mmlu"] as const) {
      const few = await loadSharedMc(name, { limit: 3 }, ROOT)
      expect(few.length, name).toBe(name === "mmlu" ? 3 * 57 : 3)
    }
    const s1 = await loadSharedMc("hellaswag", { limit: 50, seed: 1 }, ROOT)
    const s2 = await loadSharedMc("hellaswag", { limit: 50, seed: 1 }, ROOT)
    expect(s1.map((i) => i.id)).toEqual(s2.map((i) => i.id))
    expect(s1.map((i) => i.id)).not.toEqual((await loadSharedMc("hellaswag", { limit: 50 }, ROOT)).map((i) => i.id))
  })
})

describe("GSM8K over the full test file", () => {
  it("1319 problems; every gold is numeric; 14 golds carry thousands commas; 1301 rationales have <<calc>> notes", async () => {
    const items = await loadGsm8k(P.gsm8k)
    expect(items.length).toBe(1319)
    expect(items.every((i) => Number.isFinite(i.goldNumber) && i.gold === i.goldRaw.replaceAll(",", ""))).toBe(true)
    expect(items.filter((i) => i.goldRaw.includes(",")).length).toBe(14)
    expect(items.filter((i) => i.answer.includes("<<")).length).toBe(1301)
    // lm-eval scoring of the reference rationale itself: strict finds "#### N", and both filters match gold
    const { scoreGsm8k } = await import("../src/index.js")
    const scores = items.map((i) => scoreGsm8k(i.answer, i))
    expect(scores.every((s) => s.strictMatch === 1)).toBe(true)
    expect(scores.every((s) => s.flexibleMatch === 1)).toBe(true)
  })
})
