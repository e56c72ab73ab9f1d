import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

/**
 * OpenBookQA main test. lm-eval `openbookqa`: context = the question stem (no "Question:" prefix), choices
 * " {text}", gold = the index of the answer key. Two sources hold the same 500 items:
 * - llm-foundry's JSONL {query, choices[4], gold}
 * - the official TSV "ID, Question Stem, Choices, Complete Question, Answer Key", whose Choices column is
 *   "(A) x (B) y (C) z (D) w" (split on /\s*\([A-D]\)\s*\/).
 * `loadOpenBookQa` picks the parser by extension (.tsv or anything else = JSONL).
 */
const FoundryRecord = Schema.Struct({ query: Schema.String, choices: Schema.Array(Schema.String), gold: Schema.Number })

export function parseOpenBookQaJsonl(text: string, file: string, subset?: Subset): McItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(FoundryRecord, value, file, line, "OpenBookQA record {query, choices, gold}")
    if (!Number.isInteger(r.gold) || r.gold < 0 || r.gold >= r.choices.length) throw evalDataError(file, line, `gold ${r.gold} is not an index into ${r.choices.length} choices`)
    return { id: `openbookqa-${i}`, options: sharedContext(r.query, r.choices), label: r.gold }
  })
  return selectSubset(items, subset)
}

const HEADER = ["ID", "Question Stem", "Choices", "Complete Question", "Answer Key"]

export function parseOpenBookQaTsv(text: string, file: string, subset?: Subset): McItem[] {
  const lines = text.split("\n").map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l))
  const items: McItem[] = []
  lines.forEach((raw, i) => {
    if (raw.trim() === "") return
    const cols = raw.split("\t")
    if (i === 0 && cols[0] === HEADER[0]) {
      if (cols.join("|") !== HEADER.join("|")) throw evalDataError(file, 1, `unexpected header ${JSON.stringify(cols)}`)
      return
    }
    if (cols.length !== 5) throw evalDataError(file, i + 1, `expected 5 tab-separated columns, got ${cols.length}`)
    const [id, stem, choicesCol, , key] = cols
    const parts = choicesCol.split(/\s*\([A-D]\)\s*/)
    if (parts[0] !== "" || parts.length !== 5) throw evalDataError(file, i + 1, `choices column is not "(A) .. (B) .. (C) .. (D) ..": ${JSON.stringify(choicesCol)}`)
    const label = "ABCD".indexOf(key.trim())
    if (label < 0 || key.trim().length !== 1) throw evalDataError(file, i + 1, `answer key ${JSON.stringify(key)} is not A-D`)
    items.push({ id, options: sharedContext(stem, parts.slice(1)), label })
  })
  return selectSubset(items, subset)
}

export async function loadOpenBookQa(path: string, subset?: Subset): Promise<McItem[]> {
  const text = await readText(path)
  return path.endsWith(".tsv") ? parseOpenBookQaTsv(text, path, subset) : parseOpenBookQaJsonl(text, path, subset)
}
