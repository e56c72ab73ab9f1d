import { Schema } from "effect"

/**
 * report-data.json: everything a run's report is drawn from — eval's EvalReport (ASR and utility per condition),
 * training loss curves, and example generations. `bdvax report` re-renders report.md / report.svg /
 * training.svg from this file alone, so a report can be regenerated (or restyled) without touching a model.
 */
export const REPORT_DATA_FILE = "report-data.json"
export const REPORT_FORMAT = "bdvax-report/1"

const Value = Schema.NullOr(Schema.Number)

/** eval's ReportAsrRow. */
export const ReportAsrRow = Schema.Struct({
  task: Schema.String,
  attack: Schema.String,
  values: Schema.Array(Value),
  clean: Schema.optionalKey(Schema.Array(Value)),
  judge: Schema.optionalKey(Schema.String),
})

/** eval's ReportUtilityRow. */
export const ReportUtilityRow = Schema.Struct({
  benchmark: Schema.String,
  metric: Schema.String,
  values: Schema.Array(Value),
  stderr: Schema.optionalKey(Schema.Array(Value)),
  percent: Schema.optionalKey(Schema.Boolean),
})

/** eval's EvalReport. */
export const EvalReportSchema = Schema.Struct({
  title: Schema.String,
  conditions: Schema.Array(Schema.String),
  asr: Schema.Array(ReportAsrRow),
  utility: Schema.Array(ReportUtilityRow),
  notes: Schema.optionalKey(Schema.Array(Schema.String)),
  meta: Schema.optionalKey(Schema.Record(Schema.String, Schema.Union([Schema.String, Schema.Number, Schema.Boolean]))),
})

export const LossCurve = Schema.Struct({ name: Schema.String, losses: Schema.Array(Schema.Number) })
export type LossCurve = typeof LossCurve.Type

export const ExampleGeneration = Schema.Struct({
  condition: Schema.String,
  split: Schema.Literals(["triggered", "clean"]),
  instruction: Schema.String,
  output: Schema.String,
  reference: Schema.optionalKey(Schema.String),
})
export type ExampleGeneration = typeof ExampleGeneration.Type

/** What a condition is: a reference model, the attacked model before any defense, the method, a baseline, or a control. */
export const CONDITION_ROLES = ["reference", "attacked", "method", "baseline", "control"] as const
export const ConditionRole = Schema.Literals(CONDITION_ROLES)
export type ConditionRole = typeof ConditionRole.Type

/**
 * One row of the summary table: a condition's ASR (keyword judge), false-trigger rate, clean exact match and the
 * wall time of the defense that produced it (null for reference models). Conditions evaluated over several
 * random draws (controls) show the mean; `draws` says how many.
 */
export const ConditionSummary = Schema.Struct({
  name: Schema.String,
  role: ConditionRole,
  asr: Value,
  falseTrigger: Value,
  cleanAccuracy: Value,
  cleanPerplexity: Value,
  wallSeconds: Value,
  draws: Schema.Number,
  note: Schema.optionalKey(Schema.String),
})
export type ConditionSummary = typeof ConditionSummary.Type

export const ReportData = Schema.Struct({
  format: Schema.Literal(REPORT_FORMAT),
  report: EvalReportSchema,
  /** One row per condition; absent in reports written before the summary existed. */
  summary: Schema.optionalKey(Schema.Array(ConditionSummary)),
  training: Schema.Array(LossCurve),
  examples: Schema.Array(ExampleGeneration),
})
export type ReportData = typeof ReportData.Type
