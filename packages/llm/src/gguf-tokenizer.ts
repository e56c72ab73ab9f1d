import { Tokenizer, tokenizerError } from "./tokenizer.js"

/**
 * A Tokenizer from GGUF metadata. A GGUF carries no tokenizer.json: llama.cpp's converter stores the vocabulary,
 * merges, token types and special ids under tokenizer.ggml.*, and names the pre-tokenizer rather than spelling
 * it out. This file rebuilds the tokenizer.json (and tokenizer_config.json) that the model's own Hugging Face
 * tokenizer would have, and hands them to Tokenizer.fromJson.
 *
 * Supported: tokenizer.ggml.model "gpt2" (byte-level BPE: SmolLM, Llama 3, Mistral Nemo, Qwen 2) and "llama"
 * (SentencePiece BPE with byte fallback: Llama 1/2, Mistral 7B).
 */

/** llama.cpp's token types (tokenizer.ggml.token_type). */
const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const

// Pre-tokenizer regexes, by the tokenizer.ggml.pre names llama.cpp gives them. They are the split patterns of
// the models' own tokenizer.json files, which llama.cpp also uses.
const GPT2_SPLIT = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const TEKKEN_SPLIT =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

interface ByteLevelFamily {
  /** Split patterns applied in order before the byte-level mapping; [] = GPT-2's built-in regex. */
  readonly splits: readonly string[]
  /** Whether BPE first looks a whole pre-token up in the vocabulary (tokenizer.json's ignore_merges). */
  readonly ignoreMerges: boolean
  /** llama.cpp's add_bos default for the family, used when tokenizer.ggml.add_bos_token is absent. */
  readonly addBos: boolean
}

const GPT2_FAMILY: ByteLevelFamily = { splits: [], ignoreMerges: false, addBos: false }
// SmolLM, StarCoder, Refact, Command-R ...: every digit on its own, then GPT-2's pattern.
const DIGITS_FAMILY: ByteLevelFamily = { splits: ["\\p{N}", GPT2_SPLIT], ignoreMerges: false, addBos: false }
const LLAMA3_FAMILY: ByteLevelFamily = { splits: [LLAMA3_SPLIT], ignoreMerges: true, addBos: true }

const BYTE_LEVEL_FAMILIES: Record<string, ByteLevelFamily> = {
  default: GPT2_FAMILY,
  gpt2: GPT2_FAMILY,
  "gpt-2": GPT2_FAMILY,
  mpt: GPT2_FAMILY,
  olmo: GPT2_FAMILY,
  jais: GPT2_FAMILY,
  smollm: DIGITS_FAMILY,
  starcoder: DIGITS_FAMILY,
  refact: DIGITS_FAMILY,
  "command-r": DIGITS_FAMILY,
  codeshell: DIGITS_FAMILY,
  exaone: DIGITS_FAMILY,
  minerva: DIGITS_FAMILY,
  llama3: LLAMA3_FAMILY,
  "llama-v3": LLAMA3_FAMILY,
  "llama-bpe": LLAMA3_FAMILY,
  falcon3: LLAMA3_FAMILY,
  pixtral: LLAMA3_FAMILY,
  "smaug-bpe": { splits: [LLAMA3_SPLIT], ignoreMerges: false, addBos: false },
  dbrx: { splits: [LLAMA3_SPLIT], ignoreMerges: false, addBos: false },
  tekken: { splits: [TEKKEN_SPLIT], ignoreMerges: true, addBos: true },
  qwen2: { splits: [QWEN2_SPLIT], ignoreMerges: false, addBos: false },
  "deepseek-r1-qwen": { splits: [QWEN2_SPLIT], ignoreMerges: false, addBos: false },
}

type Json = Record<string, unknown>

/** Reads typed values out of the metadata map, with errors that name the key. */
class Metadata {
  constructor(
    private readonly map: ReadonlyMap<string, unknown>,
    readonly file: string,
  ) {}

  has(key: string): boolean {
    return this.map.has(key)
  }

  fail(key: string, message: string): never {
    throw tokenizerError(this.file, `${key}: ${message}`)
  }

  string(key: string): string | undefined {
    const v = this.map.get(key)
    if (v === undefined) return undefined
    return typeof v === "string" ? v : this.fail(key, "expected a string")
  }

  bool(key: string): boolean | undefined {
    const v = this.map.get(key)
    if (v === undefined) return undefined
    return typeof v === "boolean" ? v : this.fail(key, "expected a boolean")
  }

  /** GGUF integers arrive as numbers or (64-bit ones) bigints. */
  integer(key: string): number | undefined {
    const v = this.map.get(key)
    if (v === undefined) return undefined
    const n = typeof v === "bigint" ? Number(v) : v
    return typeof n === "number" && Number.isSafeInteger(n) ? n : this.fail(key, "expected an integer")
  }

  strings(key: string): string[] | undefined {
    const v = this.map.get(key)
    if (v === undefined) return undefined
    if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) return this.fail(key, "expected an array of strings")
    return v as string[]
  }

  /** Numeric arrays may be plain arrays or typed arrays, depending on the reader. */
  numbers(key: string): number[] | undefined {
    const v = this.map.get(key)
    if (v === undefined) return undefined
    const list = Array.isArray(v) || ArrayBuffer.isView(v) ? Array.from(v as ArrayLike<number | bigint>, Number) : null
    if (list === null || list.some((n) => !Number.isFinite(n))) return this.fail(key, "expected an array of numbers")
    return list
  }
}

/**
 * Builds the Tokenizer a GGUF describes. `metadata` maps GGUF keys to values (strings, booleans, numbers or
 * bigints, arrays); `file` names the GGUF in error messages.
 */
export function tokenizerFromGguf(metadata: ReadonlyMap<string, unknown>, file: string): Tokenizer {
  // Annotated so that calls to md.fail (which returns never) narrow control flow.
  const md: Metadata = new Metadata(metadata, file)
  const model = md.string("tokenizer.ggml.model") ?? md.fail("tokenizer.ggml.model", "missing")
  const tokens = md.strings("tokenizer.ggml.tokens") ?? md.fail("tokenizer.ggml.tokens", "missing")
  if (tokens.length === 0) md.fail("tokenizer.ggml.tokens", "is empty")
  const types = md.numbers("tokenizer.ggml.token_type")
  if (types !== undefined && types.length !== tokens.length) {
    md.fail("tokenizer.ggml.token_type", `has ${types.length} entries for ${tokens.length} tokens`)
  }
  const ids = specialIds(md, tokens.length)
  const typeOf = (id: number) => types?.[id] ?? (Object.values(ids).includes(id) ? TokenType.control : TokenType.normal)

  let synthesised: { json: Json; addBos: boolean }
  if (model === "gpt2") synthesised = byteLevelTokenizer(md, tokens, typeOf)
  else if (model === "llama") synthesised = sentencePieceTokenizer(md, tokens, typeOf, ids.unk)
  else md.fail("tokenizer.ggml.model", `"${model}" is not supported (only "gpt2" and "llama")`)

  const content = (id: number | undefined) => (id === undefined ? null : tokens[id])
  const architecture = md.string("general.architecture")
  const contextLength = architecture === undefined ? undefined : md.integer(`${architecture}.context_length`)
  const config: Json = {
    bos_token: content(ids.bos),
    eos_token: content(ids.eos),
    unk_token: content(ids.unk),
    pad_token: content(ids.pad),
    add_bos_token: md.bool("tokenizer.ggml.add_bos_token") ?? synthesised.addBos,
    add_eos_token: md.bool("tokenizer.ggml.add_eos_token") ?? false,
    clean_up_tokenization_spaces: false,
    ...(contextLength === undefined ? {} : { model_max_length: contextLength }),
    ...chatTemplateConfig(md),
  }
  return Tokenizer.fromJson(synthesised.json, config, {
    tokenizerFile: `${file} (tokenizer.ggml.*)`,
    configFile: `${file} (tokenizer.ggml.* / tokenizer.chat_template)`,
  })
}

function specialIds(md: Metadata, size: number) {
  const id = (key: string) => {
    const v = md.integer(key)
    // llama.cpp writes -1 (as uint32 0xFFFFFFFF) for "none".
    if (v === undefined || v === -1 || v === 0xffffffff) return undefined
    return v >= 0 && v < size ? v : md.fail(key, `token id ${v} is outside the ${size}-token vocabulary`)
  }
  return {
    bos: id("tokenizer.ggml.bos_token_id"),
    eos: id("tokenizer.ggml.eos_token_id"),
    unk: id("tokenizer.ggml.unknown_token_id"),
    pad: id("tokenizer.ggml.padding_token_id"),
  }
}

/** tokenizer.chat_template, plus llama.cpp's named extras (tokenizer.chat_template.<name>). */
function chatTemplateConfig(md: Metadata): Json {
  const main = md.string("tokenizer.chat_template")
  const names = md.strings("tokenizer.chat_templates") ?? []
  if (names.length === 0) return main === undefined ? {} : { chat_template: main }
  const list = names.map((name) => ({
    name,
    template: md.string(`tokenizer.chat_template.${name}`) ?? md.fail(`tokenizer.chat_template.${name}`, "missing"),
  }))
  return { chat_template: main === undefined ? list : [{ name: "default", template: main }, ...list] }
}

/** Control tokens become special added tokens, user-defined ones plain added tokens (matched whole in text). */
function addedTokens(tokens: readonly string[], typeOf: (id: number) => number, extra: readonly number[] = []): Json[] {
  const added: Json[] = []
  tokens.forEach((content, id) => {
    const type = typeOf(id)
    const special = type === TokenType.control || extra.includes(id)
    if (!special && type !== TokenType.userDefined) return
    added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special })
  })
  return added
}

function vocabulary(tokens: readonly string[]): Record<string, number> {
  const vocab: Record<string, number> = {}
  tokens.forEach((t, i) => {
    vocab[t] = i
  })
  return vocab
}

function byteLevelTokenizer(md: Metadata, tokens: readonly string[], typeOf: (id: number) => number) {
  const merges = md.strings("tokenizer.ggml.merges") ?? md.fail("tokenizer.ggml.merges", "missing (a gpt2 vocabulary needs its merges)")
  const pre = md.string("tokenizer.ggml.pre") ?? "default"
  const family = BYTE_LEVEL_FAMILIES[pre] ?? md.fail("tokenizer.ggml.pre", `pre-tokenizer "${pre}" is not supported`)
  const byteLevel = (useRegex: boolean) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex })
  const split = (pattern: string) => ({ type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false })
  const preTokenizer =
    family.splits.length === 0
      ? byteLevel(true)
      : { type: "Sequence", pretokenizers: [...family.splits.map(split), byteLevel(false)] }
  const json: Json = {
    version: "1.0",
    added_tokens: addedTokens(tokens, typeOf),
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: family.ignoreMerges,
      vocab: vocabulary(tokens),
      merges,
    },
  }
  return { json, addBos: family.addBos }
}

/**
 * SentencePiece BPE as Hugging Face's Llama tokenizer.json spells it: spaces become "▁" (with one prepended
 * to each stretch of text, as llama.cpp and the legacy Llama tokenizer do), BPE over the whole stretch, bytes
 * of unknown characters as <0xXX> tokens.
 */
function sentencePieceTokenizer(md: Metadata, tokens: readonly string[], typeOf: (id: number) => number, unk: number | undefined) {
  const addSpacePrefix = md.bool("tokenizer.ggml.add_space_prefix") ?? true
  const merges: string[] | [string, string][] = md.strings("tokenizer.ggml.merges") ?? mergesFromScores(md, tokens, typeOf)
  const unkToken = unk === undefined ? null : tokens[unk]
  const replaceSpaces = { type: "Replace", pattern: { String: " " }, content: "\u2581" }
  const json: Json = {
    version: "1.0",
    added_tokens: addedTokens(tokens, typeOf, unk === undefined ? [] : [unk]),
    normalizer: addSpacePrefix
      ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }, replaceSpaces] }
      : replaceSpaces,
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        ...(addSpacePrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unkToken,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: tokens.some((_, id) => typeOf(id) === TokenType.byte),
      ignore_merges: false,
      vocab: vocabulary(tokens),
      merges,
    },
  }
  return { json, addBos: true }
}

/**
 * SentencePiece stores no merges: encoding repeatedly joins the adjacent pair whose union has the highest score.
 * The equivalent BPE merge list ranks every split (left, right) of every normal token, both halves in the
 * vocabulary, by the token's score, best first; equal scores keep vocabulary order.
 */
function mergesFromScores(md: Metadata, tokens: readonly string[], typeOf: (id: number) => number): [string, string][] {
  const scores = md.numbers("tokenizer.ggml.scores") ?? md.fail("tokenizer.ggml.scores", "missing (needed without tokenizer.ggml.merges)")
  if (scores.length !== tokens.length) md.fail("tokenizer.ggml.scores", `has ${scores.length} entries for ${tokens.length} tokens`)
  const ids = new Map(tokens.map((t, i) => [t, i]))
  const candidates: { left: string; right: string; score: number; id: number; leftId: number }[] = []
  tokens.forEach((token, id) => {
    if (typeOf(id) !== TokenType.normal) return
    const chars = Array.from(token)
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join("")
      const right = chars.slice(k).join("")
      const leftId = ids.get(left)
      if (leftId !== undefined && ids.has(right)) candidates.push({ left, right, score: scores[id], id, leftId })
    }
  })
  candidates.sort((a, b) => b.score - a.score || a.id - b.id || a.leftId - b.leftId)
  // Pairs, not "left right" strings: a SentencePiece token may itself contain a space.
  return candidates.map((c) => [c.left, c.right])
}
