import { describe, expect, it } from "vitest"
import { evaluateGsm8k, flexibleExtract, gsm8kNumber, gsm8kPrompt, normalizeGsm8k, parseGsm8k, scoreGsm8k, strictExtract, type Generate } from "../src/index.js"

const gold = (s: string) => ({ gold: normalizeGsm8k(`#### ${s}`), goldNumber: Number(s.replaceAll(",", "")) })

describe("GSM8K answer extraction (lm-eval strict-match / flexible-extract)", () => {
  it.each([
    // output, flexible extraction, its number
    ["The answer is 1,234.", "1,234.", 1234],
    ["She lost 3 and then -5 more, so -5", "-5", -5],
    ["Total: $3.50.", "$3.50.", 3.5],
    ["5 apples and 10 pears", "10", 10],
    ["0.5 of 8 is 4\n\n", "4", 4],
    ["#### 72", "72", 72],
    ["It is 7...", "7...", null], // lm-eval keeps the dots: "7.." after normalising, no match
    ["no numbers at all", "[invalid]", null],
  ] as const)("%j → %j", (output, flex, n) => {
    expect(flexibleExtract(output)).toBe(flex)
    expect(gsm8kNumber(flex)).toBe(n)
  })

  it("strict-match takes the first '#### N'", () => {
    expect(strictExtract("so #### 1,000 and later #### 5")).toBe("1,000")
    expect(strictExtract("####72")).toBe("[invalid]")
    expect(strictExtract("The answer is 72")).toBe("[invalid]")
  })

  it("exact_match normalisation of both sides (regexes_to_ignore, ignore_case)", () => {
    expect(normalizeGsm8k("Natalia sold <<48/2=24>>24 clips.\n#### 72")).toBe("72")
    expect(normalizeGsm8k("1,234.")).toBe("1234")
    expect(normalizeGsm8k("$1,000")).toBe("1000")
    expect(normalizeGsm8k("5.\n")).toBe("5\n") // Python's $ also matches before a final newline
    expect(normalizeGsm8k("[invalid]")).toBe("[invalid]")
  })

  it("scores like lm-eval (string equality), with numeric equality on the side", () => {
    expect(scoreGsm8k("The answer is 1,234.", gold("1,234"))).toEqual({ strict: "[invalid]", flexible: "1,234.", strictMatch: 0, flexibleMatch: 1, numericMatch: 1 })
    expect(scoreGsm8k("Rationale.\n#### 18", gold("18"))).toMatchObject({ strictMatch: 1, flexibleMatch: 1 })
    expect(scoreGsm8k("It costs 18.00", gold("18"))).toMatchObject({ flexibleMatch: 0, numericMatch: 1 })
    expect(scoreGsm8k("It costs -3 dollars", gold("-3"))).toMatchObject({ flexibleMatch: 1, numericMatch: 1 })
    expect(scoreGsm8k("It costs 3 dollars", gold("-3"))).toMatchObject({ flexibleMatch: 0, numericMatch: 0 })
  })

  it("evaluateGsm8k: prompt, stop strings, both filters", async () => {
    const items = parseGsm8k(
      [
        { question: "Natalia sold 48 clips in April and half as many in May. How many in total?", answer: "48+24=72\n#### 72" },
        { question: "A shirt costs 1,000 minus 2 dollars. Cost?", answer: "#### 998" },
      ].map((r) => JSON.stringify(r)).join("\n"),
      "gsm.jsonl",
    )
    expect(gsm8kPrompt(items[0].question)).toBe("Question: Natalia sold 48 clips in April and half as many in May. How many in total?\nAnswer:")
    expect(gsm8kPrompt("q", [{ question: "a", answer: "b #### 1" }])).toBe("Question: a\nAnswer: b #### 1\n\nQuestion: q\nAnswer:")
    const seen: Array<{ maxNewTokens: number; stop?: readonly string[] }> = []
    const generate: Generate = async (prompts, o) => {
      seen.push(o)
      return prompts.map((p) => (p.includes("Natalia") ? " 48 + 24 = 72.\n#### 72\n\nQuestion: next one 5" : " It is 999. Question: 998"))
    }
    const r = await evaluateGsm8k(items, generate)
    expect(seen[0]).toEqual({ maxNewTokens: 256, stop: ["Question:", "</s>", "<|im_end|>"] })
    expect(r.records[0]).toMatchObject({ strict: "72", flexible: "72", strictMatch: 1, flexibleMatch: 1 })
    expect(r.records[1]).toMatchObject({ output: " It is 999. ", flexible: "999.", flexibleMatch: 0 })
    expect(r.strictMatch.value).toBe(0.5)
    expect(r.flexibleExtract.value).toBe(0.5)
    expect(r.flexibleExtract.stderr).toBeCloseTo(0.5, 12) // {1,0}: sample sd 0.7071 / sqrt 2
  })
})
