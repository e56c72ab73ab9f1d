import { Data } from "effect"

/**
 * Typed errors of the tensor core. They are Effect tagged errors (so pipelines can `catchTag` them) and plain
 * `Error`s (so ops can throw them synchronously): every message names the op and the shapes involved.
 */
export class ShapeError extends Data.TaggedError("ShapeError")<{
  readonly op: string
  readonly shapes: ReadonlyArray<ReadonlyArray<number>>
  readonly message: string
}> {}

export class DTypeError extends Data.TaggedError("DTypeError")<{
  readonly op: string
  readonly dtypes: ReadonlyArray<string>
  readonly message: string
}> {}

export class DisposedError extends Data.TaggedError("DisposedError")<{
  readonly op: string
  readonly shape: ReadonlyArray<number>
  readonly message: string
}> {}

export class BackendMismatchError extends Data.TaggedError("BackendMismatchError")<{
  readonly op: string
  readonly backends: ReadonlyArray<string>
  readonly message: string
}> {}

export class BackendUnavailableError extends Data.TaggedError("BackendUnavailableError")<{
  readonly backend: string
  readonly message: string
}> {}

export class GradientError extends Data.TaggedError("GradientError")<{
  readonly op: string
  readonly message: string
}> {}

export class LeakError extends Data.TaggedError("LeakError")<{
  readonly live: number
  readonly message: string
}> {}

export class BufferLimitError extends Data.TaggedError("BufferLimitError")<{
  readonly op: string
  readonly bytes: number
  readonly limit: number
  readonly message: string
}> {}

const fmt = (s: ReadonlyArray<number>) => `[${s.join(", ")}]`

export const shapeError = (op: string, shapes: ReadonlyArray<ReadonlyArray<number>>, why: string) =>
  new ShapeError({ op, shapes, message: `${op}: ${why} (shapes ${shapes.map(fmt).join(", ")})` })

export const dtypeError = (op: string, dtypes: ReadonlyArray<string>, why: string) =>
  new DTypeError({ op, dtypes, message: `${op}: ${why} (dtypes ${dtypes.join(", ")})` })
