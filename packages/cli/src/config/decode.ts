import { readFile } from "node:fs/promises"
import { Effect, Result, Schema, SchemaIssue } from "effect"
import { ConfigDecodeError } from "../errors.js"

/**
 * Decoding JSON with Effect Schema into errors a person can act on: the file, the field path written the way one
 * would write it in JavaScript (`defenses[2].rho`), what was expected and what was found, e.g.
 *
 *   experiment.json: defenses[2].rho: expected a number between 0 and 1, got 3
 */

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

type PathKey = PropertyKey | { readonly key: PropertyKey }

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$-]*$/

/** `["defenses", 2, "rho"]` → `defenses[2].rho`; the empty path is "(root)". */
export function formatPath(path: readonly PathKey[]): string {
  let out = ""
  for (const raw of path) {
    const k = typeof raw === "object" && raw !== null ? raw.key : raw
    if (typeof k === "number") out += `[${k}]`
    else if (typeof k === "string" && IDENTIFIER.test(k)) out += out === "" ? k : `.${k}`
    else out += `[${JSON.stringify(String(k))}]`
  }
  return out === "" ? "(root)" : out
}

function valueAt(value: unknown, path: readonly PathKey[]): { found: boolean; value: unknown } {
  let v: unknown = value
  for (const raw of path) {
    const k = typeof raw === "object" && raw !== null ? raw.key : raw
    if (typeof v !== "object" || v === null || !(k in (v as object))) return { found: false, value: undefined }
    v = (v as Record<PropertyKey, unknown>)[k]
  }
  return { found: true, value: v }
}

const shorten = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 80 ? `${s.slice(0, 80)}…` : s
}

/** Schema's stock messages ("Expected number", "Missing key") in the tone of the rest of the CLI. */
function explain(message: string, at: { found: boolean; value: unknown }): string {
  if (message === "Missing key" || !at.found || at.value === undefined) return "is required"
  if (message === "Expected no excess property") return "is not a known field"
  const lowered = message.replace(/^Expected (number|string|boolean|array|object)\b/, (_, t: string) => `expected ${/^[aeiou]/.test(t) ? "an" : "a"} ${t}`)
  const text = lowered.charAt(0).toLowerCase() + lowered.slice(1)
  return `${text}, got ${shorten(at.value)}`
}

export interface DecodeFailure {
  readonly field: string
  readonly message: string
}

/** The first problem of a failed decode, with its path made readable. */
export function describeIssue(issue: SchemaIssue.Issue, input: unknown): DecodeFailure {
  const [first] = formatIssues(issue).issues
  const path = (first?.path ?? []) as readonly PathKey[]
  return { field: formatPath(path), message: explain(first?.message ?? "is invalid", valueAt(input, path)) }
}

/** Decode `input` with `schema`; a failure names `file` (or "value") and the field. Excess fields are errors. */
export function decodeValue<S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  input: unknown,
  file: string | null,
): Effect.Effect<S["Type"], ConfigDecodeError> {
  const r = Schema.decodeUnknownResult(schema)(input, { onExcessProperty: "error" })
  if (Result.isSuccess(r)) return Effect.succeed(r.success)
  const { field, message } = describeIssue(r.failure.issue, input)
  return Effect.fail(new ConfigDecodeError({ file, field, message: `${file ?? "value"}: ${field}: ${message}` }))
}

/** Read a JSON file and decode it; unreadable files and invalid JSON fail with the file named too. */
export function decodeJsonFile<S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  file: string,
): Effect.Effect<S["Type"], ConfigDecodeError> {
  return Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readFile(file, "utf8"),
      catch: (e) => new ConfigDecodeError({ file, field: "(root)", message: `${file}: cannot read: ${(e as Error).message}` }),
    })
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) => new ConfigDecodeError({ file, field: "(root)", message: `${file}: not valid JSON: ${(e as Error).message}` }),
    })
    return yield* decodeValue(schema, json, file)
  })
}
