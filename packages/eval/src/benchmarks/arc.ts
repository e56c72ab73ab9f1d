import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

const ArcRecord = Schema.Struct({
  id: Schema.String,
  question: Schema.Struct({
    stem: Schema.String,
    choices: Schema.Array(Schema.Struct({ text: Schema.String, label: Schema.String })),
  }),
  answerKey: Schema.String,
})

/**
 * ARC-Easy / ARC-Challenge (AI2's JSONL). lm-eval `arc_easy` / `arc_challenge`:
 * context "Question: {stem}\nAnswer:", continuations " {choice}", gold = the index of `answerKey` among
 * `choices[].label` (the key is A-E or "1"-"4", so it is matched by label, never by position). 3 to 5 choices.
 */
export function parseArc(text: string, file: string, subset?: Subset): McItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }) => {
    const r = decodeAt(ArcRecord, value, file, line, "ARC record {id, question:{stem, choices}, answerKey}")
    const labels = r.question.choices.map((c) => c.label)
    const gold = labels.indexOf(r.answerKey)
    if (gold < 0) throw evalDataError(file, line, `answerKey ${JSON.stringify(r.answerKey)} is not one of the choice labels [${labels.join(", ")}]`)
    if (r.question.choices.length < 2) throw evalDataError(file, line, "fewer than 2 choices")
    return {
      id: r.id,
      options: sharedContext(`Question: ${r.question.stem}\nAnswer:`, r.question.choices.map((c) => c.text)),
      label: gold,
    }
  })
  return selectSubset(items, subset)
}

export const loadArc = async (path: string, subset?: Subset) => parseArc(await readText(path), path, subset)
