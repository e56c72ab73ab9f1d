import { Template } from "@huggingface/jinja"
import { tokenizerError, type Tokenizer } from "./tokenizer.js"

/**
 * Chat templates (the Jinja in tokenizer_config.json / tokenizer.chat_template) rendered with
 * @huggingface/jinja, given the variables transformers' apply_chat_template passes. Failures are
 * TokenizerErrors naming where the template came from.
 */

export interface ChatMessage {
  readonly role: string
  readonly content: string
}

export interface ChatRenderOptions {
  /** Append the header that opens an assistant turn (for generation). Default false. */
  readonly addGenerationPrompt?: boolean
  /** Further template variables (tools, date strings, ...), passed through unchanged. */
  readonly variables?: Readonly<Record<string, unknown>>
}

/** The special token strings a template may use. */
export interface ChatTemplateTokens {
  readonly bos_token?: string
  readonly eos_token?: string
  readonly unk_token?: string
  readonly pad_token?: string
}

/** What a template's raise_exception(...) throws, so it can be told apart from a bug in the template. */
class TemplateRaised extends Error {}

/**
 * @huggingface/jinja declares raise_exception itself (throwing a plain Error, like any runtime failure) and
 * refuses to redeclare it, so the parsed template's calls are pointed at a name of ours instead.
 */
const RAISE = "__bdvax_raise_exception"

function redirectRaiseException(root: unknown): void {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const node = stack.pop()
    if (typeof node !== "object" || node === null) continue
    const record = node as Record<string, unknown>
    if (record.type === "Identifier" && record.value === "raise_exception") record.value = RAISE
    for (const child of Object.values(record)) if (typeof child === "object") stack.push(child)
  }
}

export class ChatTemplate {
  private readonly compiled: Template

  /** `origin` names the template's source (file and key) in error messages. */
  constructor(
    readonly source: string,
    readonly origin: string,
    private readonly tokens: ChatTemplateTokens = {},
  ) {
    try {
      this.compiled = new Template(source)
      redirectRaiseException(this.compiled.parsed)
    } catch (e) {
      throw tokenizerError(origin, `chat template does not parse: ${errorText(e)}`)
    }
  }

  render(messages: readonly ChatMessage[], options: ChatRenderOptions = {}): string {
    try {
      return this.compiled.render({
        ...this.tokens,
        ...options.variables,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? false,
        [RAISE]: (message: unknown) => {
          throw new TemplateRaised(String(message))
        },
      })
    } catch (e) {
      if (e instanceof TemplateRaised) throw tokenizerError(this.origin, `chat template rejected the conversation: ${e.message}`)
      throw tokenizerError(this.origin, `chat template failed to render: ${errorText(e)}`)
    }
  }
}

export interface ApplyChatTemplateOptions extends ChatRenderOptions {
  /** Which of the tokenizer's named templates; default: its default one. */
  readonly templateName?: string
}

/** Renders `messages` with the tokenizer's chat template (transformers' apply_chat_template, tokenize=False). */
export function applyChatTemplate(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  options: ApplyChatTemplateOptions = {},
): string {
  return chatTemplateOf(tokenizer, options.templateName).render(messages, options)
}

const compiledTemplates = new WeakMap<Tokenizer, Map<string, ChatTemplate>>()

/** The tokenizer's chat template, compiled once per tokenizer and name. */
export function chatTemplateOf(tokenizer: Tokenizer, templateName?: string): ChatTemplate {
  const key = templateName ?? ""
  const cache = compiledTemplates.get(tokenizer) ?? new Map<string, ChatTemplate>()
  compiledTemplates.set(tokenizer, cache)
  const cached = cache.get(key)
  if (cached) return cached
  const file = tokenizer.source.configFile
  const source = tokenizer.chatTemplate(templateName)
  if (source === undefined) {
    throw tokenizerError(file, templateName === undefined ? "has no chat_template" : `has no chat template named "${templateName}"`)
  }
  const origin = `${file} chat_template${templateName === undefined ? "" : ` "${templateName}"`}`
  const template = new ChatTemplate(source, origin, templateTokens(tokenizer))
  cache.set(key, template)
  return template
}

function templateTokens(tokenizer: Tokenizer): ChatTemplateTokens {
  const tokens: Record<string, string> = {}
  const named = { bos_token: tokenizer.bosToken, eos_token: tokenizer.eosToken, unk_token: tokenizer.unkToken, pad_token: tokenizer.padToken }
  for (const [name, token] of Object.entries(named)) if (token !== null) tokens[name] = token.content
  return tokens
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))
