import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers"
import { TokenizerError } from "./errors.js"

/**
 * A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) behind a small typed API, on top of
 * @huggingface/tokenizers. It follows transformers v5 where the two differ (see `adaptForTokenizersJs`), and
 * every failure is a TokenizerError that names the file at fault.
 */

export interface SpecialToken {
  readonly content: string
  readonly id: number
}

export interface EncodeOptions {
  /** Apply the post-processor's BOS/EOS (transformers' add_special_tokens). Default true, as in transformers. */
  readonly addSpecialTokens?: boolean
}

export interface DecodeOptions {
  /** Drop added tokens marked special (transformers' skip_special_tokens). Default false. */
  readonly skipSpecialTokens?: boolean
}

/** "left" for generation (every prompt ends at the last column), "right" for training. */
export type PaddingSide = "left" | "right"

export interface BatchEncodeOptions extends EncodeOptions {
  readonly paddingSide: PaddingSide
  /** Overrides the tokenizer's pad token (trainers often pad with EOS when a model has no pad token). */
  readonly padTokenId?: number
}

export interface BatchEncoding {
  /** One row per text, all padded to the longest. */
  readonly inputIds: number[][]
  /** 1 for real tokens, 0 for padding. */
  readonly attentionMask: number[][]
}

/** Where a tokenizer came from, for error messages: the files (or GGUF keys) its two halves were read from. */
export interface TokenizerSource {
  readonly tokenizerFile: string
  readonly configFile: string
}

/** The name a chat template given as a plain string is stored under (transformers uses the same). */
export const DEFAULT_CHAT_TEMPLATE = "default"

type Json = Record<string, unknown>

const SUPPORTED_MODELS = new Set(["BPE", "Unigram", "WordPiece"])

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v)

export class Tokenizer {
  readonly bosToken: SpecialToken | null
  readonly eosToken: SpecialToken | null
  readonly padToken: SpecialToken | null
  readonly unkToken: SpecialToken | null
  /** Whether encode() with addSpecialTokens prepends BOS / appends EOS. */
  readonly addBosToken: boolean
  readonly addEosToken: boolean
  /** Chat templates by name; a single template is stored as DEFAULT_CHAT_TEMPLATE. */
  readonly chatTemplates: ReadonlyMap<string, string>
  /** tokenizer_config.json's model_max_length, or null when absent or the "unbounded" 1e30 sentinel. */
  readonly modelMaxLength: number | null
  readonly source: TokenizerSource
  private readonly inner: HfTokenizer
  private readonly idCount: number
  private readonly specialIds: ReadonlySet<number>

  private constructor(inner: HfTokenizer, config: Json, tokenizerJson: Json, source: TokenizerSource) {
    this.inner = inner
    this.source = source
    this.idCount = countIds(inner)
    this.specialIds = new Set([...inner.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id))
    const special = (name: string) => specialToken(inner, config, name, source)
    this.bosToken = special("bos_token")
    this.eosToken = special("eos_token")
    this.padToken = special("pad_token")
    this.unkToken = special("unk_token")
    const template = templateTokens(tokenizerJson.post_processor)
    this.addBosToken = this.bosToken !== null && template.first === this.bosToken.content
    this.addEosToken = this.eosToken !== null && template.last === this.eosToken.content
    this.chatTemplates = chatTemplates(config.chat_template, source.configFile)
    const max = config.model_max_length
    this.modelMaxLength = typeof max === "number" && Number.isSafeInteger(max) && max > 0 ? max : null
  }

  /**
   * Builds a tokenizer from the parsed contents of tokenizer.json and tokenizer_config.json (pass {} when a
   * model has no tokenizer_config.json). Throws TokenizerError naming `source` when either is malformed.
   */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: unknown, source: TokenizerSource): Tokenizer {
    if (!isObject(tokenizerJson)) throw tokenizerError(source.tokenizerFile, "is not a JSON object")
    if (!isObject(tokenizerJson.model)) throw tokenizerError(source.tokenizerFile, 'has no "model" object')
    const modelType = tokenizerJson.model.type
    // @huggingface/tokenizers guesses a model from the vocabulary's shape when the type is one it lacks (such
    // as WordLevel), and then tokenizes wrongly; refuse instead.
    if (typeof modelType !== "string" || !SUPPORTED_MODELS.has(modelType)) {
      throw tokenizerError(source.tokenizerFile, `model type ${JSON.stringify(modelType)} is not supported (BPE, Unigram, WordPiece)`)
    }
    if (!isObject(tokenizerConfig)) throw tokenizerError(source.configFile, "is not a JSON object")
    const adapted = adaptForTokenizersJs(tokenizerJson, tokenizerConfig, source.configFile)
    let inner: HfTokenizer
    try {
      inner = new HfTokenizer(adapted, {
        ...tokenizerConfig,
        // transformers v5 defaults this to false; @huggingface/tokenizers to true.
        clean_up_tokenization_spaces: tokenizerConfig.clean_up_tokenization_spaces === true,
      })
    } catch (e) {
      throw tokenizerError(source.tokenizerFile, `is not a tokenizer @huggingface/tokenizers can load: ${errorText(e)}`)
    }
    keepByteOrderMarks(inner.decoder)
    return new Tokenizer(inner, tokenizerConfig, adapted, source)
  }

  /** Loads `<dir>/tokenizer.json` (required) and `<dir>/tokenizer_config.json` (optional, as in transformers). */
  static async fromFolder(dir: string): Promise<Tokenizer> {
    const tokenizerFile = join(dir, "tokenizer.json")
    const configFile = join(dir, "tokenizer_config.json")
    const tokenizerJson = await readJson(tokenizerFile, true)
    const config = (await readJson(configFile, false)) ?? {}
    return Tokenizer.fromJson(tokenizerJson, config, { tokenizerFile, configFile })
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    // @huggingface/tokenizers throws on an empty list; transformers returns "".
    if (ids.length === 0) return ""
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || this.inner.id_to_token(id) === undefined) {
        throw tokenizerError(this.source.tokenizerFile, `cannot decode token id ${id}: not in the vocabulary`)
      }
    }
    return this.inner.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false })
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token)
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id)
  }

  /** Number of token ids, added tokens included (transformers' len(tokenizer)). */
  get vocabSize(): number {
    return this.idCount
  }

  get bosTokenId(): number | null {
    return this.bosToken?.id ?? null
  }

  get eosTokenId(): number | null {
    return this.eosToken?.id ?? null
  }

  get padTokenId(): number | null {
    return this.padToken?.id ?? null
  }

  /** Whether `id` is an added token marked special (what decode's skipSpecialTokens drops). */
  isSpecialId(id: number): boolean {
    return this.specialIds.has(id)
  }

  /** A chat template by name; without a name, the default one (or the only one). */
  chatTemplate(name?: string): string | undefined {
    if (name !== undefined) return this.chatTemplates.get(name)
    const fallback = this.chatTemplates.size === 1 ? [...this.chatTemplates.values()][0] : undefined
    return this.chatTemplates.get(DEFAULT_CHAT_TEMPLATE) ?? fallback
  }

  /** Encodes every text and pads them to the longest, on `paddingSide`. */
  encodeBatch(texts: readonly string[], options: BatchEncodeOptions): BatchEncoding {
    const rows = texts.map((t) => this.encode(t, options))
    const width = Math.max(0, ...rows.map((r) => r.length))
    const padId = options.padTokenId ?? this.padTokenId
    if (padId === null && rows.some((r) => r.length < width)) {
      throw tokenizerError(this.source.configFile, "has no pad_token: pass padTokenId to pad this batch")
    }
    const inputIds: number[][] = []
    const attentionMask: number[][] = []
    for (const row of rows) {
      const pad = new Array<number>(width - row.length).fill(padId ?? 0)
      const zeros = new Array<number>(pad.length).fill(0)
      const ones = new Array<number>(row.length).fill(1)
      const left = options.paddingSide === "left"
      inputIds.push(left ? [...pad, ...row] : [...row, ...pad])
      attentionMask.push(left ? [...zeros, ...ones] : [...ones, ...zeros])
    }
    return { inputIds, attentionMask }
  }
}

export function tokenizerError(file: string, message: string): TokenizerError {
  return new TokenizerError({ file, message: `${file}: ${message}` })
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))

async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string
  try {
    text = await readFile(file, "utf8")
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw tokenizerError(file, `cannot be read: ${errorText(e)}`)
  }
  try {
    return JSON.parse(text)
  } catch (e) {
    throw tokenizerError(file, `is not valid JSON: ${errorText(e)}`)
  }
}

/**
 * The tokenizer.json handed to @huggingface/tokenizers, rewritten where its 0.2.0 release departs from the
 * Rust `tokenizers` crate that transformers runs:
 * - `Digits` splits on ASCII \d only, the crate on every Unicode number (²,½,٣ ...): it becomes the equivalent
 *   `Split` on \p{N};
 * - `Split` without an `invert` key defaults to invert=true, the crate to false: the key is made explicit;
 * - a file without `added_tokens` crashes the constructor: it gets an empty list;
 * - transformers v5 rebuilds the post-processor as BOS $A EOS whenever tokenizer_config.json sets
 *   add_bos_token or add_eos_token, replacing the file's own; the same is done here.
 */
function adaptForTokenizersJs(tokenizerJson: Json, config: Json, configFile: string): Json {
  const adapted: Json = {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...tokenizerJson,
    added_tokens: Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [],
  }
  adapted.pre_tokenizer = adaptPreTokenizer(adapted.pre_tokenizer)
  if ("add_bos_token" in config || "add_eos_token" in config) {
    adapted.post_processor = bosEosTemplate(adapted, config, configFile)
  }
  return adapted
}

/**
 * @huggingface/tokenizers' ByteFallback decoder turns each run of <0xXX> tokens into text with a default
 * TextDecoder, which swallows a leading U+FEFF: a BOM inside the text vanished on decode. Its decoders are
 * given one that keeps it, as its ByteLevel decoder already has.
 */
function keepByteOrderMarks(decoder: unknown): void {
  if (typeof decoder !== "function" && (typeof decoder !== "object" || decoder === null)) return
  const node = decoder as { text_decoder?: unknown; decoders?: unknown }
  if (node.text_decoder instanceof TextDecoder && !node.text_decoder.ignoreBOM) {
    node.text_decoder = new TextDecoder("utf-8", { ignoreBOM: true })
  }
  if (Array.isArray(node.decoders)) node.decoders.forEach(keepByteOrderMarks)
}

function adaptPreTokenizer(node: unknown): unknown {
  if (!isObject(node)) return node
  if (node.type === "Sequence" && Array.isArray(node.pretokenizers)) {
    return { ...node, pretokenizers: node.pretokenizers.map(adaptPreTokenizer) }
  }
  if (node.type === "Digits") {
    const pattern = node.individual_digits === true ? "\\p{N}" : "\\p{N}+"
    return { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false }
  }
  if (node.type === "Split") return { ...node, invert: node.invert === true }
  return node
}

function bosEosTemplate(tokenizerJson: Json, config: Json, configFile: string): Json {
  const item = (token: string, typeId: number) => ({ SpecialToken: { id: token, type_id: typeId } })
  const sequence = (id: "A" | "B", typeId: number) => ({ Sequence: { id, type_id: typeId } })
  const specialTokens: Record<string, { id: string; ids: number[]; tokens: string[] }> = {}
  const flagged = (flag: string, name: string): string | null => {
    if (config[flag] !== true) return null
    const content = tokenContent(config[name])
    // transformers silently turns the flag off when the token is not defined; so does this.
    if (content === null) return null
    const id = lookupId(tokenizerJson, content)
    if (id === undefined) throw tokenizerError(configFile, `${name} "${content}" is not in the vocabulary`)
    specialTokens[content] = { id: content, ids: [id], tokens: [content] }
    return content
  }
  const bos = flagged("add_bos_token", "bos_token")
  const eos = flagged("add_eos_token", "eos_token")
  const half = (id: "A" | "B", typeId: number) => [
    ...(bos === null ? [] : [item(bos, typeId)]),
    sequence(id, typeId),
    ...(eos === null ? [] : [item(eos, typeId)]),
  ]
  return { type: "TemplateProcessing", single: half("A", 0), pair: [...half("A", 0), ...half("B", 1)], special_tokens: specialTokens }
}

function lookupId(tokenizerJson: Json, content: string): number | undefined {
  const added = (tokenizerJson.added_tokens as unknown[]).find((t) => isObject(t) && t.content === content)
  if (isObject(added) && typeof added.id === "number") return added.id
  const vocab = (tokenizerJson.model as Json).vocab
  if (isObject(vocab) && typeof vocab[content] === "number") return vocab[content]
  return undefined
}

/** tokenizer_config.json writes a special token as a string or as {"content": ..., "__type": "AddedToken"}. */
function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value
  if (isObject(value) && typeof value.content === "string") return value.content
  return null
}

function specialToken(inner: HfTokenizer, config: Json, name: string, source: TokenizerSource): SpecialToken | null {
  const content = tokenContent(config[name])
  if (content === null) return null
  const id = inner.token_to_id(content)
  if (id === undefined) throw tokenizerError(source.configFile, `${name} "${content}" is not in the vocabulary`)
  return { content, id }
}

/** The token strings the post-processor puts first and last around a single sequence, if any. */
function templateTokens(postProcessor: unknown): { first?: string; last?: string } {
  if (!isObject(postProcessor)) return {}
  if (postProcessor.type === "Sequence" && Array.isArray(postProcessor.processors)) {
    const parts = postProcessor.processors.map(templateTokens)
    return { first: parts.find((p) => p.first)?.first, last: parts.find((p) => p.last)?.last }
  }
  if (postProcessor.type !== "TemplateProcessing" || !Array.isArray(postProcessor.single)) return {}
  const single = postProcessor.single as unknown[]
  const tokenOf = (item: unknown) =>
    isObject(item) && isObject(item.SpecialToken) && typeof item.SpecialToken.id === "string" ? item.SpecialToken.id : undefined
  return { first: tokenOf(single[0]), last: tokenOf(single[single.length - 1]) }
}

/** chat_template is a string, or a list of {name, template} (transformers' multi-template form). */
function chatTemplates(value: unknown, configFile: string): Map<string, string> {
  const templates = new Map<string, string>()
  if (value === undefined || value === null) return templates
  if (typeof value === "string") return templates.set(DEFAULT_CHAT_TEMPLATE, value)
  if (Array.isArray(value)) {
    for (const entry of value) {
      if (!isObject(entry) || typeof entry.name !== "string" || typeof entry.template !== "string") {
        throw tokenizerError(configFile, "chat_template list entries must be {name, template} strings")
      }
      templates.set(entry.name, entry.template)
    }
    return templates
  }
  throw tokenizerError(configFile, "chat_template must be a string or a list of {name, template}")
}

function countIds(inner: HfTokenizer): number {
  let max = -1
  for (const id of inner.get_vocab(true).values()) max = Math.max(max, id)
  return max + 1
}
