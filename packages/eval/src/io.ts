import { readFile } from "node:fs/promises"
import { Result, Schema } from "effect"
import { evalDataError } from "./errors.js"

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8")
  } catch (e) {
    throw evalDataError(path, null, `cannot read: ${(e as Error).message}`)
  }
}

/** One parsed line of a JSONL file with its 1-based line number. Blank lines are skipped. */
export interface JsonLine {
  readonly line: number
  readonly value: unknown
}

export function parseJsonLines(text: string, file: string): JsonLine[] {
  const out: JsonLine[] = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i]
    if (raw.trim() === "") continue
    try {
      out.push({ line: i + 1, value: JSON.parse(raw) })
    } catch (e) {
      throw evalDataError(file, i + 1, `invalid JSON: ${(e as Error).message}`)
    }
  }
  return out
}

/** Decode `value` with `schema`, or throw an EvalDataError naming the file and line. */
export function decodeAt<S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  value: unknown,
  file: string,
  line: number | null,
  what: string,
): S["Type"] {
  const r = Schema.decodeUnknownResult(schema)(value)
  if (Result.isFailure(r)) throw evalDataError(file, line, `not a ${what}: ${r.failure.message}`)
  return r.success
}

/** One CSV record with the 1-based line it starts on. */
export interface CsvRecord {
  readonly line: number
  readonly fields: string[]
}

/**
 * RFC 4180 CSV (what Python's csv module and pandas write): comma-separated fields; a field in double quotes may
 * hold commas, newlines and `""` for a literal quote; CRLF or LF line ends; a final newline is optional.
 * Lenient like Python's csv reader: a quote inside an unquoted field is literal, and text after a closing quote is
 * appended. An unterminated quoted field is an error naming the line it started on.
 */
export function parseCsv(text: string, file: string, delimiter = ","): CsvRecord[] {
  const out: CsvRecord[] = []
  let fields: string[] = []
  let field = ""
  let line = 1
  let recordLine = 1
  let i = 0
  let atFieldStart = true
  let inQuotes = false
  let quoteLine = 0
  const n = text.length
  const endRecord = () => {
    fields.push(field)
    // a blank line is no record (Python's csv reader yields [] for it; we drop it)
    if (!(fields.length === 1 && fields[0] === "")) out.push({ line: recordLine, fields })
    fields = []
    field = ""
    atFieldStart = true
  }
  while (i < n) {
    const c = text[i]
    if (inQuotes) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"'
          i += 2
          continue
        }
        inQuotes = false
        i++
        continue
      }
      if (c === "\n") line++
      field += c
      i++
      continue
    }
    if (c === '"' && atFieldStart) {
      inQuotes = true
      quoteLine = line
      atFieldStart = false
      i++
      continue
    }
    if (c === delimiter) {
      fields.push(field)
      field = ""
      atFieldStart = true
      i++
      continue
    }
    if (c === "\r" && text[i + 1] === "\n") {
      i++
      continue
    }
    if (c === "\n") {
      endRecord()
      line++
      recordLine = line
      i++
      continue
    }
    field += c
    atFieldStart = false
    i++
  }
  if (inQuotes) throw evalDataError(file, quoteLine, "unterminated quoted field")
  if (field !== "" || fields.length > 0) endRecord()
  return out
}

/** A file of one integer label per line (PIQA's valid-labels.lst, WinoGrande's dev-labels.lst). */
export function parseLabelList(text: string, file: string): number[] {
  const out: number[] = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const s = lines[i].trim()
    if (s === "") continue
    if (!/^-?\d+$/.test(s)) throw evalDataError(file, i + 1, `expected an integer label, got ${JSON.stringify(s)}`)
    out.push(Number(s))
  }
  return out
}

/** Python's `len(str)`: the number of code points, not UTF-16 units. */
export const pyLen = (s: string): number => {
  let n = 0
  for (const _ of s) n++
  return n
}
