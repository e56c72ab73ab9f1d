import { Effect, Result, Schema } from "effect"
import { OptionsError } from "../errors.js"
import { describeIssue } from "./decode.js"

/**
 * Command options are parsed by effect/cli (types, choices) and then validated as one value with a Schema, so
 * ranges and combinations are checked in one place and reported by flag name:
 *
 *   bdvax attack plant: --ratio: expected a number in (0, 1], got 3
 */

/** `poisonRatio` → `--poison-ratio`. */
export const flagName = (field: string): string => `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`

export const optionsError = (command: string, option: string, why: string) =>
  new OptionsError({ command, option, message: `bdvax ${command}: ${option}: ${why}` })

export function decodeOptions<S extends Schema.Top & { readonly DecodingServices: never }>(
  command: string,
  schema: S,
  raw: unknown,
): Effect.Effect<S["Type"], OptionsError> {
  const r = Schema.decodeUnknownResult(schema)(raw)
  if (Result.isSuccess(r)) return Effect.succeed(r.success)
  const { field, message } = describeIssue(r.failure.issue, raw)
  const option = field === "(root)" ? "options" : flagName(field.split(/[.[]/)[0])
  return Effect.fail(optionsError(command, option, message))
}
