import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, parseLabelList, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

const PiqaRecord = Schema.Struct({ goal: Schema.String, sol1: Schema.String, sol2: Schema.String })

/**
 * PIQA validation: `valid.jsonl` {goal, sol1, sol2} with the labels (0 = sol1, 1 = sol2) one per line in a
 * separate file, aligned by position. lm-eval `piqa`: context "Question: {goal}\nAnswer:", choices [" sol1", " sol2"].
 */
export function parsePiqa(text: string, file: string, labelsText: string, labelsFile: string, subset?: Subset): McItem[] {
  const rows = parseJsonLines(text, file)
  const labels = parseLabelList(labelsText, labelsFile)
  if (labels.length !== rows.length) {
    throw evalDataError(labelsFile, null, `${labels.length} labels for ${rows.length} records in ${file}`)
  }
  const items = rows.map(({ line, value }, i) => {
    const r = decodeAt(PiqaRecord, value, file, line, "PIQA record {goal, sol1, sol2}")
    if (labels[i] !== 0 && labels[i] !== 1) throw evalDataError(labelsFile, null, `label ${labels[i]} for record ${i + 1} is not 0 or 1`)
    return { id: `piqa-${i}`, options: sharedContext(`Question: ${r.goal}\nAnswer:`, [r.sol1, r.sol2]), label: labels[i] }
  })
  return selectSubset(items, subset)
}

/** `labelsPath` defaults to the data path with ".jsonl" replaced by "-labels.lst" (valid.jsonl → valid-labels.lst). */
export async function loadPiqa(path: string, options: Subset & { labelsPath?: string } = {}): Promise<McItem[]> {
  const labelsPath = options.labelsPath ?? path.replace(/\.jsonl?$/, "-labels.lst")
  return parsePiqa(await readText(path), path, await readText(labelsPath), labelsPath, options)
}
