import { readFile, writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { AsrResult } from "@bdvax/eval"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { toJson } from "../output.js"
import { REPORT_FORMAT, type ReportData } from "../report/data.js"
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

export const REPORT = defineStage("report", 1, Schema.Struct({ files: Schema.Array(Schema.String) }))

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

export function buildReportData(
  settings: ReportSettings,
  conditions: ReadonlyArray<{ readonly name: string; readonly result: EvaluateResult; readonly files: EvaluationFiles }>,
  training: ReadonlyArray<{ readonly name: string; readonly losses: readonly number[] }>,
): ReportData {
  const results = conditions.map((c) => c.result)
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
      asr: (["keyword", "target"] as const).map((judge) => ({
        task: settings.task,
        attack: settings.attack,
        judge,
        values: results.map((r) => r.asr[judge]),
        clean: results.map((r) => r.falseTrigger[judge]),
      })),
      utility: [
        { benchmark: "held-out clean prompts", metric: "exact match", values: results.map((r) => r.cleanAccuracy), percent: true },
        { benchmark: "held-out clean answers", metric: "perplexity", values: results.map((r) => r.cleanPerplexity), percent: false },
      ],
      notes: [...settings.notes],
      meta: { ...settings.meta },
    },
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
  conditions.forEach((c, i) => (inputs[`condition${i}:${c.name}`] = c.evaluation))
  training.forEach((t, i) => (inputs[`training${i}:${t.name}`] = t.artifact))
  return stage(
    REPORT,
    { ...settings, conditions: conditions.map((c) => c.name), training: training.map((t) => t.name) },
    inputs,
    ({ dir }) =>
      Effect.gen(function* () {
        const loaded = []
        for (const c of conditions) loaded.push({ name: c.name, result: c.evaluation.result, files: yield* readEvaluation(label, c.evaluation.path) })
        const data = buildReportData(settings, loaded, training.map((t) => ({ name: t.name, losses: t.artifact.result.losses })))
        return { files: yield* attempt(label, () => writeReportFiles(dir, data)) }
      }),
    { label },
  )
}
