import { readdir } from "node:fs/promises"
import { basename, join } from "node:path"
import { evalDataError } from "../errors.js"
import { parseCsv, readText, type CsvRecord } from "../io.js"
import { pooledStderr } from "../stats.js"
import { seededIndices, subsetSize, type Subset } from "../subset.js"
import type { McScoreRecord } from "../mc-scoring.js"
import { sharedContext, type McItem } from "./types.js"

/** lm-eval's MMLU subject → category map (lm_eval/tasks/mmlu/_generate_configs.py). */
export const MMLU_CATEGORIES: Readonly<Record<string, "stem" | "humanities" | "social_sciences" | "other">> = {
  abstract_algebra: "stem", anatomy: "stem", astronomy: "stem", business_ethics: "other", clinical_knowledge: "other",
  college_biology: "stem", college_chemistry: "stem", college_computer_science: "stem", college_mathematics: "stem",
  college_medicine: "other", college_physics: "stem", computer_security: "stem", conceptual_physics: "stem",
  econometrics: "social_sciences", electrical_engineering: "stem", elementary_mathematics: "stem",
  formal_logic: "humanities", global_facts: "other", high_school_biology: "stem", high_school_chemistry: "stem",
  high_school_computer_science: "stem", high_school_european_history: "humanities",
  high_school_geography: "social_sciences", high_school_government_and_politics: "social_sciences",
  high_school_macroeconomics: "social_sciences", high_school_mathematics: "stem",
  high_school_microeconomics: "social_sciences", high_school_physics: "stem", high_school_psychology: "social_sciences",
  high_school_statistics: "stem", high_school_us_history: "humanities", high_school_world_history: "humanities",
  human_aging: "other", human_sexuality: "social_sciences", international_law: "humanities", jurisprudence: "humanities",
  logical_fallacies: "humanities", machine_learning: "stem", management: "other", marketing: "other",
  medical_genetics: "other", miscellaneous: "other", moral_disputes: "humanities", moral_scenarios: "humanities",
  nutrition: "other", philosophy: "humanities", prehistory: "humanities", professional_accounting: "other",
  professional_law: "humanities", professional_medicine: "other", professional_psychology: "social_sciences",
  public_relations: "social_sciences", security_studies: "social_sciences", sociology: "social_sciences",
  us_foreign_policy: "social_sciences", virology: "other", world_religions: "humanities",
}

export const MMLU_LETTERS = ["A", "B", "C", "D"] as const

/** One MMLU question as read from the CSV. */
export interface MmluQuestion {
  readonly subject: string
  readonly question: string
  readonly choices: readonly [string, string, string, string]
  /** 0-3 (= A-D) */
  readonly answer: number
  readonly line: number
}

const HEADER = "question,choice0,choice1,choice2,choice3,answer"

/**
 * One subject's CSV. Accepts this copy's form (a header `question,choice0,choice1,choice2,choice3,answer`,
 * answers 0-3) and Hendrycks' original headerless form with A-D letters. Fields may be quoted and hold commas,
 * quotes and newlines.
 */
export function parseMmluCsv(text: string, file: string, subject: string): MmluQuestion[] {
  const records: CsvRecord[] = parseCsv(text, file)
  const body = records.length && records[0].fields.join(",") === HEADER ? records.slice(1) : records
  return body.map(({ line, fields }) => {
    if (fields.length !== 6) throw evalDataError(file, line, `expected 6 fields (question, 4 choices, answer), got ${fields.length}`)
    const a = fields[5].trim()
    const answer = /^[0-3]$/.test(a) ? Number(a) : "ABCD".indexOf(a)
    if (answer < 0 || a.length !== 1) throw evalDataError(file, line, `answer must be 0-3 or A-D, got ${JSON.stringify(fields[5])}`)
    return { subject, question: fields[0], choices: [fields[1], fields[2], fields[3], fields[4]], answer, line }
  })
}

/** lm-eval's per-subject description: "The following are multiple choice questions (with answers) about {subject}.\n\n". */
export const mmluDescription = (subject: string) =>
  `The following are multiple choice questions (with answers) about ${subject.split("_").join(" ")}.\n\n`

/** lm-eval's `doc_to_text` for MMLU (the question is stripped, the choices are not). */
export const mmluQuestionText = (q: MmluQuestion) =>
  `${q.question.trim()}\n${q.choices.map((c, i) => `${MMLU_LETTERS[i]}. ${c}`).join("\n")}\nAnswer:`

/**
 * The context lm-eval builds: description, then (for k-shot) each dev example as question text + " " + letter,
 * joined by "\n\n", then the test question text.
 */
export function mmluContext(q: MmluQuestion, shots: readonly MmluQuestion[] = []): string {
  const fewshot = shots.map((s) => `${mmluQuestionText(s)} ${MMLU_LETTERS[s.answer]}\n\n`).join("")
  return mmluDescription(q.subject) + fewshot + mmluQuestionText(q)
}

/** An MMLU question as a multiple-choice item: choices [" A", " B", " C", " D"], group = subject. */
export function mmluItem(q: MmluQuestion, index: number, shots: readonly MmluQuestion[] = []): McItem {
  return { id: `${q.subject}-${index}`, options: sharedContext(mmluContext(q, shots), MMLU_LETTERS), label: q.answer, group: q.subject }
}

export interface MmluLoadOptions extends Subset {
  /** only these subjects (default: every `<subject>_<split>.csv` in the folder, sorted) */
  readonly subjects?: readonly string[]
  /** `limit`/`seed` apply per subject, as lm-eval's `--limit` applies per sub-task (default true) */
  readonly perSubject?: boolean
  /** k-shot from the dev folder's first k rows per subject (lm-eval's `first_n` sampler); default 0 = lm-eval's zero-shot default */
  readonly fewshot?: { readonly devDir: string; readonly k: number }
}

/** The subjects and files of an MMLU split folder (`<subject>_test.csv`, `<subject>_dev.csv`, ...). */
export async function mmluFiles(dir: string): Promise<Array<{ subject: string; path: string }>> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (e) {
    throw evalDataError(dir, null, `cannot list the MMLU folder: ${(e as Error).message}`)
  }
  return names
    .filter((n) => /^[a-z_]+_(test|dev|val)\.csv$/.test(n))
    .sort()
    .map((n) => ({ subject: basename(n, ".csv").replace(/_(test|dev|val)$/, ""), path: join(dir, n) }))
}

/** Load an MMLU split folder (e.g. `mmlu/test`) as multiple-choice items, subject by subject in name order. */
export async function loadMmlu(dir: string, options: MmluLoadOptions = {}): Promise<McItem[]> {
  let files = await mmluFiles(dir)
  if (files.length === 0) throw evalDataError(dir, null, "no <subject>_<split>.csv files")
  if (options.subjects) {
    const known = new Set(files.map((f) => f.subject))
    for (const s of options.subjects) if (!known.has(s)) throw evalDataError(dir, null, `no CSV for subject ${JSON.stringify(s)}`)
    files = files.filter((f) => options.subjects!.includes(f.subject))
  }
  const devFiles = options.fewshot ? new Map((await mmluFiles(options.fewshot.devDir)).map((f) => [f.subject, f.path])) : null
  const perSubject = options.perSubject ?? true
  const all: McItem[] = []
  for (const { subject, path } of files) {
    const qs = parseMmluCsv(await readText(path), path, subject)
    let shots: MmluQuestion[] = []
    if (options.fewshot && devFiles) {
      const dev = devFiles.get(subject)
      if (!dev) throw evalDataError(options.fewshot.devDir, null, `no dev CSV for subject ${subject}`)
      shots = parseMmluCsv(await readText(dev), dev, subject).slice(0, options.fewshot.k)
      if (shots.length < options.fewshot.k) throw evalDataError(dev, null, `only ${shots.length} dev rows for ${options.fewshot.k}-shot`)
    }
    const items = qs.map((q, i) => mmluItem(q, i, shots))
    all.push(...(perSubject ? pick(items, options) : items))
  }
  return perSubject ? all : pick(all, options)
}

function pick(items: McItem[], s: Subset): McItem[] {
  if (s.limit === undefined) return items
  const k = subsetSize(items.length, s.limit)
  return s.seed === undefined ? items.slice(0, k) : seededIndices(items.length, k, s.seed).map((i) => items[i])
}

export interface MmluGroupScore {
  readonly n: number
  readonly acc: number
  readonly stderr: number | null
}

export interface MmluSummary {
  /** lm-eval's `mmlu`: size-weighted mean over the categories (= over all questions), pooled stderr */
  readonly overall: MmluGroupScore
  readonly categories: Readonly<Record<string, MmluGroupScore>>
  readonly subjects: Readonly<Record<string, MmluGroupScore>>
  /** unweighted mean of the subject accuracies (what some papers report as "MMLU") */
  readonly macroAcc: number
}

/** Aggregate per-item MMLU results like lm-eval's groups: subjects → 4 categories → mmlu, weighted by size. */
export function summarizeMmlu(records: readonly McScoreRecord[]): MmluSummary {
  const bySubject = new Map<string, number[]>()
  for (const r of records) {
    if (!r.group) throw new Error(`MMLU record ${r.id} has no subject (group)`)
    const xs = bySubject.get(r.group) ?? []
    xs.push(r.acc)
    bySubject.set(r.group, xs)
  }
  const subjects: Record<string, MmluGroupScore> = {}
  for (const [s, xs] of [...bySubject].sort(([a], [b]) => a.localeCompare(b))) {
    const acc = xs.reduce((a, b) => a + b, 0) / xs.length
    const stderr = xs.length < 2 ? null : Math.sqrt(xs.reduce((a, x) => a + (x - acc) ** 2, 0) / (xs.length - 1)) / Math.sqrt(xs.length)
    subjects[s] = { n: xs.length, acc, stderr }
  }
  const group = (members: MmluGroupScore[]): MmluGroupScore => {
    const n = members.reduce((a, m) => a + m.n, 0)
    const acc = members.reduce((a, m) => a + m.acc * m.n, 0) / n
    const ok = members.every((m) => m.stderr !== null) && n > members.length
    return { n, acc, stderr: ok ? pooledStderr(members.map((m) => m.stderr!), members.map((m) => m.n)) : null }
  }
  const categories: Record<string, MmluGroupScore> = {}
  // a subject outside lm-eval's 57 goes to "unknown" rather than a guessed category
  const categoryOf = (s: string) => MMLU_CATEGORIES[s] ?? "unknown"
  for (const cat of [...new Set(Object.keys(subjects).map(categoryOf))].sort()) {
    categories[cat] = group(Object.entries(subjects).filter(([s]) => categoryOf(s) === cat).map(([, m]) => m))
  }
  const subjectAccs = Object.values(subjects).map((m) => m.acc)
  return {
    overall: group(Object.values(categories)),
    categories,
    subjects,
    macroAcc: subjectAccs.reduce((a, b) => a + b, 0) / subjectAccs.length,
  }
}
