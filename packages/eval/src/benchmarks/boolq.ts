import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

const BoolqRecord = Schema.Struct({
  question: Schema.String,
  passage: Schema.String,
  idx: Schema.optionalKey(Schema.Number),
  label: Schema.Union([Schema.String, Schema.Boolean, Schema.Number]),
})

/**
 * BoolQ (SuperGLUE validation JSONL). lm-eval `boolq`: context "{passage}\nQuestion: {question}?\nAnswer:",
 * choices [" no", " yes"], gold 1 when the label is true. The label is accepted as the string "true"/"false"
 * (this copy), a JSON boolean, or 0/1.
 */
export function parseBoolq(text: string, file: string, subset?: Subset): McItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(BoolqRecord, value, file, line, "BoolQ record {question, passage, idx, label}")
    const l = r.label
    const yes = l === true || l === "true" || l === 1 ? true : l === false || l === "false" || l === 0 ? false : null
    if (yes === null) throw evalDataError(file, line, `label must be "true"/"false" (or a boolean, 0/1), got ${JSON.stringify(l)}`)
    return {
      id: `boolq-${r.idx ?? i}`,
      options: sharedContext(`${r.passage}\nQuestion: ${r.question}?\nAnswer:`, ["no", "yes"]),
      label: yes ? 1 : 0,
    }
  })
  return selectSubset(items, subset)
}

export const loadBoolq = async (path: string, subset?: Subset) => parseBoolq(await readText(path), path, subset)
