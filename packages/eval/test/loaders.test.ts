import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import {
  hellaswagPreprocess, loadMmlu, loadPiqa, mmluContext, parseArc, parseBoolq, parseCsv, parseGsm8k, parseHellaswag,
  parseMmluCsv, parseOpenBookQaJsonl, parseOpenBookQaTsv, parsePiqa, parseRte, parseWinogrande, pyCapitalize,
  seededIndices, selectSubset, summarizeMmlu,
} from "../src/index.js"

const jsonl = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n"

/** Expect an EvalDataError that names the file and line. */
function expectDataError(f: () => unknown, file: string, line: number | null, why: RegExp) {
  try {
    f()
  } catch (e) {
    const err = e as { _tag: string; file: string; line: number | null; message: string }
    expect(err._tag).toBe("EvalDataError")
    expect(err.file).toBe(file)
    expect(err.line).toBe(line)
    expect(err.message).toMatch(why)
    expect(err.message.startsWith(line === null ? `${file}: ` : `${file}:${line}: `)).toBe(true)
    return
  }
  throw new Error("expected an EvalDataError")
}

describe("ARC", () => {
  const text = jsonl(
    { id: "a1", question: { stem: "Which is a gas?", choices: [{ text: "ice", label: "A" }, { text: "steam", label: "B" }, { text: "rock", label: "C" }] }, answerKey: "B" },
    { id: "a2", question: { stem: "2+2?", choices: [{ text: "1", label: "1" }, { text: "2", label: "2" }, { text: "3", label: "3" }, { text: "4", label: "4" }] }, answerKey: "4" },
    { id: "a3", question: { stem: "Pick E", choices: "ABCDE".split("").map((l) => ({ text: `opt ${l}`, label: l })) }, answerKey: "E" },
  )
  it("builds lm-eval's prompt and matches the key against the labels (numeric keys too), 3-5 choices", () => {
    const items = parseArc(text, "arc.jsonl")
    expect(items[0]).toEqual({
      id: "a1",
      label: 1,
      options: [
        { context: "Question: Which is a gas?\nAnswer:", continuation: " ice", choice: "ice" },
        { context: "Question: Which is a gas?\nAnswer:", continuation: " steam", choice: "steam" },
        { context: "Question: Which is a gas?\nAnswer:", continuation: " rock", choice: "rock" },
      ],
    })
    expect(items[1].label).toBe(3)
    expect(items[2].options.length).toBe(5)
    expect(items[2].label).toBe(4)
  })
  it("errors name the file and line", () => {
    const bad = text + jsonl({ id: "a4", question: { stem: "?", choices: [{ text: "x", label: "A" }, { text: "y", label: "B" }] }, answerKey: "C" })
    expectDataError(() => parseArc(bad, "arc.jsonl"), "arc.jsonl", 4, /answerKey "C" is not one of the choice labels \[A, B\]/)
    expectDataError(() => parseArc('{"id": "x"}\n', "arc.jsonl"), "arc.jsonl", 1, /not a ARC record/)
    expectDataError(() => parseArc(text + "{oops\n", "arc.jsonl"), "arc.jsonl", 4, /invalid JSON/)
  })
})

describe("BoolQ", () => {
  it("takes the string labels, true → yes (1)", () => {
    const items = parseBoolq(
      jsonl(
        { question: "is the sky blue", passage: "Sky -- It is blue.", idx: 0, label: "true" },
        { question: "do cats bark", passage: "Cats -- They meow.", idx: 1, label: "false" },
        { question: "q", passage: "p", idx: 2, label: true },
      ),
      "boolq.jsonl",
    )
    expect(items.map((i) => i.label)).toEqual([1, 0, 1])
    expect(items[0].options).toEqual([
      { context: "Sky -- It is blue.\nQuestion: is the sky blue?\nAnswer:", continuation: " no", choice: "no" },
      { context: "Sky -- It is blue.\nQuestion: is the sky blue?\nAnswer:", continuation: " yes", choice: "yes" },
    ])
    expect(items[1].id).toBe("boolq-1")
    expectDataError(() => parseBoolq(jsonl({ question: "q", passage: "p", idx: 0, label: "True " }), "b.jsonl"), "b.jsonl", 1, /label must be "true"\/"false"/)
  })
})

describe("RTE", () => {
  it("entailment → 0 (' True'), not_entailment → 1", () => {
    const items = parseRte(jsonl({ premise: "A dog runs.", hypothesis: "An animal moves.", label: "entailment", idx: 0 }, { premise: "P", hypothesis: "H", label: "not_entailment", idx: 1 }), "rte.jsonl")
    expect(items.map((i) => i.label)).toEqual([0, 1])
    expect(items[0].options.map((o) => [o.context, o.continuation])).toEqual([
      ["A dog runs.\nQuestion: An animal moves. True or False?\nAnswer:", " True"],
      ["A dog runs.\nQuestion: An animal moves. True or False?\nAnswer:", " False"],
    ])
    expectDataError(() => parseRte(jsonl({ premise: "P", hypothesis: "H", label: "contradiction", idx: 1 }), "rte.jsonl"), "rte.jsonl", 1, /label/)
  })
})

describe("HellaSwag", () => {
  it("lm-eval's preprocess", () => {
    expect(hellaswagPreprocess(" Personal Care and Style: [header] How to recover [title] Forgive yourself. [step] While forgiving ")).toBe(
      "Personal Care and Style: How to recover. Forgive yourself. While forgiving",
    )
    expect(pyCapitalize("he IS here")).toBe("He is here")
  })
  it("builds the query from ctx (as given) or from ctx_a + capitalize(ctx_b)", () => {
    const items = parseHellaswag(
      jsonl(
        { idx: 0, activity_label: "Roof shingle removal", ctx: "A man is sitting on a roof. he", label: 3, endings: ["a.", "b.", "c.", "starts pulling up roofing on a roof."] },
        { ind: 7, activity_label: "Roof shingle removal", ctx_a: "A man is sitting on a roof.", ctx_b: "he", label: "3", endings: ["a.", "b.", "c.", "starts [title] pulling."] },
      ),
      "hs.jsonl",
    )
    expect(items[0].options[3]).toEqual({ context: "Roof shingle removal: A man is sitting on a roof. he", continuation: " starts pulling up roofing on a roof.", choice: "starts pulling up roofing on a roof." })
    expect(items[1].id).toBe("hellaswag-7")
    expect(items[1].options[3].context).toBe("Roof shingle removal: A man is sitting on a roof. He")
    expect(items[1].options[3].choice).toBe("starts. pulling.")
    expect(items[1].label).toBe(3)
    expectDataError(() => parseHellaswag(jsonl({ idx: 0, activity_label: "x", ctx: "y", label: 4, endings: ["a", "b", "c", "d"] }), "hs.jsonl"), "hs.jsonl", 1, /label 4/)
  })
})

describe("WinoGrande", () => {
  it("partial scoring: the option goes into the context, the rest of the sentence is the shared continuation", () => {
    const [item] = parseWinogrande(
      jsonl({ qID: "q-2", sentence: "Sarah was a much better surgeon than Maria so _ always got the easier cases.", option1: "Sarah", option2: "Maria", answer: "2" }),
      "wg.jsonl",
    )
    expect(item).toEqual({
      id: "q-2",
      label: 1,
      options: [
        { context: "Sarah was a much better surgeon than Maria so Sarah", continuation: " always got the easier cases.", choice: "Sarah was a much better surgeon than Maria so Sarah" },
        { context: "Sarah was a much better surgeon than Maria so Maria", continuation: " always got the easier cases.", choice: "Sarah was a much better surgeon than Maria so Maria" },
      ],
    })
    expectDataError(() => parseWinogrande(jsonl({ sentence: "no blank", option1: "a", option2: "b", answer: "1" }), "wg.jsonl"), "wg.jsonl", 1, /no "_"/)
  })
})

describe("OpenBookQA", () => {
  const tsv = [
    "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key",
    "8-343\tThe best way to save money is to\t(A) make more phone calls (B) quit eating lunch out (C) buy less with monopoly money (D) have lunch with friends\tThe best way ...\tB",
    "1129\tThere is most likely going to be fog around:\t(A) a marsh (B) a tundra (C) the plains (D) a desert\tThere is ...\tA",
  ].join("\n")
  const foundry = jsonl(
    { query: "The best way to save money is to", choices: ["make more phone calls", "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"], gold: 1 },
    { query: "There is most likely going to be fog around:", choices: ["a marsh", "a tundra", "the plains", "a desert"], gold: 0 },
  )
  it("the TSV and the llm-foundry JSONL give the same items (context = bare stem)", () => {
    const a = parseOpenBookQaTsv(tsv, "obqa.tsv")
    const b = parseOpenBookQaJsonl(foundry, "obqa.jsonl")
    expect(a.map((i) => [i.options, i.label])).toEqual(b.map((i) => [i.options, i.label]))
    expect(a[0].options[1]).toEqual({ context: "The best way to save money is to", continuation: " quit eating lunch out", choice: "quit eating lunch out" })
    expect(a[0].id).toBe("8-343")
    expectDataError(() => parseOpenBookQaTsv(tsv + "\n9\tstem\t(A) x (B) y\tq\tA", "obqa.tsv"), "obqa.tsv", 4, /choices column/)
  })
})

describe("PIQA", () => {
  it("joins the records with the separate label list", async () => {
    const data = jsonl({ goal: "Open a jar", sol1: "Twist the lid.", sol2: "Hit it." }, { goal: "dresser", sol1: "a", sol2: "b" })
    const items = parsePiqa(data, "valid.jsonl", "1\n0\n", "valid-labels.lst")
    expect(items.map((i) => i.label)).toEqual([1, 0])
    expect(items[0].options[0]).toEqual({ context: "Question: Open a jar\nAnswer:", continuation: " Twist the lid.", choice: "Twist the lid." })
    expectDataError(() => parsePiqa(data, "valid.jsonl", "1\n", "valid-labels.lst"), "valid-labels.lst", null, /1 labels for 2 records/)
    expectDataError(() => parsePiqa(data, "valid.jsonl", "1\nx\n", "valid-labels.lst"), "valid-labels.lst", 2, /integer/)
    // the default labels path is derived from the data path
    const dir = mkdtempSync(join(tmpdir(), "bdvax-piqa-"))
    writeFileSync(join(dir, "valid.jsonl"), data)
    writeFileSync(join(dir, "valid-labels.lst"), "0\n1\n")
    expect((await loadPiqa(join(dir, "valid.jsonl"))).map((i) => i.label)).toEqual([0, 1])
  })
})

describe("CSV (RFC 4180)", () => {
  it("handles quoted commas, doubled quotes, newlines and CRLF", () => {
    const text = 'a,b,c\r\n"x, y","say ""hi""","line1\nline2"\r\nplain,"",end\n\nlast,row,no newline'
    expect(parseCsv(text, "t.csv")).toEqual([
      { line: 1, fields: ["a", "b", "c"] },
      { line: 2, fields: ["x, y", 'say "hi"', "line1\nline2"] },
      { line: 4, fields: ["plain", "", "end"] },
      { line: 6, fields: ["last", "row", "no newline"] },
    ])
    expect(parseCsv('a"b,c\n', "t.csv")[0].fields).toEqual(['a"b', "c"])
    expectDataError(() => parseCsv('ok\n"never closed,\nx\n', "t.csv"), "t.csv", 2, /unterminated/)
  })
})

describe("MMLU", () => {
  const csv = [
    "question,choice0,choice1,choice2,choice3,answer",
    '"Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",0,4,2,6,1',
    'Find all zeros in Z_5 of x^5 + 3x^3,0,1,"0,1","0,4",3',
    '"Statement 1 | A ""quoted"" word.\nStatement 2 | Second line.","True, True","False, False","True, False","False, True",0',
  ].join("\n")
  it("parses the quoted CSV and builds lm-eval's zero-shot prompt", () => {
    const qs = parseMmluCsv(csv, "abstract_algebra_test.csv", "abstract_algebra")
    expect(qs.length).toBe(3)
    expect(qs[1].choices).toEqual(["0", "1", "0,1", "0,4"])
    expect(qs[2].question).toBe('Statement 1 | A "quoted" word.\nStatement 2 | Second line.')
    expect(qs[2].choices[0]).toBe("True, True")
    expect(qs.map((q) => q.answer)).toEqual([1, 3, 0])
    expect(mmluContext(qs[0])).toBe(
      "The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:",
    )
    // k-shot layout: each shot is its question text + " " + letter + "\n\n"
    expect(mmluContext(qs[0], [qs[1]])).toBe(
      "The following are multiple choice questions (with answers) about abstract algebra.\n\n" +
        "Find all zeros in Z_5 of x^5 + 3x^3\nA. 0\nB. 1\nC. 0,1\nD. 0,4\nAnswer: D\n\n" +
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:",
    )
  })
  it("accepts Hendrycks' headerless A-D form; errors name the record's first line", () => {
    expect(parseMmluCsv('"Q?",a,b,c,d,C\n', "x_test.csv", "x")[0].answer).toBe(2)
    expectDataError(() => parseMmluCsv(csv + '\n"multi\nline",a,b,c,d,7\n', "m.csv", "m"), "m.csv", 6, /answer must be 0-3 or A-D/)
    expectDataError(() => parseMmluCsv("q,a,b,c\n", "m.csv", "m"), "m.csv", 1, /expected 6 fields/)
  })
  it("loads a folder subject by subject; --limit applies per subject; groups are subjects", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bdvax-mmlu-"))
    mkdirSync(join(dir, "test"))
    writeFileSync(join(dir, "test", "anatomy_test.csv"), "question,choice0,choice1,choice2,choice3,answer\nq1,a,b,c,d,0\nq2,a,b,c,d,1\nq3,a,b,c,d,2\n")
    writeFileSync(join(dir, "test", "abstract_algebra_test.csv"), csv)
    writeFileSync(join(dir, "test", "notes.txt"), "ignored")
    const all = await loadMmlu(join(dir, "test"))
    expect(all.map((i) => i.id)).toEqual(["abstract_algebra-0", "abstract_algebra-1", "abstract_algebra-2", "anatomy-0", "anatomy-1", "anatomy-2"])
    expect(all[3].options.map((o) => o.continuation)).toEqual([" A", " B", " C", " D"])
    expect(all[3].group).toBe("anatomy")
    expect((await loadMmlu(join(dir, "test"), { limit: 2 })).map((i) => i.id)).toEqual(["abstract_algebra-0", "abstract_algebra-1", "anatomy-0", "anatomy-1"])
    expect((await loadMmlu(join(dir, "test"), { subjects: ["anatomy"] })).length).toBe(3)
    await expect(loadMmlu(join(dir, "test"), { subjects: ["nope"] })).rejects.toMatchObject({ _tag: "EvalDataError" })
    const s = summarizeMmlu(all.map((i) => ({ id: i.id, label: i.label, group: i.group, logprobs: [], pred: 0, predNorm: 0, acc: i.label === 0 ? 1 : 0, accNorm: 0, goldIsGreedy: false })))
    expect(s.overall.acc).toBeCloseTo(2 / 6, 12)
  })
})

describe("GSM8K loader", () => {
  it("takes the text after #### as gold, commas stripped", () => {
    const items = parseGsm8k(jsonl({ question: "How many?", answer: "She has <<2*3=6>>6 apples.\n#### 2,125" }, { question: "Neg?", answer: "x\n#### -3" }), "gsm.jsonl")
    expect(items[0]).toMatchObject({ id: "gsm8k-0", goldRaw: "2,125", gold: "2125", goldNumber: 2125 })
    expect(items[1]).toMatchObject({ gold: "-3", goldNumber: -3 })
    expectDataError(() => parseGsm8k(jsonl({ question: "q", answer: "no marker" }), "gsm.jsonl"), "gsm.jsonl", 1, /exactly one "####"/)
  })
})

describe("--limit-style subsets", () => {
  const xs = Array.from({ length: 100 }, (_, i) => i)
  it("first N, a fraction (rounded up), or a seeded sample in file order", () => {
    expect(selectSubset(xs, { limit: 3 })).toEqual([0, 1, 2])
    expect(selectSubset(xs, { limit: 0.055 }).length).toBe(6)
    expect(selectSubset(xs, undefined).length).toBe(100)
    expect(selectSubset(xs, { limit: 1000 }).length).toBe(100)
    const a = selectSubset(xs, { limit: 10, seed: 7 })
    expect(a).toEqual(selectSubset(xs, { limit: 10, seed: 7 }))
    expect(a).toEqual([...a].sort((p, q) => p - q))
    expect(new Set(a).size).toBe(10)
    expect(a).not.toEqual(selectSubset(xs, { limit: 10, seed: 8 }))
    expect(seededIndices(5, 5, 1)).toEqual([0, 1, 2, 3, 4])
    expect(() => selectSubset(xs, { limit: 0 })).toThrow()
    const boolq = parseBoolq(jsonl(...xs.map((i) => ({ question: "q", passage: "p", idx: i, label: "true" }))), "b.jsonl", { limit: 5, seed: 3 })
    expect(boolq.map((b) => b.id)).toEqual(selectSubset(xs, { limit: 5, seed: 3 }).map((i) => `boolq-${i}`))
  })
})
