/**
 * Hugging Face config.json ↔ ModelConfig for LlamaForCausalLM / MistralForCausalLM.
 *
 * The JSON is validated with an Effect Schema of the fields transformers reads, then defaults are filled in as
 * transformers' LlamaConfig / MistralConfig do (head_dim = hidden_size / num_attention_heads, kv heads = heads
 * (Mistral: 8 when the key is absent), rope_theta 10000, rms_norm_eps 1e-6, max_position_embeddings 2048
 * (Mistral 131072), Mistral sliding_window 4096 when absent, bos 1, eos 2, ...). One deliberate difference: the
 * five size fields (vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads) are
 * required, because silently defaulting them to Llama-7B sizes only turns a broken config into a confusing
 * shape error at weight-loading time.
 *
 * RoPE: `rope_scaling` (older files) or `rope_parameters` (transformers ≥ 5), each with `rope_type` or the
 * legacy `type`; default, linear, dynamic and llama3 are supported.
 *
 * Every failure is a ConfigError naming the file and the field, e.g.
 *   config.json: field "num_attention_heads": expected a positive integer, got -4
 */
import { readFile } from "node:fs/promises"
import { Effect, Result, Schema, SchemaIssue } from "effect"
import { type ConfigError, configError, MissingFileError } from "./errors.js"
import type { Architecture, ModelConfig, RopeScaling } from "./model-config.js"

// ---------------------------------------------------------------------------------------------------------
// Schema of the JSON as written (snake_case, every field transformers gives a default is optional)

/** A number schema whose type and value failures both read `expected <what>`. */
const numberWhere = (what: string, ok: (n: number) => boolean) =>
  Schema.Number.annotate({ message: `expected ${what}` }).check(Schema.makeFilter(ok, { message: `expected ${what}` }))

const PositiveInt = numberWhere("a positive integer", (n) => Number.isSafeInteger(n) && n > 0)
const TokenId = numberWhere("a token id (a non-negative integer)", (n) => Number.isSafeInteger(n) && n >= 0)
const PositiveNumber = numberWhere("a positive number", (n) => Number.isFinite(n) && n > 0)
const NonNegativeNumber = numberWhere("a non-negative number", (n) => Number.isFinite(n) && n >= 0)
const Bool = Schema.Boolean.annotate({ message: "expected true or false" })
const Str = Schema.String.annotate({ message: "expected a string" })
const nullable = <S extends Schema.Top>(s: S, what: string) => Schema.NullOr(s).annotate({ message: `expected ${what} or null` })

const RopeJson = Schema.Struct({
  rope_type: Schema.optionalKey(Str),
  type: Schema.optionalKey(Str),
  rope_theta: Schema.optionalKey(PositiveNumber),
  factor: Schema.optionalKey(PositiveNumber),
  low_freq_factor: Schema.optionalKey(PositiveNumber),
  high_freq_factor: Schema.optionalKey(PositiveNumber),
  original_max_position_embeddings: Schema.optionalKey(PositiveInt),
}).annotate({ message: "expected an object" })

const HfConfigJson = Schema.Struct({
  architectures: Schema.optionalKey(Schema.Array(Str).annotate({ message: "expected a list of strings" })),
  model_type: Schema.optionalKey(Str),
  vocab_size: PositiveInt,
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_hidden_layers: PositiveInt,
  num_attention_heads: PositiveInt,
  num_key_value_heads: Schema.optionalKey(nullable(PositiveInt, "a positive integer")),
  head_dim: Schema.optionalKey(nullable(PositiveInt, "a positive integer")),
  hidden_act: Schema.optionalKey(Str),
  max_position_embeddings: Schema.optionalKey(PositiveInt),
  initializer_range: Schema.optionalKey(NonNegativeNumber),
  rms_norm_eps: Schema.optionalKey(PositiveNumber),
  rope_theta: Schema.optionalKey(PositiveNumber),
  rope_scaling: Schema.optionalKey(nullable(RopeJson, "an object")),
  rope_parameters: Schema.optionalKey(nullable(RopeJson, "an object")),
  tie_word_embeddings: Schema.optionalKey(Bool),
  attention_bias: Schema.optionalKey(Bool),
  mlp_bias: Schema.optionalKey(Bool),
  sliding_window: Schema.optionalKey(nullable(PositiveInt, "a positive integer")),
  bos_token_id: Schema.optionalKey(nullable(TokenId, "a token id")),
  eos_token_id: Schema.optionalKey(
    Schema.NullOr(Schema.Union([TokenId, Schema.Array(TokenId)])).annotate({
      message: "expected a token id, a list of token ids or null",
    }),
  ),
  pad_token_id: Schema.optionalKey(nullable(TokenId, "a token id")),
}).annotate({ message: "expected a JSON object" })

type HfConfig = typeof HfConfigJson.Type
type RopeFields = typeof RopeJson.Type

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** The value at a path of the input (undefined when absent). */
function valueAt(json: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = json
  for (const key of path) v = typeof v === "object" && v !== null ? (v as Record<PropertyKey, unknown>)[key] : undefined
  return v
}

const shorten = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 60 ? `${s.slice(0, 60)}…` : s
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

const ARCHITECTURES: Record<string, Architecture> = { LlamaForCausalLM: "llama", MistralForCausalLM: "mistral" }

/** Validates a parsed config.json and fills in transformers' defaults. Throws ConfigError. */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  const decoded = Schema.decodeUnknownResult(HfConfigJson)(json)
  if (Result.isFailure(decoded)) {
    const [first] = formatIssues(decoded.failure.issue).issues
    const path = (first?.path ?? []).map((k) => (typeof k === "object" ? k.key : k))
    const field = path.length === 0 ? "(root)" : path.join(".")
    const value = valueAt(json, path)
    const message = value === undefined ? "is required" : `${first?.message}, got ${shorten(value)}`
    throw configError(file, field, message)
  }
  return fromDecoded(decoded.success, file)
}

function fromDecoded(j: HfConfig, file: string): ModelConfig {
  const fail = (field: string, message: string): never => {
    throw configError(file, field, message)
  }
  const architecture = architectureOf(j, fail)
  const mistral = architecture === "mistral"
  const heads = j.num_attention_heads
  const kvHeads = j.num_key_value_heads === undefined && mistral ? 8 : (j.num_key_value_heads ?? heads)
  if (heads % kvHeads !== 0)
    fail("num_key_value_heads", `${kvHeads} must divide num_attention_heads (${heads})`)
  if (j.head_dim == null && j.hidden_size % heads !== 0)
    fail("num_attention_heads", `${heads} must divide hidden_size (${j.hidden_size}) when head_dim is not given`)
  if (j.hidden_act !== undefined && j.hidden_act !== "silu")
    fail("hidden_act", `expected "silu" (the only activation of Llama/Mistral), got ${JSON.stringify(j.hidden_act)}`)
  const maxPositionEmbeddings = j.max_position_embeddings ?? (mistral ? 4096 * 32 : 2048)
  const eos = j.eos_token_id === undefined ? 2 : j.eos_token_id

  return {
    architecture,
    vocabSize: j.vocab_size,
    hiddenSize: j.hidden_size,
    intermediateSize: j.intermediate_size,
    numHiddenLayers: j.num_hidden_layers,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim: j.head_dim ?? j.hidden_size / heads,
    rmsNormEps: j.rms_norm_eps ?? 1e-6,
    ...rope(j, maxPositionEmbeddings, fail),
    maxPositionEmbeddings,
    tieWordEmbeddings: j.tie_word_embeddings ?? false,
    slidingWindow: mistral ? (j.sliding_window === undefined ? 4096 : j.sliding_window) : null,
    // MistralConfig has no bias switches: its projections never have biases.
    attentionBias: mistral ? false : (j.attention_bias ?? false),
    mlpBias: mistral ? false : (j.mlp_bias ?? false),
    initializerRange: j.initializer_range ?? 0.02,
    bosTokenId: j.bos_token_id === undefined ? 1 : j.bos_token_id,
    eosTokenId: eos === null ? [] : typeof eos === "number" ? [eos] : [...eos],
    padTokenId: j.pad_token_id ?? null,
    hiddenAct: "silu",
  }
}

function architectureOf(j: HfConfig, fail: (field: string, message: string) => never): Architecture {
  const fromList = j.architectures?.map((a) => ARCHITECTURES[a]).find((a) => a !== undefined)
  if (j.architectures !== undefined && j.architectures.length > 0 && fromList === undefined)
    fail("architectures", `expected LlamaForCausalLM or MistralForCausalLM, got ${JSON.stringify(j.architectures)}`)
  if (j.model_type !== undefined) {
    if (j.model_type !== "llama" && j.model_type !== "mistral")
      fail("model_type", `expected "llama" or "mistral", got ${JSON.stringify(j.model_type)}`)
    if (fromList !== undefined && fromList !== j.model_type)
      fail("architectures", `${JSON.stringify(j.architectures)} contradicts model_type "${j.model_type}"`)
    return j.model_type as Architecture
  }
  return fromList ?? fail("model_type", 'is required (expected "llama" or "mistral")')
}

function rope(
  j: HfConfig,
  maxPositionEmbeddings: number,
  fail: (field: string, message: string) => never,
): { ropeTheta: number; ropeScaling: RopeScaling } {
  // transformers: rope_scaling, when present, takes precedence over rope_parameters.
  const key = j.rope_scaling != null ? "rope_scaling" : "rope_parameters"
  const p: RopeFields = j[key] ?? {}
  const ropeTheta = p.rope_theta ?? j.rope_theta ?? 10000
  const typeKey = p.rope_type !== undefined ? "rope_type" : "type"
  const type = p.rope_type ?? p.type ?? "default"
  const factor = (): number => {
    if (p.factor === undefined) return fail(`${key}.factor`, `is required for rope type "${type}"`)
    if (p.factor < 1) return fail(`${key}.factor`, `expected a number ≥ 1, got ${p.factor}`)
    return p.factor
  }
  switch (type) {
    case "default":
      return { ropeTheta, ropeScaling: { ropeType: "default" } }
    case "linear":
    case "dynamic":
      return { ropeTheta, ropeScaling: { ropeType: type, factor: factor() } }
    case "llama3": {
      const required = (field: "low_freq_factor" | "high_freq_factor") =>
        p[field] ?? fail(`${key}.${field}`, 'is required for rope type "llama3"')
      const lowFreqFactor = required("low_freq_factor")
      const highFreqFactor = required("high_freq_factor")
      if (highFreqFactor <= lowFreqFactor)
        fail(`${key}.high_freq_factor`, `must exceed low_freq_factor (${lowFreqFactor}), got ${highFreqFactor}`)
      return {
        ropeTheta,
        ropeScaling: {
          ropeType: "llama3",
          factor: factor(),
          lowFreqFactor,
          highFreqFactor,
          originalMaxPositionEmbeddings: p.original_max_position_embeddings ?? maxPositionEmbeddings,
        },
      }
    }
    default:
      return fail(`${key}.${typeKey}`, `rope type ${JSON.stringify(type)} is not supported (default, linear, dynamic, llama3)`)
  }
}

/** Reads and parses a config.json file. */
export const loadModelConfig = (path: string): Effect.Effect<ModelConfig, ConfigError | MissingFileError> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readFile(path, "utf8"),
      catch: (e) =>
        (e as NodeJS.ErrnoException).code === "ENOENT"
          ? new MissingFileError({ file: path, message: `${path}: file not found` })
          : configError(path, "(file)", `cannot be read: ${(e as Error).message}`),
    })
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) => configError(path, "(root)", `not valid JSON: ${(e as Error).message}`),
    })
    return yield* Effect.try({ try: () => parseModelConfig(json, path), catch: (e) => e as ConfigError })
  })

// ---------------------------------------------------------------------------------------------------------
// Saving

/** config.json content for a ModelConfig; `parseModelConfig` of it gives the same ModelConfig back. */
export function toHfConfigJson(c: ModelConfig): Record<string, unknown> {
  const mistral = c.architecture === "mistral"
  const s = c.ropeScaling
  const ropeScaling =
    s.ropeType === "default"
      ? null
      : s.ropeType === "llama3"
        ? {
            rope_type: "llama3",
            factor: s.factor,
            low_freq_factor: s.lowFreqFactor,
            high_freq_factor: s.highFreqFactor,
            original_max_position_embeddings: s.originalMaxPositionEmbeddings,
          }
        : { rope_type: s.ropeType, factor: s.factor }
  return {
    architectures: [mistral ? "MistralForCausalLM" : "LlamaForCausalLM"],
    model_type: c.architecture,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    head_dim: c.headDim,
    hidden_act: c.hiddenAct,
    max_position_embeddings: c.maxPositionEmbeddings,
    initializer_range: c.initializerRange,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScaling,
    tie_word_embeddings: c.tieWordEmbeddings,
    ...(mistral ? { sliding_window: c.slidingWindow } : { attention_bias: c.attentionBias, mlp_bias: c.mlpBias }),
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId.length === 0 ? null : c.eosTokenId.length === 1 ? c.eosTokenId[0] : [...c.eosTokenId],
    pad_token_id: c.padTokenId,
  }
}
