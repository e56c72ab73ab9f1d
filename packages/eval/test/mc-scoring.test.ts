import { describe, expect, it } from "vitest"
import {
  answerPerplexity, argmax, backdoorllmPerplexityPairs, evaluateMultipleChoice, meanStderr, pooledStderr, scoreMcItem,
  sharedContext, summarizeMmlu, type LogLikelihood, type McItem, type TokenNll,
} from "../src/index.js"

/**
 * A worked example, by hand. Continuations carry lm-eval's " " delimiter; acc_norm divides by the length of the
 * choice *without* it (lm-eval's `len(choice)` over `doc_to_choice`).
 *
 * item 1: choices "cat" (3), "elephant" (8); ll -6, -8; gold 1
 *   acc:      argmax(-6, -8) = 0          → 0
 *   acc_norm: -6/3 = -2, -8/8 = -1 → 1    → 1
 * item 2: choices "ab" (2), "abcd" (4); ll -4, -7.9; gold 1
 *   acc:      argmax(-4, -7.9) = 0        → 0
 *   acc_norm: -4/2 = -2, -7.9/4 = -1.975 → 1 → 1   (with the delimiter counted: -4/3 = -1.333 > -7.9/5 = -1.58 → 0: wrong)
 * item 3: choices "x" (1), "yy" (2), "zzz" (3); ll -2, -2, -6; gold 0
 *   acc:      tie between 0 and 1 → first = 0 → 1
 *   acc_norm: -2, -1, -2 → 1              → 0
 * acc = (0 + 0 + 1)/3 = 1/3, acc_norm = (1 + 1 + 0)/3 = 2/3.
 * stderr (lm-eval mean_stderr): values {0,0,1}: mean 1/3, sample var = (2·(1/3)² + (2/3)²)/2 = (2/9 + 4/9)/2 = 1/3,
 *   stderr = sqrt(1/3)/sqrt(3) = 1/3; the same for {1,1,0}.
 */
const items: McItem[] = [
  { id: "i1", options: sharedContext("Q1", ["cat", "elephant"]), label: 1 },
  { id: "i2", options: sharedContext("Q2", ["ab", "abcd"]), label: 1 },
  { id: "i3", options: sharedContext("Q3", ["x", "yy", "zzz"]), label: 0 },
]
const table: Record<string, number> = {
  "Q1| cat": -6, "Q1| elephant": -8, "Q2| ab": -4, "Q2| abcd": -7.9, "Q3| x": -2, "Q3| yy": -2, "Q3| zzz": -6,
}

describe("multiple-choice scoring (lm-eval acc / acc_norm)", () => {
  it("matches the worked example", async () => {
    const batches: number[] = []
    const ll: LogLikelihood = async (reqs) => {
      batches.push(reqs.length)
      return reqs.map((r) => ({ logprob: table[`${r.context}|${r.continuation}`], isGreedy: r.continuation === " cat" }))
    }
    const res = await evaluateMultipleChoice(items, ll, { batchSize: 3 })
    expect(batches).toEqual([3, 3, 1])
    expect(res.n).toBe(3)
    expect(res.records.map((r) => [r.pred, r.predNorm, r.acc, r.accNorm])).toEqual([
      [0, 1, 0, 1],
      [0, 1, 0, 1],
      [0, 1, 1, 0],
    ])
    expect(res.acc.value).toBeCloseTo(1 / 3, 12)
    expect(res.accNorm.value).toBeCloseTo(2 / 3, 12)
    expect(res.acc.stderr).toBeCloseTo(1 / 3, 12)
    expect(res.accNorm.stderr).toBeCloseTo(1 / 3, 12)
    expect(res.records[0].goldIsGreedy).toBe(false)
    expect(res.records[0].logprobs).toEqual([-6, -8])
  })

  it("divides by the continuation when no choice is given, in code points", () => {
    const item: McItem = { id: "u", label: 0, options: [{ context: "c", continuation: "😀😀" }, { context: "c", continuation: "abc" }] }
    // 2 code points (4 UTF-16 units): -2/2 = -1 > -3.3/3 = -1.1
    expect(scoreMcItem(item, [{ logprob: -2, isGreedy: true }, { logprob: -3.3, isGreedy: false }])).toMatchObject({ predNorm: 0, goldIsGreedy: true })
  })

  it("argmax is numpy's: first of ties, NaN wins", () => {
    expect(argmax([-1, -1, -2])).toBe(0)
    expect(argmax([-3, -1, -1])).toBe(1)
    expect(argmax([-1, Number.NaN, 0])).toBe(1)
    expect(argmax([-Infinity, -Infinity])).toBe(0)
  })

  it("checks the callback's contract and the labels", async () => {
    const short: LogLikelihood = async (r) => r.slice(1).map(() => ({ logprob: 0, isGreedy: false }))
    await expect(evaluateMultipleChoice(items, short)).rejects.toMatchObject({ _tag: "ModelContractError" })
    await expect(evaluateMultipleChoice([{ id: "b", label: 2, options: sharedContext("q", ["a", "b"]) }], short)).rejects.toThrow(/label 2/)
  })
})

describe("lm-eval statistics", () => {
  it("mean_stderr and pooled_sample_stderr", () => {
    expect(meanStderr([1, 0, 1, 1])).toBeCloseTo(Math.sqrt(0.25) / 2, 12) // sample var = 0.25, /sqrt(4)
    expect(meanStderr([1])).toBeNull()
    // by hand: a = {1,0,1,0}: sample var 1/3, stderr² = 1/12; b = {1,1,0,0,1,0}: sample var 0.3, stderr² = 0.05
    // pooled var = ((4-1)·(1/12)·4 + (6-1)·0.05·6) / (10 - 2) = (1 + 1.5)/8 = 0.3125; stderr = sqrt(0.3125/10)
    const a = [1, 0, 1, 0]
    const b = [1, 1, 0, 0, 1, 0]
    expect(meanStderr(a)! ** 2).toBeCloseTo(1 / 12, 12)
    expect(pooledStderr([meanStderr(a)!, meanStderr(b)!], [4, 6])).toBeCloseTo(Math.sqrt(0.03125), 12)
  })

  it("MMLU aggregation weights subjects by size (lm-eval groups)", () => {
    const rec = (group: string, acc: 0 | 1) => ({ id: "x", label: 0, group, logprobs: [], pred: 0, predNorm: 0, acc, accNorm: acc, goldIsGreedy: false })
    const s = summarizeMmlu([rec("anatomy", 1), rec("anatomy", 0), rec("astronomy", 1), rec("astronomy", 1), rec("virology", 0), rec("virology", 1), rec("virology", 1), rec("virology", 1)])
    expect(s.subjects.anatomy.acc).toBe(0.5)
    expect(s.categories.stem).toMatchObject({ n: 4, acc: 0.75 })
    expect(s.categories.other).toMatchObject({ n: 4, acc: 0.75 })
    expect(s.overall).toMatchObject({ n: 8, acc: 0.75 })
    expect(s.macroAcc).toBeCloseTo((0.5 + 1 + 0.75) / 3, 12)
  })
})

describe("answer perplexity", () => {
  it("corpus and per-sample perplexity from token NLLs; empty answers are left out", async () => {
    const nll: TokenNll = async (pairs) => pairs.map((p) => ({ nll: p.answer.length * 0.5, tokens: p.answer.length }))
    const r = await answerPerplexity(
      [{ prompt: "a", answer: "xx" }, { prompt: "b", answer: "" }, { prompt: "c", answer: "yyyy" }],
      async (pairs) => (await nll(pairs)).map((x, i) => (i === 1 ? { nll: 4, tokens: 2 } : x)),
    )
    // scored: "xx" (nll 1, 2 tokens) and "yyyy" replaced by (4, 2): total 5 / 4 tokens
    expect(r.n).toBe(2)
    expect(r.skipped).toBe(1)
    expect(r.totalTokens).toBe(4)
    expect(r.meanTokenNll).toBeCloseTo(1.25, 12)
    expect(r.corpusPerplexity).toBeCloseTo(Math.exp(1.25), 12)
    expect(r.meanSamplePerplexity).toBeCloseTo((Math.exp(0.5) + Math.exp(2)) / 2, 12)
    expect(r.perSample[1].perplexity).toBeNull()
  })
  it("BackdoorLLM's prompt/answer pairs", () => {
    expect(backdoorllmPerplexityPairs([{ instruction: "I", input: "In", output: "O" }, { instruction: "J", output: "P" }])).toEqual([
      { prompt: "I\nIn", answer: "O" },
      { prompt: "J", answer: "P" },
    ])
  })
})
