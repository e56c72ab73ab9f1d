import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

const RteRecord = Schema.Struct({
  premise: Schema.String,
  hypothesis: Schema.String,
  idx: Schema.optionalKey(Schema.Number),
  label: Schema.Union([Schema.String, Schema.Number]),
})

/**
 * RTE (SuperGLUE validation JSONL = GLUE RTE dev). lm-eval `rte` (glue):
 * context "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:", choices [" True", " False"],
 * gold 0 for "entailment" and 1 for "not_entailment" (numeric labels 0/1 are taken as GLUE's).
 */
export function parseRte(text: string, file: string, subset?: Subset): McItem[] {
  const items = parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(RteRecord, value, file, line, "RTE record {premise, hypothesis, label, idx}")
    const label = r.label === "entailment" || r.label === 0 ? 0 : r.label === "not_entailment" || r.label === 1 ? 1 : -1
    if (label < 0) throw evalDataError(file, line, `label must be "entailment"/"not_entailment", got ${JSON.stringify(r.label)}`)
    return {
      id: `rte-${r.idx ?? i}`,
      options: sharedContext(`${r.premise}\nQuestion: ${r.hypothesis} True or False?\nAnswer:`, ["True", "False"]),
      label,
    }
  })
  return selectSubset(items, subset)
}

export const loadRte = async (path: string, subset?: Subset) => parseRte(await readText(path), path, subset)
