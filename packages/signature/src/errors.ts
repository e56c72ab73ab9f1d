import { Data } from "effect"

/**
 * Typed errors of @bdvax/signature. Effect tagged errors (catchTag-able) that are also plain Errors, so the
 * synchronous parsers can throw them; each names the file and the field at fault.
 */

/** A signature file that cannot be read, is not JSON, or does not validate. */
export class SignatureFileError extends Data.TaggedError("SignatureFileError")<{
  readonly file: string
  /** Dotted path of the offending field ("selection.mlp.0.channels"), "(root)" for the document as a whole. */
  readonly field: string
  readonly message: string
}> {}

/** A delta file whose metadata or tensors are not what saveDelta writes. */
export class DeltaFileError extends Data.TaggedError("DeltaFileError")<{
  readonly file: string
  /** The metadata key or tensor name at fault, "(root)" for the file as a whole. */
  readonly field: string
  readonly message: string
}> {}

/** A signature applied to a model of another shape: names the Hugging Face config field that differs. */
export class SignatureMismatchError extends Data.TaggedError("SignatureMismatchError")<{
  readonly field: string
  readonly expected: number
  readonly actual: number
  readonly message: string
}> {}

export const signatureFileError = (file: string, field: string, why: string) =>
  new SignatureFileError({ file, field, message: `${file}: field "${field}": ${why}` })

export const deltaFileError = (file: string, field: string, why: string) =>
  new DeltaFileError({ file, field, message: `${file}: "${field}": ${why}` })
