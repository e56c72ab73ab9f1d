import { randomBytes } from "node:crypto"
import { readFile, rename, unlink, writeFile } from "node:fs/promises"
import type { ModelConfig } from "@bdvax/llm"
import { Schema } from "effect"
import { SignatureMismatchError, signatureFileError } from "./errors.js"
import { MODEL_SHAPE_FIELDS, type ModelShape, modelShape } from "./model-shape.js"
import { BehaviourSchema, decodeJson, TriggerRuleSchema } from "./schemas.js"
import { SIGNATURE_FORMAT, SIGNATURE_VERSION, type Signature } from "./signature.js"

/**
 * Signature files: the Signature as JSON (objects indented, number lists on one line — a 7B model's scores are
 * about a million numbers). Reading validates the structure with an Effect Schema and then the consistency a
 * schema cannot express (score lists as long as the model's layers/channels/heads, selection indices in range,
 * sorted and unique); every failure is a SignatureFileError naming the file and the dotted field.
 */

const numberWhere = (what: string, ok: (n: number) => boolean) =>
  Schema.Number.annotate({ message: `expected ${what}` }).check(Schema.makeFilter(ok, { message: `expected ${what}` }))
const PositiveInt = numberWhere("a positive integer", (n) => Number.isSafeInteger(n) && n > 0)
const Index = numberWhere("a non-negative integer", (n) => Number.isSafeInteger(n) && n >= 0)
const Finite = numberWhere("a finite number", Number.isFinite)
const NonNegative = numberWhere("a finite number ≥ 0", (n) => Number.isFinite(n) && n >= 0)
const Fraction = numberWhere("a number in [0, 1]", (n) => n >= 0 && n <= 1)
const Str = Schema.String.annotate({ message: "expected a string" })
const Bool = Schema.Boolean.annotate({ message: "expected true or false" })
const list = <S extends Schema.Top>(s: S) => Schema.Array(s).annotate({ message: "expected a list" })
const struct = <F extends Schema.Struct.Fields>(fields: F) => Schema.Struct(fields).annotate({ message: "expected an object" })

const ModelShapeSchema = struct({
  num_hidden_layers: PositiveInt,
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_attention_heads: PositiveInt,
  num_key_value_heads: PositiveInt,
  head_dim: PositiveInt,
})

const UnitScoresSchema = struct({ norm: list(Finite), alignment: list(Finite), total: list(Finite) })
const LayerScoresSchema = struct({
  layer: Index,
  mlp: Schema.NullOr(UnitScoresSchema).annotate({ message: "expected scores {norm, alignment, total} or null" }),
  heads: Schema.NullOr(UnitScoresSchema).annotate({ message: "expected scores {norm, alignment, total} or null" }),
})

const SelectionSchema = struct({
  mlp: list(struct({ layer: Index, channels: list(Index) })),
  heads: list(struct({ layer: Index, heads: list(Index) })),
})

const TrainingSchema = struct({
  epochs: PositiveInt,
  lr: NonNegative,
  batchSize: PositiveInt,
  maxSteps: Schema.NullOr(PositiveInt).annotate({ message: "expected a positive integer or null" }),
  gradAccumSteps: PositiveInt,
  schedule: Schema.Literals(["linear", "cosine", "constant"]).annotate({ message: 'expected "linear", "cosine" or "constant"' }),
  warmupRatio: NonNegative,
  weightDecay: NonNegative,
  maxGradNorm: NonNegative,
  maxLength: Schema.NullOr(PositiveInt).annotate({ message: "expected a positive integer or null" }),
  promptFormat: Str,
  addBos: Bool,
})

const SettingsSchema = struct({
  numVariants: PositiveInt,
  seed: Index,
  subsetSize: PositiveInt,
  poisonRatio: Fraction,
  lambda: NonNegative,
  rho: Fraction,
  rhoHeads: Schema.NullOr(Fraction).annotate({ message: "expected a number in [0, 1] or null" }),
  criterion: Schema.Literals(["total", "norm", "alignment"]).annotate({ message: 'expected "total", "norm" or "alignment"' }),
  training: TrainingSchema,
  variants: list(struct({ index: Index, trigger: TriggerRuleSchema, behaviour: BehaviourSchema })),
})

export const SignatureSchema = struct({
  format: Schema.Literal(SIGNATURE_FORMAT).annotate({ message: `expected "${SIGNATURE_FORMAT}"` }),
  version: Schema.Literal(SIGNATURE_VERSION).annotate({ message: `expected ${SIGNATURE_VERSION} (the version this build reads)` }),
  architecture: Str,
  model: ModelShapeSchema,
  mode: Schema.Literals(["full", "adapter"]).annotate({ message: 'expected "full" or "adapter"' }),
  settings: SettingsSchema,
  scores: list(LayerScoresSchema),
  selection: SelectionSchema,
})

// What the schema decodes must be a Signature.
const _decodesToSignature = (x: typeof SignatureSchema.Type): Signature => x
void _decodesToSignature

/** Checks a schema cannot express; returns [field, message] of the first problem. */
function inconsistency(s: Signature): [string, string] | null {
  const m = s.model
  if (m.num_attention_heads % m.num_key_value_heads !== 0)
    return ["model.num_key_value_heads", `${m.num_key_value_heads} does not divide num_attention_heads (${m.num_attention_heads})`]
  if (s.settings.variants.length !== s.settings.numVariants)
    return ["settings.variants", `lists ${s.settings.variants.length} variants, settings.numVariants is ${s.settings.numVariants}`]
  if (s.scores.length !== m.num_hidden_layers) return ["scores", `has ${s.scores.length} layers, the model has ${m.num_hidden_layers}`]
  for (let l = 0; l < s.scores.length; l++) {
    const layer = s.scores[l]
    if (layer.layer !== l) return [`scores.${l}.layer`, `is ${layer.layer}, expected ${l} (layers in order)`]
    for (const [unit, count] of [["mlp", m.intermediate_size], ["heads", m.num_attention_heads]] as const) {
      const u = layer[unit]
      if (u === null) continue
      for (const term of ["norm", "alignment", "total"] as const)
        if (u[term].length !== count) return [`scores.${l}.${unit}.${term}`, `has ${u[term].length} entries, the model has ${count} ${unit === "mlp" ? "MLP channels" : "attention heads"} per layer`]
    }
  }
  const checkGroups = (kind: "mlp" | "heads", groups: ReadonlyArray<{ layer: number; indices: readonly number[] }>, key: string, count: number): [string, string] | null => {
    for (let g = 0; g < groups.length; g++) {
      const { layer, indices } = groups[g]
      if (layer >= m.num_hidden_layers) return [`selection.${kind}.${g}.layer`, `is ${layer}, the model has ${m.num_hidden_layers} layers`]
      if (g > 0 && layer <= groups[g - 1].layer) return [`selection.${kind}.${g}.layer`, `is ${layer}, after layer ${groups[g - 1].layer} (layers must ascend, each once)`]
      if (indices.length === 0) return [`selection.${kind}.${g}.${key}`, "is empty (only layers with a selection are listed)"]
      for (let k = 0; k < indices.length; k++) {
        if (indices[k] >= count) return [`selection.${kind}.${g}.${key}.${k}`, `is ${indices[k]}, the layer has ${count}`]
        if (k > 0 && indices[k] <= indices[k - 1]) return [`selection.${kind}.${g}.${key}.${k}`, `is ${indices[k]} after ${indices[k - 1]} (indices must ascend, each once)`]
      }
    }
    return null
  }
  return (
    checkGroups("mlp", s.selection.mlp.map((x) => ({ layer: x.layer, indices: x.channels })), "channels", m.intermediate_size) ??
    checkGroups("heads", s.selection.heads.map((x) => ({ layer: x.layer, indices: x.heads })), "heads", m.num_attention_heads)
  )
}

/** Validate parsed JSON as a signature; `file` names the source in errors. */
export function parseSignature(json: unknown, file: string): Signature {
  const decoded = decodeJson(SignatureSchema, json)
  if (!decoded.ok) throw signatureFileError(file, decoded.field, decoded.message)
  const problem = inconsistency(decoded.value)
  if (problem !== null) throw signatureFileError(file, problem[0], problem[1])
  return decoded.value
}

export async function readSignatureFile(path: string): Promise<Signature> {
  let text: string
  try {
    text = await readFile(path, "utf8")
  } catch (e) {
    throw signatureFileError(path, "(root)", `cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw signatureFileError(path, "(root)", `is not valid JSON (${(e as Error).message})`)
  }
  return parseSignature(json, path)
}

/** JSON with objects indented and lists of numbers/strings on one line. */
export function formatSignatureJson(value: unknown, indent = ""): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  const inner = `${indent}  `
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) return JSON.stringify(value)
    if (value.length === 0) return "[]"
    return `[\n${value.map((v) => inner + formatSignatureJson(v, inner)).join(",\n")}\n${indent}]`
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined)
  if (entries.length === 0) return "{}"
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${formatSignatureJson(v, inner)}`).join(",\n")}\n${indent}}`
}

/** Write atomically: a temporary file in the same folder, renamed over `path`. Validates first. */
export async function writeSignatureFile(path: string, signature: Signature): Promise<void> {
  parseSignature(JSON.parse(JSON.stringify(signature)), path)
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`
  try {
    await writeFile(temp, `${formatSignatureJson(signature)}\n`)
    await rename(temp, path)
  } catch (e) {
    await unlink(temp).catch(() => undefined)
    throw e
  }
}

/**
 * Can this signature be applied to a model with this config? Its channels and heads are positions in the
 * weight matrices, so every dimension must match; throws SignatureMismatchError naming the config.json field.
 */
export function checkCompatible(signature: { readonly model: ModelShape }, config: ModelConfig): void {
  const actual = modelShape(config)
  for (const field of MODEL_SHAPE_FIELDS)
    if (signature.model[field] !== actual[field])
      throw new SignatureMismatchError({
        field,
        expected: signature.model[field],
        actual: actual[field],
        message: `the signature was computed for ${field} = ${signature.model[field]}, the model has ${field} = ${actual[field]}`,
      })
}
