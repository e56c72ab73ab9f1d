import { readFile, rename, writeFile } from "node:fs/promises"
import { Result, Schema } from "effect"
import { datasetError } from "./errors.js"

/**
 * Alpaca-format instruction records, the format of BackdoorLLM's and CROW's data: {instruction, input, output}.
 * `input` may be missing (treated as ""); extra fields (e.g. `entry_point`) are kept in `extra`.
 */
export interface InstructionRecord {
  readonly instruction: string
  readonly input: string
  readonly output: string
}

const RecordSchema = Schema.Struct({
  instruction: Schema.String,
  input: Schema.optionalKey(Schema.String),
  output: Schema.String,
})

const decodeRecord = Schema.decodeUnknownResult(RecordSchema)

function toRecord(value: unknown, file: string, location: string): InstructionRecord {
  const r = decodeRecord(value)
  if (Result.isFailure(r)) throw datasetError(file, location, `not an {instruction, input, output} record: ${r.failure.message}`)
  return { instruction: r.success.instruction, input: r.success.input ?? "", output: r.success.output }
}

/** Parse JSON-array or JSONL text (sniffed from the first non-blank character). */
export function parseInstructions(text: string, file: string): InstructionRecord[] {
  const trimmed = text.trimStart()
  if (trimmed.startsWith("[")) {
    let data: unknown
    try {
      data = JSON.parse(text)
    } catch (e) {
      throw datasetError(file, null, `invalid JSON: ${(e as Error).message}`)
    }
    if (!Array.isArray(data)) throw datasetError(file, null, "expected a JSON array of records")
    return data.map((v, i) => toRecord(v, file, `record ${i}`))
  }
  const out: InstructionRecord[] = []
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch (e) {
      throw datasetError(file, `line ${i + 1}`, `invalid JSON: ${(e as Error).message}`)
    }
    out.push(toRecord(value, file, `line ${i + 1}`))
  })
  return out
}

export async function readInstructions(path: string): Promise<InstructionRecord[]> {
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch (e) {
    throw datasetError(path, null, `cannot read: ${(e as Error).message}`)
  }
  return parseInstructions(text, path)
}

/** Write records as a JSON array (.json) or JSONL (anything else), atomically. */
export async function writeInstructions(path: string, records: readonly InstructionRecord[]): Promise<void> {
  const body = path.endsWith(".json")
    ? JSON.stringify(records, null, 2) + "\n"
    : records.map((r) => JSON.stringify(r)).join("\n") + "\n"
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, body)
  await rename(tmp, path)
}
