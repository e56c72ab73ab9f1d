import { describe, expect, it } from "vitest"
import { gradeMtBench, loadMtBench, mtBenchJudgeRequests, NEED_REF_CATS } from "../src/index.js"
import { countBy, P } from "./data-root.js"

describe("MT-Bench from the shared FastChat files", () => {
  it("80 questions, 8 categories × 10, 2 turns each; 39 inline references; GPT-4 references for 101-130; 8 judge prompts", async () => {
    const b = await loadMtBench(P.mtBench)
    expect(b.questions.length).toBe(80)
    expect(b.questions.map((q) => q.id)).toEqual(Array.from({ length: 80 }, (_, i) => 81 + i))
    expect(countBy(b.questions, (q) => q.category)).toEqual({
      writing: 10, roleplay: 10, reasoning: 10, math: 10, coding: 10, extraction: 10, stem: 10, humanities: 10,
    })
    expect(b.questions.filter((q) => q.reference).length).toBe(39)
    expect([...b.references.keys()].sort((a, c) => a - c)).toEqual(Array.from({ length: 30 }, (_, i) => 101 + i))
    expect(b.questions.filter((q) => NEED_REF_CATS.includes(q.category)).every((q) => b.references.get(q.id)?.length === 2)).toBe(true)
    expect([...b.prompts.keys()].sort()).toEqual([
      "pair-math-v1", "pair-math-v1-multi-turn", "pair-v2", "pair-v2-multi-turn",
      "single-math-v1", "single-math-v1-multi-turn", "single-v1", "single-v1-multi-turn",
    ])
  })

  it("builds all 160 FastChat single-answer judge prompts with the real templates", async () => {
    const b = await loadMtBench(P.mtBench)
    const reqs = b.questions.flatMap((q) => mtBenchJudgeRequests(q, [`ANSWER1 for ${q.id} {not a field}`, `ANSWER2 for ${q.id}`], b))
    expect(reqs.length).toBe(160)
    expect(countBy(reqs, (r) => r.promptName)).toEqual({ "single-v1": 50, "single-v1-multi-turn": 50, "single-math-v1": 30, "single-math-v1-multi-turn": 30 })
    for (const r of reqs) {
      expect(r.user).not.toMatch(/\{(question|answer|ref_answer)(_\d)?\}/) // every field filled
      expect(r.user).toContain(`ANSWER1 for ${r.questionId} {not a field}`)
      if (r.turn === 2) expect(r.user).toContain(`ANSWER2 for ${r.questionId}`)
    }
    const t1 = reqs.find((r) => r.questionId === 81 && r.turn === 1)!
    expect(t1.system).toBe("You are a helpful assistant.")
    expect(t1.user.startsWith("[Instruction]\nPlease act as an impartial judge")).toBe(true)
    expect(t1.user).toContain("[Question]\nCompose an engaging travel blog post")
    const m2 = reqs.find((r) => r.questionId === 111 && r.turn === 2)!
    expect(m2.system).toContain("You evaluation should focus on the assistant's answer to the second question")
    expect(m2.user).toContain("<|The Start of Reference Answer|>\n\n### User:\n")
    expect(m2.user).toContain(b.references.get(111)![1])
  })

  it("grades with a fake judge end to end", async () => {
    const b = await loadMtBench(P.mtBench)
    const answers = new Map(b.questions.map((q) => [q.id, ["a", "b"]] as const))
    const r = await gradeMtBench({ bench: b, answers, judge: async (_s, u) => (u.includes("Reference") ? "Rating: [[4]]" : "[[8]]"), concurrency: 8 })
    expect(r.turn1).toEqual({ mean: (50 * 8 + 30 * 4) / 80, n: 80, failures: 0 })
    expect(r.byCategory.math.overall.mean).toBe(4)
    expect(r.byCategory.writing.turn2.mean).toBe(8)
  })
})
