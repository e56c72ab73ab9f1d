import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { TARGET_DELIMITER, type McItem } from "./types.js"

const WinograndeRecord = Schema.Struct({
  qID: Schema.optionalKey(Schema.String),
  sentence: Schema.String,
  option1: Schema.String,
  option2: Schema.String,
  answer: Schema.Union([Schema.String, Schema.Number]),
})

/**
 * WinoGrande dev (winogrande_xl validation). lm-eval `winogrande`, partial scoring: for i = the first "_",
 * option k's context is sentence[:i] + option_k and every option shares the continuation
 * " " + sentence[i+1:].strip(); gold = answer - 1 ("1"/"2"). lm-eval reports acc only; acc_norm would divide by
 * the context lengths (its `doc_to_choice` are the contexts), which is what `choice` holds here.
 */
export function parseWinogrande(text: string, file: string, subset?: Subset): McItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(WinograndeRecord, value, file, line, "WinoGrande record {qID, sentence, option1, option2, answer}")
    const idx = r.sentence.indexOf("_")
    if (idx < 0) throw evalDataError(file, line, 'sentence has no "_" blank')
    const answer = String(r.answer)
    if (answer !== "1" && answer !== "2") throw evalDataError(file, line, `answer must be "1" or "2", got ${JSON.stringify(r.answer)}`)
    const continuation = TARGET_DELIMITER + r.sentence.slice(idx + 1).trim()
    const options = [r.option1, r.option2].map((opt) => {
      const context = r.sentence.slice(0, idx) + opt
      return { context, continuation, choice: context }
    })
    return { id: r.qID ?? `winogrande-${i}`, options, label: Number(answer) - 1 }
  })
  return selectSubset(items, subset)
}

export const loadWinogrande = async (path: string, subset?: Subset) => parseWinogrande(await readText(path), path, subset)
