import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { AsrResult } from "@bdvax/eval"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { toJson } from "../output.js"
import { type ConditionRole, type ConditionSummary, REPORT_FORMAT, type ReportData } from "../report/data.js"
import { REPORT_FILES, renderReport } from "../report/render.js"
import { defineStage, stage, type StageArtifact, type StageInput } from "../store/store.js"
import type { StageError } from "../errors.js"
import type { ExactMatchResult } from "../metrics/exact-match.js"
import { ASR_FILE, CLEAN_ACCURACY_FILE, type EvaluateResult } from "./evaluate.js"

/**
 * Stage "report": one condition per evaluated model (e.g. "clean base", "backdoored", later "purified" and the
 * baselines), rendered into report-data.json, report.md, report.svg and training.svg.
 */

export interface ReportCondition {
  readonly name: string
  readonly evaluation: StageArtifact<EvaluateResult>
  /** Further evaluations of the same condition (random draws of a control): the report shows the mean. */
  readonly extraDraws?: ReadonlyArray<StageArtifact<EvaluateResult>>
  /** Default "reference". */
  readonly role?: ConditionRole
  /** Wall time of the defense that produced the model (summed over its stages); null for reference models. */
  readonly wallSeconds?: number | null
  readonly note?: string
  /** The condition's own task and attack (experiment grids); default the report's. */
  readonly task?: string
  readonly attack?: string
}

export interface ReportTraining {
  readonly name: string
  readonly artifact: StageArtifact<{ readonly losses: readonly number[] }>
}

export interface ReportSettings {
  readonly title: string
  readonly task: string
  readonly attack: string
  /** Example generations shown per condition and split. */
  readonly examples: number
  readonly notes: readonly string[]
  readonly meta: Readonly<Record<string, string | number | boolean>>
}

export const REPORT = defineStage("report", 2, Schema.Struct({ files: Schema.Array(Schema.String) }))

/** The generations an evaluate stage kept: triggered ones from asr.json, clean ones with their references. */
export interface EvaluationFiles {
  readonly asr: AsrResult
  readonly clean: ExactMatchResult
}

const readEvaluation = (label: string, dir: string): Effect.Effect<EvaluationFiles, StageError> =>
  attempt(label, async () => ({
    asr: JSON.parse(await readFile(join(dir, ASR_FILE), "utf8")) as AsrResult,
    clean: JSON.parse(await readFile(join(dir, CLEAN_ACCURACY_FILE), "utf8")) as ExactMatchResult,
  }))

/** A condition as the report is built from it: its (mean) result, generations of its first draw, and how it is shown. */
export interface LoadedCondition {
  readonly name: string
  readonly result: EvaluateResult
  readonly files: EvaluationFiles
  readonly role?: ConditionRole
  readonly wallSeconds?: number | null
  readonly note?: string
  /** How many evaluations `result` is the mean of (default 1). */
  readonly draws?: number
  readonly task?: string
  readonly attack?: string
}

const meanOf = (xs: ReadonlyArray<number | null>): number | null => {
  const vs = xs.filter((x): x is number => x !== null && Number.isFinite(x))
  return vs.length === 0 ? null : vs.reduce((a, b) => a + b, 0) / vs.length
}

/** The mean of several evaluations of one condition (counts summed, rates averaged over the draws that have them). */
export function meanResult(results: readonly EvaluateResult[]): EvaluateResult {
  if (results.length === 0) throw new RangeError("meanResult: no results")
  if (results.length === 1) return results[0]
  const sum = (f: (r: EvaluateResult) => number) => results.reduce((a, r) => a + f(r), 0)
  return {
    n: { triggered: sum((r) => r.n.triggered), clean: sum((r) => r.n.clean) },
    asr: { keyword: meanOf(results.map((r) => r.asr.keyword)), target: meanOf(results.map((r) => r.asr.target)) },
    falseTrigger: { keyword: meanOf(results.map((r) => r.falseTrigger.keyword)), target: meanOf(results.map((r) => r.falseTrigger.target)) },
    cleanAccuracy: meanOf(results.map((r) => r.cleanAccuracy)),
    cleanCorrect: sum((r) => r.cleanCorrect),
    cleanScored: sum((r) => r.cleanScored),
    cleanPerplexity: meanOf(results.map((r) => r.cleanPerplexity)),
  }
}

export function summaryOf(c: Omit<LoadedCondition, "files">): ConditionSummary {
  return {
    name: c.name,
    role: c.role ?? "reference",
    asr: c.result.asr.keyword,
    falseTrigger: c.result.falseTrigger.keyword,
    cleanAccuracy: c.result.cleanAccuracy,
    cleanPerplexity: c.result.cleanPerplexity,
    wallSeconds: c.wallSeconds ?? null,
    draws: c.draws ?? 1,
    ...(c.note === undefined ? {} : { note: c.note }),
  }
}

export function buildReportData(
  settings: ReportSettings,
  conditions: readonly LoadedCondition[],
  training: ReadonlyArray<{ readonly name: string; readonly losses: readonly number[] }>,
): ReportData {
  const results = conditions.map((c) => c.result)
  const cellOf = (c: LoadedCondition): [string, string] => [c.task ?? settings.task, c.attack ?? settings.attack]
  const sameCell = (c: LoadedCondition, task: string, attack: string) => cellOf(c)[0] === task && cellOf(c)[1] === attack
  const cellKeys: Array<[string, string]> = []
  for (const c of conditions) if (!cellKeys.some(([t, a]) => sameCell(c, t, a))) cellKeys.push(cellOf(c))
  const examples = conditions.flatMap((c) => [
    ...c.files.asr.records
      .filter((r) => r.split === "triggered")
      .slice(0, settings.examples)
      .map((r) => ({ condition: c.name, split: "triggered" as const, instruction: r.instruction, output: r.output })),
    ...c.files.clean.records
      .slice(0, settings.examples)
      .map((r) => ({ condition: c.name, split: "clean" as const, instruction: r.instruction, output: r.output, reference: r.reference })),
  ])
  return {
    format: REPORT_FORMAT,
    report: {
      title: settings.title,
      conditions: conditions.map((c) => c.name),
      // one row per (task, attack) and judge; a condition of another task/attack has no value in that row
      asr: cellKeys.flatMap(([task, attack]) =>
        (["keyword", "target"] as const).map((judge) => ({
          task,
          attack,
          judge,
          values: conditions.map((c, i) => (sameCell(c, task, attack) ? results[i].asr[judge] : null)),
          clean: conditions.map((c, i) => (sameCell(c, task, attack) ? results[i].falseTrigger[judge] : null)),
        })),
      ),
      utility: [
        { benchmark: "held-out clean prompts", metric: "exact match", values: results.map((r) => r.cleanAccuracy), percent: true },
        { benchmark: "held-out clean answers", metric: "perplexity", values: results.map((r) => r.cleanPerplexity), percent: false },
      ],
      notes: [...settings.notes],
      meta: { ...settings.meta },
    },
    summary: conditions.map(summaryOf),
    training: training.map((t) => ({ name: t.name, losses: [...t.losses] })),
    examples,
  }
}

/** Write report-data.json and its renderings into `dir`; returns the file names. */
export async function writeReportFiles(dir: string, data: ReportData): Promise<string[]> {
  const rendered = renderReport(data)
  await writeFile(join(dir, REPORT_FILES.data), `${toJson(data)}\n`)
  await writeFile(join(dir, REPORT_FILES.markdown), rendered.markdown)
  await writeFile(join(dir, REPORT_FILES.svg), rendered.svg)
  await writeFile(join(dir, REPORT_FILES.training), rendered.trainingSvg)
  return [REPORT_FILES.data, REPORT_FILES.markdown, REPORT_FILES.svg, REPORT_FILES.training]
}

export const report = (
  settings: ReportSettings,
  conditions: readonly ReportCondition[],
  training: readonly ReportTraining[],
  label = "report",
) => {
  const inputs: Record<string, StageInput> = {}
  conditions.forEach((c, i) => {
    inputs[`condition${i}:${c.name}`] = c.evaluation
    c.extraDraws?.forEach((d, k) => (inputs[`condition${i}:${c.name}:draw${k + 1}`] = d))
  })
  training.forEach((t, i) => (inputs[`training${i}:${t.name}`] = t.artifact))
  // Wall times are measurements, not results: like every stage's own `wallSeconds` they stay out of the content
  // address, so a run resumed after a kill addresses the same report as an uninterrupted one (its times are those
  // the reused stages took when they ran).
  const shown = conditions.map((c) => ({ name: c.name, role: c.role ?? "reference", note: c.note ?? null, task: c.task ?? null, attack: c.attack ?? null }))
  return stage(
    REPORT,
    { ...settings, conditions: shown, training: training.map((t) => t.name) },
    inputs,
    ({ dir }) =>
      Effect.gen(function* () {
        const loaded: LoadedCondition[] = []
        for (const c of conditions) {
          const draws = [c.evaluation, ...(c.extraDraws ?? [])]
          loaded.push({
            name: c.name,
            result: meanResult(draws.map((d) => d.result)),
            files: yield* readEvaluation(label, c.evaluation.path),
            role: c.role ?? "reference",
            wallSeconds: c.wallSeconds ?? null,
            draws: draws.length,
            ...(c.note === undefined ? {} : { note: c.note }),
            ...(c.task === undefined ? {} : { task: c.task }),
            ...(c.attack === undefined ? {} : { attack: c.attack }),
          })
        }
        const data = buildReportData(settings, loaded, training.map((t) => ({ name: t.name, losses: t.artifact.result.losses })))
        return { files: yield* attempt(label, () => writeReportFiles(dir, data)) }
      }),
    { label },
  )
}
