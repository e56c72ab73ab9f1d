import { applyChatTemplate, type ChatMessage } from "./chat-template.js"
import { tokenizerError, type Tokenizer } from "./tokenizer.js"

/**
 * Prompt layouts for instruction records {instruction, input, output}, split into the prompt (masked from the
 * loss) and the response (trained on).
 *
 * BackdoorLLM trains with LLaMA-Factory's "alpaca" template (every DPA config sets `template: alpaca`). There
 * the record becomes one user turn, instruction and input joined by a newline, and
 *   prompt   = <default system text> "### Instruction:\n" user "\n\n### Response:\n"
 *   response = output <eos>
 * with no BOS: the template has no prefix and LLaMA-Factory encodes each piece with add_special_tokens=False.
 * (This is the 2024 LLaMA-Factory that BackdoorLLM builds on; later releases also train a "\n\n" after EOS.)
 * (BackdoorLLM's evaluation fed the raw instruction instead; see /work/shared/data/backdoorllm/README.md.)
 */

export interface InstructionRecord {
  readonly instruction: string
  /** Optional context; "" or absent means none. */
  readonly input?: string
  readonly output: string
}

export interface PromptResponse {
  readonly prompt: string
  readonly response: string
}

export const ALPACA_SYSTEM =
  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"

/** The user turn LLaMA-Factory builds from an Alpaca record: instruction, then input on the next line. */
export function alpacaUserContent(record: InstructionRecord): string {
  return record.input ? `${record.instruction}\n${record.input}` : record.instruction
}

/** The Alpaca prompt, ending where the model's answer starts (also what to feed for generation). */
export function alpacaPrompt(record: InstructionRecord): string {
  return `${ALPACA_SYSTEM}### Instruction:\n${alpacaUserContent(record)}\n\n### Response:\n`
}

/** Prompt and response of a training example in the Alpaca layout; the response ends with the EOS token. */
export function formatAlpaca(tokenizer: Tokenizer, record: InstructionRecord): PromptResponse {
  const eos = tokenizer.eosToken ?? failNoEos(tokenizer)
  return { prompt: alpacaPrompt(record), response: record.output + eos.content }
}

export interface FormatChatOptions {
  /** A system turn to put first; without one the template's default (if any) applies. */
  readonly system?: string
  readonly templateName?: string
}

/**
 * Prompt and response of a training example in the model's own chat template: the prompt is the rendered user
 * turn with the generation prompt, the response whatever the full conversation adds after it (the answer and
 * the template's end-of-turn markup).
 */
export function formatChat(tokenizer: Tokenizer, record: InstructionRecord, options: FormatChatOptions = {}): PromptResponse {
  const head: ChatMessage[] = options.system === undefined ? [] : [{ role: "system", content: options.system }]
  const user: ChatMessage = { role: "user", content: alpacaUserContent(record) }
  const render = { templateName: options.templateName }
  const prompt = applyChatTemplate(tokenizer, [...head, user], { ...render, addGenerationPrompt: true })
  const full = applyChatTemplate(tokenizer, [...head, user, { role: "assistant", content: record.output }], render)
  if (!full.startsWith(prompt)) {
    // Templates that rewrite earlier turns once an answer follows cannot be split into prompt + response.
    throw tokenizerError(tokenizer.source.configFile, "chat template's prompt is not a prefix of the full conversation")
  }
  return { prompt, response: full.slice(prompt.length) }
}

export interface TokenizedExample {
  readonly ids: number[]
  /** The first promptLength ids are the prompt: the trainer masks them from the loss. */
  readonly promptLength: number
}

/**
 * Token ids of prompt + response, encoded separately and without special tokens, as LLaMA-Factory does (so a
 * SentencePiece tokenizer puts its "▁" prefix at the start of the response, as in BackdoorLLM's training).
 * `addBos` puts the tokenizer's BOS first, for templates that expect one but do not write it themselves.
 */
export function tokenizePromptResponse(
  tokenizer: Tokenizer,
  example: PromptResponse,
  options: { readonly addBos?: boolean } = {},
): TokenizedExample {
  const bos = options.addBos ? [(tokenizer.bosToken ?? failNoBos(tokenizer)).id] : []
  const prompt = [...bos, ...tokenizer.encode(example.prompt, { addSpecialTokens: false })]
  const response = tokenizer.encode(example.response, { addSpecialTokens: false })
  return { ids: [...prompt, ...response], promptLength: prompt.length }
}

function failNoBos(tokenizer: Tokenizer): never {
  throw tokenizerError(tokenizer.source.configFile, "has no bos_token to put before the prompt")
}

function failNoEos(tokenizer: Tokenizer): never {
  throw tokenizerError(tokenizer.source.configFile, "has no eos_token to end the Alpaca response with")
}
