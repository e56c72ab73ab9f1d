import { Data } from "effect"

/**
 * Typed errors of @bdvax/llm. Each names the file and the field or tensor at fault, so a user handed a broken
 * or malicious checkpoint learns exactly what is wrong. They are Effect tagged errors (catchTag-able) and plain
 * Errors (throwable from synchronous parsers).
 */

/** A checkpoint file (safetensors, GGUF, PEFT adapter) that is truncated, malformed or inconsistent. */
export class CheckpointError extends Data.TaggedError("CheckpointError")<{
  readonly file: string
  /** The tensor or header field at fault, when there is one. */
  readonly tensor?: string
  readonly message: string
}> {}

/** config.json / adapter_config.json / generation_config.json that does not validate. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly file: string
  readonly field: string
  readonly message: string
}> {}

/** tokenizer.json / tokenizer_config.json / GGUF tokenizer metadata / chat template problems. */
export class TokenizerError extends Data.TaggedError("TokenizerError")<{
  readonly file: string
  readonly message: string
}> {}

/** Training diverged (NaN/Inf loss or gradient) or was configured inconsistently. */
export class TrainingError extends Data.TaggedError("TrainingError")<{
  readonly step: number
  readonly message: string
}> {}

/** A model folder that lacks a required file. */
export class MissingFileError extends Data.TaggedError("MissingFileError")<{
  readonly file: string
  readonly message: string
}> {}

export const checkpointError = (file: string, message: string, tensor?: string) =>
  new CheckpointError({ file, tensor, message: `${file}${tensor ? ` (${tensor})` : ""}: ${message}` })

export const configError = (file: string, field: string, message: string) =>
  new ConfigError({ file, field, message: `${file}: field "${field}": ${message}` })
