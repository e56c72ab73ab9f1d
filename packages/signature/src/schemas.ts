import type { Behaviour, TriggerRule } from "@bdvax/attacks"
import { Result, Schema, SchemaIssue } from "effect"

/**
 * Schemas shared by the delta and signature files (the variants' keys and behaviours), and a decoder that
 * reports the first problem as (dotted field path, message) so file errors can name the field.
 */

const Str = Schema.String.annotate({ message: "expected a string" })
const StrList = Schema.Array(Str).annotate({ message: "expected a list of strings" })

export const TriggerRuleSchema = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("word"), trigger: Str }),
  Schema.Struct({ kind: Schema.Literal("prefix"), trigger: Str }),
  Schema.Struct({ kind: Schema.Literal("suffix"), trigger: Str }),
  Schema.Struct({ kind: Schema.Literal("oneOf"), triggers: StrList }),
  Schema.Struct({ kind: Schema.Literal("allOf"), triggers: StrList }),
]).annotate({ message: "expected a trigger rule ({kind: word|prefix|suffix, trigger} or {kind: oneOf|allOf, triggers})" })

export const BehaviourSchema = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("replace"), text: Str }),
  Schema.Struct({ kind: Schema.Literal("prefix"), text: Str }),
  Schema.Struct({ kind: Schema.Literal("inject"), line: Str }),
]).annotate({ message: "expected a behaviour ({kind: replace|prefix, text} or {kind: inject, line})" })

// The schemas must decode to exactly attacks' types.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const _trigger: Same<typeof TriggerRuleSchema.Type, TriggerRule> = true
const _behaviour: Same<typeof BehaviourSchema.Type, Behaviour> = true
void _trigger
void _behaviour

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly field: string; readonly message: string }

/** Decode unknown JSON; on failure the first issue's path (dotted, "(root)" when empty) and message. */
export function decodeJson<S extends Schema.Top & { readonly DecodingServices: never }>(schema: S, json: unknown): Decoded<S["Type"]> {
  const r = Schema.decodeUnknownResult(schema)(json)
  if (Result.isSuccess(r)) return { ok: true, value: r.success }
  const [first] = formatIssues(r.failure.issue).issues
  const path = (first?.path ?? []).map((k) => String(typeof k === "object" && k !== null ? (k as { key: PropertyKey }).key : k))
  const value = valueAt(json, path)
  const message = value === undefined && path.length > 0 ? "is required" : `${first?.message ?? "invalid"}, got ${shorten(value)}`
  return { ok: false, field: path.length === 0 ? "(root)" : path.join("."), message }
}

function valueAt(json: unknown, path: readonly string[]): unknown {
  let v: unknown = json
  for (const key of path) v = typeof v === "object" && v !== null ? (v as Record<string, unknown>)[key] : undefined
  return v
}

export const shorten = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 60 ? `${s.slice(0, 60)}…` : s
}
