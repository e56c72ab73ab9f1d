import { Data } from "effect"

/**
 * Typed errors of the bdvax command line. Every message names what the user has to look at: the file and the
 * field, the stage, or the run folder. They are Effect tagged errors (pipelines `catchTag` them) and `Error`s.
 */

/** The artifact store could not read or write something: `path` is the file or folder at fault. */
export class StoreError extends Data.TaggedError("StoreError")<{
  readonly path: string
  readonly message: string
}> {}

/** A JSON file (experiment, report data, records) or a value that does not match its schema. */
export class ConfigDecodeError extends Data.TaggedError("ConfigDecodeError")<{
  /** The file decoded, or null for a value that came from elsewhere (e.g. command-line flags). */
  readonly file: string | null
  /** Where in the value, e.g. `defenses[2].rho`; "(root)" for the whole value. */
  readonly field: string
  readonly message: string
}> {}

/** A command's options that do not validate (ranges, combinations); `option` is the flag, e.g. `--ratio`. */
export class OptionsError extends Data.TaggedError("OptionsError")<{
  readonly command: string
  readonly option: string
  readonly message: string
}> {}

/** A stage whose work failed (a library error, a bad model folder, …): names the stage and keeps the cause. */
export class StageError extends Data.TaggedError("StageError")<{
  readonly stage: string
  readonly message: string
  readonly cause?: unknown
}> {}

export const storeError = (path: string, why: string, cause?: unknown): StoreError =>
  new StoreError({ path, message: `${path}: ${why}${cause === undefined ? "" : `: ${errorText(cause)}`}` })

/** The message of anything thrown (Errors, tagged errors, strings). */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message
  if (typeof e === "object" && e !== null && "message" in e && typeof e.message === "string") return e.message
  return String(e)
}
