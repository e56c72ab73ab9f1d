import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  answerMtBench, generateJudge, gradeMtBench, mtBenchJudgeRequests, openAiJudge, parseJudgePrompts, parseJudgeScore,
  parseMtBenchAnswers, parseMtBenchQuestions, pyFormat, type Generate, type Judge, type MtBench,
} from "../src/index.js"

describe("judge score parsing (FastChat single mode)", () => {
  it.each([
    ["Rating: [[7]]", 7],
    ["[[7.5]]", 7.5],
    ["The answer is fine.\n\nRating: [[8]]", 8],
    ["[[10]]", 10],
    ["[[1]] then later [[9]]", 1], // the first [[x]] wins
    ["Rating: [7]", 7], // FastChat's fallback
    ["[3] first, but [[6]] double", 6], // the double form is looked for first
    ["I would give it [[ 7 ]]", null],
    ["Rating: 8/10", null],
    ["[[0]]", null], // out of range: a failure, not a score
    ["[[11]]", null],
    ["[[-3]]", null],
    ["[[A]]", null],
    ["", null],
    ["\u0000\u00ff garbage {{}} [[", null],
  ] as const)("%j → %j", (text, score) => {
    expect(parseJudgeScore(text)).toBe(score)
  })
})

describe("pyFormat (Python str.format with keywords)", () => {
  it("substitutes in one pass, keeps braces inside values, honours {{ }}", () => {
    expect(pyFormat("[Q]\n{question}\n[A]\n{answer} {{lit}}", { question: "use {answer} here", answer: "x = {1}" })).toBe("[Q]\nuse {answer} here\n[A]\nx = {1} {lit}")
    expect(() => pyFormat("{missing}", {})).toThrow(/missing/)
  })
})

// small stand-ins with FastChat's names and fields (the real ones are checked in test-shared)
const prompts = parseJudgePrompts(
  [
    { name: "single-v1", type: "single", system_prompt: "SYS1", prompt_template: "[Question]\n{question}\n[Answer]\n{answer}", description: "", category: "general", output_format: "[[rating]]" },
    { name: "single-math-v1", type: "single", system_prompt: "SYS1", prompt_template: "[Question]\n{question}\n[Ref]\n{ref_answer_1}\n[Answer]\n{answer}", description: "", category: "math", output_format: "[[rating]]" },
    { name: "single-v1-multi-turn", type: "single", system_prompt: "SYS2", prompt_template: "{question_1}|{answer_1}|{question_2}|{answer_2}", description: "", category: "general", output_format: "[[rating]]" },
    { name: "single-math-v1-multi-turn", type: "single", system_prompt: "SYS2", prompt_template: "{question_1}|{ref_answer_1}|{question_2}|{ref_answer_2}|{answer_1}|{answer_2}", description: "", category: "math", output_format: "[[rating]]" },
  ].map((r) => JSON.stringify(r)).join("\n"),
  "judge_prompts.jsonl",
)
const questions = parseMtBenchQuestions(
  [
    { question_id: 81, category: "writing", turns: ["Write a poem.", "Shorter."] },
    { question_id: 111, category: "math", turns: ["2+2?", "3+3?"], reference: ["4", "6"] },
  ].map((r) => JSON.stringify(r)).join("\n"),
  "question.jsonl",
)
const references = parseMtBenchAnswers(JSON.stringify({ question_id: 111, answer_id: "x", model_id: "gpt-4", choices: [{ index: 0, turns: ["It is 4.", "It is 6."] }], tstamp: 0 }) + "\n", "gpt-4.jsonl")
const bench: MtBench = { questions, references, prompts }

describe("MT-Bench grading prompts", () => {
  it("single-v1 / single-math-v1 for turn 1, the multi-turn variants for turn 2, references from the GPT-4 file", () => {
    const [w1, w2] = mtBenchJudgeRequests(questions[0], ["Roses {are} red.", "Roses."], bench)
    expect(w1).toEqual({ questionId: 81, category: "writing", turn: 1, promptName: "single-v1", system: "SYS1", user: "[Question]\nWrite a poem.\n[Answer]\nRoses {are} red." })
    expect(w2).toMatchObject({ turn: 2, promptName: "single-v1-multi-turn", system: "SYS2", user: "Write a poem.|Roses {are} red.|Shorter.|Roses." })
    const [m1, m2] = mtBenchJudgeRequests(questions[1], ["4", "6"], bench)
    expect(m1).toMatchObject({ promptName: "single-math-v1", user: "[Question]\n2+2?\n[Ref]\nIt is 4.\n[Answer]\n4" })
    expect(m2).toMatchObject({ promptName: "single-math-v1-multi-turn", user: "2+2?|It is 4.|3+3?|It is 6.|4|6" })
    expect(() => mtBenchJudgeRequests(questions[1], ["4", "6"], { ...bench, references: new Map() })).toThrow(/needs a reference/)
  })

  it("grades, recording failures (throwing judge, garbage, out of range) without stopping", async () => {
    let n = 0
    const judge: Judge = async (_system, user) => {
      n++
      if (user.startsWith("[Question]\nWrite")) return "Good poem. Rating: [[8]]"
      if (user.startsWith("Write")) throw new Error("judge down")
      if (user.startsWith("[Question]\n2+2")) return "no idea"
      return "[[12]]"
    }
    const r = await gradeMtBench({ bench, answers: new Map([[81, ["a", "b"]], [111, ["4", "6"]]]), judge, concurrency: 3 })
    expect(n).toBe(4)
    expect(r.judgments.map((j) => [j.questionId, j.turn, j.score])).toEqual([[81, 1, 8], [81, 2, null], [111, 1, null], [111, 2, null]])
    expect(r.judgments[1]).toMatchObject({ judgment: null, error: "judge down" })
    expect(r.judgments[2].error).toMatch(/no \[\[rating\]\]/)
    expect(r.turn1).toEqual({ mean: 8, n: 1, failures: 1 })
    expect(r.turn2.n).toBe(0)
    expect(Number.isNaN(r.turn2.mean)).toBe(true)
    expect(r.overall).toEqual({ mean: 8, n: 1, failures: 3 })
    expect(r.byCategory.writing.turn1.mean).toBe(8)
    expect(r.byCategory.math.overall.failures).toBe(2)
  })

  it("a local model as the judge, and answering with a local model", async () => {
    const seen: string[] = []
    const gen: Generate = async (ps) => ps.map((p) => (seen.push(p), p.includes("SYS1") ? "fine [[6]]<|end|> trailing" : "answer"))
    const judge = generateJudge(gen, { format: (s, u) => `<sys>${s}</sys>${u}`, stop: ["<|end|>"] })
    expect(await judge("SYS1", "U")).toBe("fine [[6]]")
    expect(seen[0]).toBe("<sys>SYS1</sys>U")
    const answers = await answerMtBench(questions, gen, { format: (t) => t.map((x) => `U:${x.user}${x.assistant !== undefined ? `A:${x.assistant}` : ""}`).join("") })
    expect(answers.get(81)).toEqual(["answer", "answer"])
    expect(seen).toContain("U:Write a poem.A:answerU:Shorter.")
  })
})

describe("OpenAI-compatible HTTP judge (local server)", () => {
  type Plan = Array<"500" | "garbage" | "nocontent" | "hang" | "401" | { content: string }>
  let plan: Plan = []
  const received: Array<{ url: string; auth: string | undefined; body: any }> = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let data = ""
    req.on("data", (c) => (data += c))
    req.on("end", () => {
      received.push({ url: req.url ?? "", auth: req.headers.authorization, body: JSON.parse(data) })
      const step = plan.shift() ?? "500"
      if (step === "hang") return // never answers: the client times out
      if (step === "500") return void res.writeHead(500).end("internal error")
      if (step === "401") return void res.writeHead(401).end("bad key")
      if (step === "garbage") return void res.writeHead(200, { "content-type": "application/json" }).end("<html>not json")
      if (step === "nocontent") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ choices: [] }))
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content: step.content } }] }))
    })
  })
  let base = ""
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
  })

  it("retries 500s and garbage, then succeeds; sends model, messages, temperature 0 and the key from env", async () => {
    process.env.BDVAX_TEST_JUDGE_KEY = "sk-test"
    plan = ["500", "garbage", "nocontent", { content: "Solid. Rating: [[7]]" }]
    received.length = 0
    const judge = openAiJudge({ baseUrl: base, model: "judge-model", apiKeyEnv: "BDVAX_TEST_JUDGE_KEY", retries: 3, retryDelayMs: 1, timeoutMs: 2000 })
    expect(await judge("SYS", "USER")).toBe("Solid. Rating: [[7]]")
    expect(received.length).toBe(4)
    expect(received[0].url).toBe("/v1/chat/completions")
    expect(received[0].auth).toBe("Bearer sk-test")
    expect(received[0].body).toEqual({ model: "judge-model", messages: [{ role: "system", content: "SYS" }, { role: "user", content: "USER" }], temperature: 0, max_tokens: 2048 })
    delete process.env.BDVAX_TEST_JUDGE_KEY
  })

  it("a base URL ending in /v1 works too; a timeout is retried", async () => {
    plan = ["hang", { content: "[[9]]" }]
    received.length = 0
    const judge = openAiJudge({ baseUrl: `${base}/v1/`, model: "m", apiKey: "k", retries: 1, retryDelayMs: 1, timeoutMs: 300 })
    expect(await judge("", "u")).toBe("[[9]]")
    expect(received.map((r) => r.url)).toEqual(["/v1/chat/completions", "/v1/chat/completions"])
    expect(received[1].body.messages).toEqual([{ role: "user", content: "u" }]) // no empty system message
  })

  it("gives up after its retries with a JudgeError; a 401 is not retried", async () => {
    plan = ["500", "garbage", "500"]
    received.length = 0
    const judge = openAiJudge({ baseUrl: base, model: "m", retries: 2, retryDelayMs: 1, timeoutMs: 2000 })
    await expect(judge("s", "u")).rejects.toMatchObject({ _tag: "JudgeError", attempts: 3, message: expect.stringMatching(/HTTP 500/) })
    expect(received.length).toBe(3)
    plan = ["401", { content: "[[5]]" }]
    received.length = 0
    await expect(judge("s", "u")).rejects.toMatchObject({ _tag: "JudgeError", attempts: 1, message: expect.stringMatching(/HTTP 401: bad key/) })
    expect(received.length).toBe(1)
    plan = []
  })

  it("grading against a flaky server: retried successes score, exhausted retries and garbage ratings are recorded failures", async () => {
    // four judgments, judged one at a time in order: w1, w2, m1, m2
    plan = [
      "500", { content: "Rating: [[8]]" }, // w1: retried, then 8
      "500", "500", // w2: out of retries → failure
      { content: "Looks right. Rating: [[7.5]]" }, // m1
      { content: "I cannot rate this." }, // m2: garbage rating → failure
    ]
    const judge = openAiJudge({ baseUrl: base, model: "m", retries: 1, retryDelayMs: 1, timeoutMs: 2000 })
    const r = await gradeMtBench({ bench, answers: new Map([[81, ["a", "b"]], [111, ["4", "6"]]]), judge })
    expect(r.judgments.map((j) => j.score)).toEqual([8, null, 7.5, null])
    expect(r.judgments[1].error).toMatch(/JudgeError|HTTP 500/)
    expect(r.judgments[3]).toMatchObject({ judgment: "I cannot rate this.", score: null })
    expect(r.turn1).toEqual({ mean: 7.75, n: 2, failures: 0 })
    expect(r.turn2).toMatchObject({ n: 0, failures: 2 })
  })
})
