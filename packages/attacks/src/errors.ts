import { Data } from "effect"

/** A dataset file that cannot be read as instruction records: names the file, the record (or line) and field. */
export class DatasetError extends Data.TaggedError("DatasetError")<{
  readonly file: string
  /** 1-based line for JSONL, 0-based record index for a JSON array; null when the file as a whole is bad. */
  readonly location: string | null
  readonly message: string
}> {}

export const datasetError = (file: string, location: string | null, why: string) =>
  new DatasetError({ file, location, message: `${file}${location ? ` ${location}` : ""}: ${why}` })
