import { Data } from "effect"

/**
 * A benchmark or evaluation data file that cannot be read: names the file and, where it applies, the 1-based
 * line (for CSV: the line the record starts on). `message` is `file:line: why` so a thrown error reads well.
 */
export class EvalDataError extends Data.TaggedError("EvalDataError")<{
  readonly file: string
  readonly line: number | null
  readonly message: string
}> {}

export const evalDataError = (file: string, line: number | null, why: string) =>
  new EvalDataError({ file, line, message: `${file}${line !== null ? `:${line}` : ""}: ${why}` })

/** A model callback (LogLikelihood, Generate, TokenNll) broke its contract, e.g. returned the wrong number of results. */
export class ModelContractError extends Data.TaggedError("ModelContractError")<{
  readonly callback: string
  readonly message: string
}> {}

/** An LLM judge call that failed for good (after its retries): HTTP status, timeout, or an unusable body. */
export class JudgeError extends Data.TaggedError("JudgeError")<{
  readonly attempts: number
  readonly message: string
}> {}
