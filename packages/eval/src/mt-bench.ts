import { join } from "node:path"
import { Schema } from "effect"
import { evalDataError, JudgeError } from "./errors.js"
import { decodeAt, parseJsonLines, readText } from "./io.js"
import { cutAtStop, inBatches, type Generate } from "./model.js"

/**
 * MT-Bench single-answer grading as FastChat's llm_judge does it (gen_judgment.py --mode single, common.py):
 * 80 two-turn questions; turn 1 is judged with "single-v1" (or "single-math-v1" with the GPT-4 reference answer
 * for math, reasoning and coding), turn 2 with the "*-multi-turn" variants, which show the whole conversation;
 * the judge's reply is parsed for "[[rating]]" (fallback "[rating]"), and scores are averaged per turn.
 */

export interface MtBenchQuestion {
  readonly id: number
  readonly category: string
  readonly turns: readonly [string, string]
  /** the inline `reference` of question.jsonl (FastChat's single-answer grading does not use it) */
  readonly reference?: readonly string[]
}

export interface JudgePrompt {
  readonly name: string
  readonly type: string
  readonly systemPrompt: string
  readonly promptTemplate: string
  readonly outputFormat: string
  readonly category: string
  readonly description: string
}

/** FastChat's NEED_REF_CATS: categories judged against a reference answer. */
export const NEED_REF_CATS: readonly string[] = ["math", "reasoning", "coding"]

const QuestionRecord = Schema.Struct({
  question_id: Schema.Number,
  category: Schema.String,
  turns: Schema.Array(Schema.String),
  reference: Schema.optionalKey(Schema.Array(Schema.String)),
})

export function parseMtBenchQuestions(text: string, file: string): MtBenchQuestion[] {
  return parseJsonLines(text, file).map(({ line, value }) => {
    const r = decodeAt(QuestionRecord, value, file, line, "MT-Bench question {question_id, category, turns}")
    if (r.turns.length !== 2) throw evalDataError(file, line, `expected 2 turns, got ${r.turns.length}`)
    return { id: r.question_id, category: r.category, turns: [r.turns[0], r.turns[1]], ...(r.reference ? { reference: r.reference } : {}) }
  })
}

const ReferenceRecord = Schema.Struct({
  question_id: Schema.Number,
  choices: Schema.Array(Schema.Struct({ turns: Schema.Array(Schema.String) })),
})

/** A FastChat model-answer file (e.g. reference_answer/gpt-4.jsonl): question id → the first choice's turns. */
export function parseMtBenchAnswers(text: string, file: string): Map<number, readonly string[]> {
  const out = new Map<number, readonly string[]>()
  for (const { line, value } of parseJsonLines(text, file)) {
    const r = decodeAt(ReferenceRecord, value, file, line, "FastChat answer {question_id, choices:[{turns}]}")
    if (r.choices.length === 0) throw evalDataError(file, line, "no choices")
    out.set(r.question_id, r.choices[0].turns)
  }
  return out
}

const JudgePromptRecord = Schema.Struct({
  name: Schema.String,
  type: Schema.String,
  system_prompt: Schema.String,
  prompt_template: Schema.String,
  description: Schema.String,
  category: Schema.String,
  output_format: Schema.String,
})

export function parseJudgePrompts(text: string, file: string): Map<string, JudgePrompt> {
  const out = new Map<string, JudgePrompt>()
  for (const { line, value } of parseJsonLines(text, file)) {
    const r = decodeAt(JudgePromptRecord, value, file, line, "judge prompt")
    out.set(r.name, {
      name: r.name,
      type: r.type,
      systemPrompt: r.system_prompt,
      promptTemplate: r.prompt_template,
      outputFormat: r.output_format,
      category: r.category,
      description: r.description,
    })
  }
  return out
}

export interface MtBench {
  readonly questions: readonly MtBenchQuestion[]
  /** GPT-4 reference answers by question id (ids 101-130: reasoning, math, coding) */
  readonly references: ReadonlyMap<number, readonly string[]>
  readonly prompts: ReadonlyMap<string, JudgePrompt>
}

export const MT_BENCH_FILES = {
  questions: "question.jsonl",
  references: "reference_answer_gpt-4.jsonl",
  judgePrompts: "judge_prompts.jsonl",
} as const

/** Load the three MT-Bench files; `dir` is the shared `mt_bench/` folder, or give each path. */
export async function loadMtBench(
  paths: string | { questions: string; references: string; judgePrompts: string },
): Promise<MtBench> {
  const p = typeof paths === "string"
    ? { questions: join(paths, MT_BENCH_FILES.questions), references: join(paths, MT_BENCH_FILES.references), judgePrompts: join(paths, MT_BENCH_FILES.judgePrompts) }
    : paths
  return {
    questions: parseMtBenchQuestions(await readText(p.questions), p.questions),
    references: parseMtBenchAnswers(await readText(p.references), p.references),
    prompts: parseJudgePrompts(await readText(p.judgePrompts), p.judgePrompts),
  }
}

/**
 * Python's `str.format` with keyword arguments only: `{name}` is replaced in one pass (so braces inside the
 * substituted answers are never re-read), `{{` and `}}` are literal braces; a missing name throws.
 */
export function pyFormat(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(/\{\{|\}\}|\{([^{}]*)\}/g, (m, name: string | undefined) => {
    if (m === "{{") return "{"
    if (m === "}}") return "}"
    if (name === undefined || !Object.hasOwn(vars, name)) throw new RangeError(`template field {${name}} has no value`)
    return vars[name]
  })
}

export interface JudgeRequest {
  readonly questionId: number
  readonly category: string
  readonly turn: 1 | 2
  readonly promptName: string
  readonly system: string
  readonly user: string
}

/**
 * FastChat's single-answer judge prompts for one question and a model's two answers:
 * turn 1 → "single-v1" / "single-math-v1"; turn 2 → "single-v1-multi-turn" / "single-math-v1-multi-turn".
 * Reference-based prompts (NEED_REF_CATS) take ref_answer_1 (and ref_answer_2) from `references`.
 */
export function mtBenchJudgeRequests(
  q: MtBenchQuestion,
  answers: readonly string[],
  bench: Pick<MtBench, "references" | "prompts">,
  turns: ReadonlyArray<1 | 2> = [1, 2],
): JudgeRequest[] {
  const needsRef = NEED_REF_CATS.includes(q.category)
  const ref = needsRef ? bench.references.get(q.id) : undefined
  if (needsRef && (!ref || ref.length < 2)) throw new RangeError(`MT-Bench question ${q.id} (${q.category}) needs a reference answer with 2 turns`)
  return turns.map((turn) => {
    if (answers.length < turn) throw new RangeError(`MT-Bench question ${q.id}: no answer for turn ${turn}`)
    const name = `${needsRef ? "single-math-v1" : "single-v1"}${turn === 2 ? "-multi-turn" : ""}`
    const prompt = bench.prompts.get(name)
    if (!prompt) throw new RangeError(`judge prompt ${name} is missing`)
    const refs: Record<string, string> = ref ? (turn === 2 ? { ref_answer_1: ref[0], ref_answer_2: ref[1] } : { ref_answer_1: ref[0] }) : {}
    const vars: Record<string, string> = turn === 1
      ? { question: q.turns[0], answer: answers[0], ...refs }
      : { question_1: q.turns[0], question_2: q.turns[1], answer_1: answers[0], answer_2: answers[1], ...refs }
    return { questionId: q.id, category: q.category, turn, promptName: name, system: prompt.systemPrompt, user: pyFormat(prompt.promptTemplate, vars) }
  })
}

/** An LLM judge: system and user message in, the judge's reply out. */
export type Judge = (system: string, user: string) => Promise<string>

/**
 * FastChat's score parsing: the first "[[x]]" (x = `\d+\.?\d*`), else the first "[x]". Returns null (a failed
 * judgment) when there is none, or when the rating is outside the 1-10 scale the prompt asks for (FastChat would
 * keep it).
 */
export function parseJudgeScore(judgment: string): number | null {
  const m = /\[\[([0-9]+\.?[0-9]*)\]\]/.exec(judgment) ?? /\[([0-9]+\.?[0-9]*)\]/.exec(judgment)
  if (!m) return null
  const v = Number(m[1])
  return Number.isFinite(v) && v >= 1 && v <= 10 ? v : null
}

export interface OpenAiJudgeOptions {
  /** server root ("http://127.0.0.1:8000") or API base ending in "/v1"; requests go to …/v1/chat/completions */
  readonly baseUrl: string
  readonly model: string
  /** the API key; default: the environment variable named by `apiKeyEnv` (no Authorization header if unset) */
  readonly apiKey?: string
  /** default "OPENAI_API_KEY" */
  readonly apiKeyEnv?: string
  /** per attempt, default 120 s */
  readonly timeoutMs?: number
  /** further attempts after the first on network errors, timeouts, 408/409/429/5xx and unusable bodies; default 3 */
  readonly retries?: number
  /** wait before retry k: retryDelayMs · 2^(k-1); default 1000 */
  readonly retryDelayMs?: number
  /** default 0 (FastChat) */
  readonly temperature?: number
  /** default 2048 (FastChat) */
  readonly maxTokens?: number
  readonly fetch?: typeof fetch
}

/** A judge on an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, ...). */
export function openAiJudge(o: OpenAiJudgeOptions): Judge {
  const base = o.baseUrl.replace(/\/+$/, "")
  const url = base.endsWith("/v1") ? `${base}/chat/completions` : `${base}/v1/chat/completions`
  const apiKey = o.apiKey ?? process.env[o.apiKeyEnv ?? "OPENAI_API_KEY"]
  const retries = o.retries ?? 3
  const doFetch = o.fetch ?? fetch
  return async (system, user) => {
    const body = JSON.stringify({
      model: o.model,
      messages: [...(system ? [{ role: "system", content: system }] : []), { role: "user", content: user }],
      temperature: o.temperature ?? 0,
      max_tokens: o.maxTokens ?? 2048,
    })
    let last = ""
    for (let attempt = 1; attempt <= retries + 1; attempt++) {
      if (attempt > 1) await new Promise((r) => setTimeout(r, (o.retryDelayMs ?? 1000) * 2 ** (attempt - 2)))
      let res: Response
      try {
        res = await doFetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
          body,
          signal: AbortSignal.timeout(o.timeoutMs ?? 120_000),
        })
      } catch (e) {
        last = (e as Error).name === "TimeoutError" ? `timed out after ${o.timeoutMs ?? 120_000} ms` : `request failed: ${(e as Error).message}`
        continue
      }
      let text: string
      try {
        text = await res.text()
      } catch (e) {
        last = `reading the body failed: ${(e as Error).message}`
        continue
      }
      if (!res.ok) {
        last = `HTTP ${res.status}: ${text.slice(0, 200)}`
        if (res.status === 408 || res.status === 409 || res.status === 429 || res.status >= 500) continue
        throw new JudgeError({ attempts: attempt, message: `${url}: ${last}` })
      }
      let content: unknown
      try {
        content = (JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }> }).choices?.[0]?.message?.content
      } catch {
        content = undefined
      }
      if (typeof content === "string") return content
      last = `no choices[0].message.content in the reply: ${text.slice(0, 200)}`
    }
    throw new JudgeError({ attempts: retries + 1, message: `${url}: ${last}` })
  }
}

/**
 * A judge on a local model: the system and user messages are laid out by `format` (e.g. the judge model's chat
 * template; default system + "\n\n" + user) and generated greedily.
 */
export function generateJudge(
  generate: Generate,
  options: { format?: (system: string, user: string) => string; maxNewTokens?: number; stop?: readonly string[] } = {},
): Judge {
  const format = options.format ?? ((s: string, u: string) => (s ? `${s}\n\n${u}` : u))
  return async (system, user) => {
    const [out] = await generate([format(system, user)], { maxNewTokens: options.maxNewTokens ?? 2048, ...(options.stop ? { stop: options.stop } : {}) })
    if (typeof out !== "string") throw new JudgeError({ attempts: 1, message: "Generate returned no output" })
    return cutAtStop(out, options.stop)
  }
}

export interface MtBenchJudgment {
  readonly questionId: number
  readonly category: string
  readonly turn: 1 | 2
  readonly promptName: string
  /** the judge's reply, null when the call failed */
  readonly judgment: string | null
  /** null = failure (call failed, no rating, or out of range) */
  readonly score: number | null
  readonly error?: string
}

export interface ScoreSummary {
  /** mean of the valid scores (NaN when none) */
  readonly mean: number
  readonly n: number
  readonly failures: number
}

export interface MtBenchResult {
  readonly overall: ScoreSummary
  readonly turn1: ScoreSummary
  readonly turn2: ScoreSummary
  readonly byCategory: Readonly<Record<string, { overall: ScoreSummary; turn1: ScoreSummary; turn2: ScoreSummary }>>
  readonly judgments: readonly MtBenchJudgment[]
}

export function summarizeScores(js: readonly MtBenchJudgment[]): ScoreSummary {
  const ok = js.filter((j) => j.score !== null).map((j) => j.score!)
  return { mean: ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : Number.NaN, n: ok.length, failures: js.length - ok.length }
}

/** FastChat's show_result for single mode: failed judgments (score -1 there) are dropped, the rest averaged. */
export function summarizeMtBench(judgments: readonly MtBenchJudgment[]): MtBenchResult {
  const byTurn = (js: readonly MtBenchJudgment[], t: 1 | 2) => summarizeScores(js.filter((j) => j.turn === t))
  const byCategory: Record<string, { overall: ScoreSummary; turn1: ScoreSummary; turn2: ScoreSummary }> = {}
  for (const c of [...new Set(judgments.map((j) => j.category))]) {
    const js = judgments.filter((j) => j.category === c)
    byCategory[c] = { overall: summarizeScores(js), turn1: byTurn(js, 1), turn2: byTurn(js, 2) }
  }
  return { overall: summarizeScores(judgments), turn1: byTurn(judgments, 1), turn2: byTurn(judgments, 2), byCategory, judgments }
}

/**
 * Judge a model's answers (question id → [turn-1 answer, turn-2 answer]) on every question. A judge call that
 * throws, or a reply without a valid rating, is recorded as a failure; grading never stops on one.
 */
export async function gradeMtBench(o: {
  bench: MtBench
  answers: ReadonlyMap<number, readonly string[]>
  judge: Judge
  turns?: ReadonlyArray<1 | 2>
  concurrency?: number
  onProgress?: (done: number, total: number) => void
}): Promise<MtBenchResult> {
  const requests = o.bench.questions.flatMap((q) => {
    const a = o.answers.get(q.id)
    if (!a) throw new RangeError(`no answers for MT-Bench question ${q.id}`)
    return mtBenchJudgeRequests(q, a, o.bench, o.turns)
  })
  const judgments: MtBenchJudgment[] = new Array(requests.length)
  let next = 0
  let done = 0
  const worker = async () => {
    while (next < requests.length) {
      const i = next++
      const r = requests[i]
      const base = { questionId: r.questionId, category: r.category, turn: r.turn, promptName: r.promptName }
      try {
        const judgment = await o.judge(r.system, r.user)
        const score = parseJudgeScore(judgment)
        judgments[i] = score === null ? { ...base, judgment, score, error: "no [[rating]] between 1 and 10 in the judgment" } : { ...base, judgment, score }
      } catch (e) {
        judgments[i] = { ...base, judgment: null, score: null, error: (e as Error).message }
      }
      o.onProgress?.(++done, requests.length)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency ?? 1, requests.length)) }, worker))
  return summarizeMtBench(judgments)
}

/**
 * Answer the questions with a local model, two turns each as FastChat's gen_model_answer does (turn 2 sees the
 * turn-1 question and answer). `format` lays out the conversation so far for the model (its chat template);
 * `maxNewTokens` defaults to FastChat's 1024. FastChat samples some categories (temperature 0.7 for writing and
 * roleplay, 0.1 for stem and humanities); this uses whatever `generate` does (greedy in bdvax).
 */
export async function answerMtBench(
  questions: readonly MtBenchQuestion[],
  generate: Generate,
  options: {
    format: (turns: ReadonlyArray<{ user: string; assistant?: string }>) => string
    maxNewTokens?: number
    stop?: readonly string[]
    batchSize?: number
  },
): Promise<Map<number, readonly [string, string]>> {
  const maxNewTokens = options.maxNewTokens ?? 1024
  const gen = async (prompts: string[]) =>
    (await inBatches(prompts, options.batchSize ?? 8, "Generate", (chunk) => generate(chunk, { maxNewTokens, ...(options.stop ? { stop: options.stop } : {}) })))
      .map((s) => cutAtStop(s, options.stop).trim())
  const first = await gen(questions.map((q) => options.format([{ user: q.turns[0] }])))
  const second = await gen(questions.map((q, i) => options.format([{ user: q.turns[0], assistant: first[i] }, { user: q.turns[1] }])))
  return new Map(questions.map((q, i) => [q.id, [first[i], second[i]] as const]))
}
