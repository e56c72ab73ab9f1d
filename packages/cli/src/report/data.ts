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

export const ReportData = Schema.Struct({
  format: Schema.Literal(REPORT_FORMAT),
  report: EvalReportSchema,
  training: Schema.Array(LossCurve),
  examples: Schema.Array(ExampleGeneration),
})
export type ReportData = typeof ReportData.Type
