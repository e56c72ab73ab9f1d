import { Schema } from "effect"
import { evalDataError } from "../errors.js"
import { decodeAt, parseJsonLines, readText } from "../io.js"
import { selectSubset, type Subset } from "../subset.js"
import { sharedContext, type McItem } from "./types.js"

/**
 * lm-eval's HellaSwag `preprocess`: strip, " [title]" → ". ", drop every "[...]" tag (non-greedy, within a line),
 * then one pass of "  " → " ".
 */
export function hellaswagPreprocess(text: string): string {
  let t = text.trim()
  t = t.replaceAll(" [title]", ". ")
  t = t.replace(/\[.*?\]/g, "")
  t = t.replaceAll("  ", " ")
  return t
}

/** Python's `str.capitalize()`: first character upper-cased, the rest lower-cased. */
export const pyCapitalize = (s: string): string => {
  const cps = [...s]
  return cps.length ? cps[0].toUpperCase() + cps.slice(1).join("").toLowerCase() : s
}

const HellaswagRecord = Schema.Struct({
  idx: Schema.optionalKey(Schema.Number),
  ind: Schema.optionalKey(Schema.Number),
  activity_label: Schema.String,
  /** the converted full val set (`ctx` = ctx_a + " " + ctx_b, ctx_b not capitalised, tags already removed) */
  ctx: Schema.optionalKey(Schema.String),
  /** the raw 500-item sample's name for the same field */
  context: Schema.optionalKey(Schema.String),
  /** the original HF/Rowan form */
  ctx_a: Schema.optionalKey(Schema.String),
  ctx_b: Schema.optionalKey(Schema.String),
  label: Schema.Union([Schema.Number, Schema.String]),
  endings: Schema.Array(Schema.String),
})

/**
 * HellaSwag validation. lm-eval `hellaswag`: query = preprocess(activity_label + ": " + ctx_a + " " +
 * ctx_b.capitalize()), choices = the preprocessed endings, gold = label.
 *
 * Records with `ctx_a`/`ctx_b` are built exactly that way. The shared full validation set only has `ctx`
 * (= ctx_a + " " + ctx_b, already preprocessed, with ctx_b **not** capitalised, e.g. "...on a roof. he") and the
 * raw sample has `context` (same, with tags): for those the query is preprocess(activity_label + ": " + ctx),
 * i.e. ctx_b's first letter stays lower-case (and the rest of ctx_b keeps its case, which capitalize() would
 * lower). This is a deviation from lm-eval we cannot undo, because the ctx_a/ctx_b split is lost.
 */
export function parseHellaswag(text: string, file: string): McItem[] {
  return parseJsonLines(text, file).map(({ line, value }, i) => {
    const r = decodeAt(HellaswagRecord, value, file, line, "HellaSwag record {activity_label, ctx, label, endings}")
    let ctx: string
    if (r.ctx_a !== undefined && r.ctx_b !== undefined) ctx = `${r.ctx_a} ${pyCapitalize(r.ctx_b)}`
    else if (r.ctx !== undefined) ctx = r.ctx
    else if (r.context !== undefined) ctx = r.context
    else throw evalDataError(file, line, "no ctx (or ctx_a/ctx_b, or context) field")
    const label = typeof r.label === "number" ? r.label : /^\d+$/.test(r.label) ? Number(r.label) : -1
    if (!Number.isInteger(label) || label < 0 || label >= r.endings.length) {
      throw evalDataError(file, line, `label ${JSON.stringify(r.label)} is not an index into ${r.endings.length} endings`)
    }
    return {
      id: `hellaswag-${r.idx ?? r.ind ?? i}`,
      options: sharedContext(hellaswagPreprocess(`${r.activity_label}: ${ctx}`), r.endings.map(hellaswagPreprocess)),
      label,
    }
  })
}

/** Load one file or several parts, concatenated in the order given (the shared full set is 3 parts). */
export async function loadHellaswag(paths: string | readonly string[], subset?: Subset): Promise<McItem[]> {
  const all: McItem[] = []
  for (const p of typeof paths === "string" ? [paths] : paths) all.push(...parseHellaswag(await readText(p), p))
  return selectSubset(all, subset)
}
