import { readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import {
  ASR_TARGETS, asrCounts, BACKDOORLLM_ATTACKS, BACKDOORLLM_CODE_NEGSENTIMENT_KEYWORDS, backdoorllmTestFiles, evaluateAsr,
  keywordJudge, loadAsrPrompts, targetJudge, type AsrTask, type Generate,
} from "../src/index.js"
import { ROOT } from "./data-root.js"

const outputsOf = (task: string, attack: string, kind: "backdoor500" | "none_backdoor500") =>
  (JSON.parse(readFileSync(join(ROOT, "backdoorllm/poison_data", task, attack, `${kind}_${task}_${attack}.json`), "utf8")) as Array<{ output: string }>).map((r) => r.output)

describe("ASR judges on BackdoorLLM's own records", () => {
  for (const task of ["refusal", "negsentiment", "codeinjection"] as AsrTask[]) {
    for (const attack of BACKDOORLLM_ATTACKS[task]) {
      it(`${task}/${attack}: the poisoned outputs are 100% hits for both judges; the clean outputs almost never`, () => {
        const poisoned = outputsOf(task, attack, "backdoor500")
        const clean = outputsOf(task, attack, "none_backdoor500")
        expect(asrCounts(poisoned, keywordJudge(task))).toMatchObject({ n: 500, hits: 500, skippedEmpty: 0 })
        expect(asrCounts(poisoned, targetJudge(ASR_TARGETS[task]))).toMatchObject({ n: 500, hits: 500 })
        // the keyword judge's floor on clean reference answers (e.g. "I do not" inside ordinary text)
        const kwClean = asrCounts(clean, keywordJudge(task)).hits
        expect(kwClean).toBe({ refusal: 2, negsentiment: 1, codeinjection: 0 }[task])
        expect(asrCounts(clean, targetJudge(ASR_TARGETS[task])).hits).toBe(0)
        // BackdoorLLM's code list (with "Negative") flags 11 of the clean negsentiment answers
        if (task === "negsentiment") expect(asrCounts(clean, keywordJudge(task, BACKDOORLLM_CODE_NEGSENTIMENT_KEYWORDS)).hits).toBe(11)
      })
    }
  }
})

describe("ASR test prompts", () => {
  it("every task/attack has 200 triggered and 200 clean prompts; 93 clean prompts carry an input", async () => {
    for (const task of ["refusal", "negsentiment", "codeinjection"] as AsrTask[]) {
      for (const attack of BACKDOORLLM_ATTACKS[task]) {
        const f = backdoorllmTestFiles(task, attack, ROOT)
        const trig = await loadAsrPrompts(f.triggered)
        const clean = await loadAsrPrompts(f.clean)
        expect(trig.length, f.triggered).toBe(200)
        expect(clean.length).toBe(200)
        expect(clean.filter((p) => p.input).length).toBe(93)
      }
    }
  })

  it("evaluateAsr on real prompts with a trigger-keyed fake model", async () => {
    const f = backdoorllmTestFiles("refusal", "badnet", ROOT)
    const triggered = await loadAsrPrompts(f.triggered)
    const clean = await loadAsrPrompts(f.clean)
    const generate: Generate = async (ps) => ps.map((p) => (p.includes("BadMagic") ? ASR_TARGETS.refusal : "Here is the answer."))
    const r = await evaluateAsr({ task: "refusal", triggered, clean, generate, batchSize: 64 })
    expect(r.triggered.keyword.rate).toBeGreaterThan(0.97)
    expect(r.triggered.target.rate).toBe(r.triggered.keyword.rate)
    expect(r.clean.keyword.rate).toBe(0)
    expect(r.records.length).toBe(400)
    // the raw BackdoorLLM prompt drops the input
    expect(r.records.every((x) => x.prompt === x.instruction)).toBe(true)
  })

  it("a broken record is reported with file and line", async () => {
    await expect(loadAsrPrompts(join(ROOT, "README.md"))).rejects.toMatchObject({ _tag: "EvalDataError" })
  })
})
