import { readFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { beforeAll, describe, expect, it } from "vitest"
import { applyChatTemplate, ChatTemplate, chatTemplateOf, type ChatMessage } from "../src/chat-template.js"
import { TokenizerError } from "../src/errors.js"
import { tokenizerFromGguf } from "../src/gguf-tokenizer.js"
import {
  ALPACA_SYSTEM,
  alpacaPrompt,
  formatAlpaca,
  formatChat,
  tokenizePromptResponse,
  type InstructionRecord,
} from "../src/prompt-format.js"
import { Tokenizer } from "../src/tokenizer.js"

// Renderings come from transformers' apply_chat_template (jinja2), written by
// tests/llm-tokenizer/gen_tokenizer_fixtures.py.
const fixtures = fileURLToPath(new URL("./fixtures/tokenizer/", import.meta.url))
const folder = join(fixtures, "bpe")

interface Expected {
  chats: {
    name: string
    template: "smollm2" | "llama2-style"
    messages: ChatMessage[]
    addGenerationPrompt: boolean
    text?: string
    ids?: number[]
    error?: string
  }[]
  records: { record: InstructionRecord; prompt: string; full: string }[]
  templates: Record<"smollm2" | "llama2-style", string>
}

const expected = JSON.parse(await readFile(join(fixtures, "bpe-expected.json"), "utf8")) as Expected
const readJson = async (file: string) => JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>

/** The fixture tokenizer with both templates under names, the multi-template form of tokenizer_config.json. */
async function withNamedTemplates(): Promise<Tokenizer> {
  const json = await readJson(join(folder, "tokenizer.json"))
  const config = await readJson(join(folder, "tokenizer_config.json"))
  const chat_template = [
    { name: "default", template: expected.templates.smollm2 },
    { name: "llama2-style", template: expected.templates["llama2-style"] },
  ]
  return Tokenizer.fromJson(json, { ...config, chat_template }, { tokenizerFile: "t.json", configFile: "named/tokenizer_config.json" })
}

function tokenizerErrorOf(f: () => unknown): TokenizerError {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(TokenizerError)
    return e as TokenizerError
  }
  throw new Error("expected a TokenizerError")
}

describe("chat templates render as transformers' apply_chat_template", () => {
  let tok: Tokenizer
  let named: Tokenizer
  beforeAll(async () => {
    tok = await Tokenizer.fromFolder(folder)
    named = await withNamedTemplates()
  })

  it("renders and tokenizes every fixture conversation", () => {
    for (const c of expected.chats.filter((c) => c.error === undefined)) {
      const label = `${c.template} ${c.name}`
      const options = { addGenerationPrompt: c.addGenerationPrompt }
      const text =
        c.template === "smollm2"
          ? applyChatTemplate(tok, c.messages, options)
          : applyChatTemplate(named, c.messages, { ...options, templateName: "llama2-style" })
      expect(text, label).toBe(c.text)
      expect(tok.encode(text, { addSpecialTokens: false }), label).toEqual(c.ids)
    }
  })

  it("picks the default of several named templates", () => {
    const c = expected.chats.find((c) => c.template === "smollm2" && c.error === undefined)!
    expect(applyChatTemplate(named, c.messages, { addGenerationPrompt: c.addGenerationPrompt })).toBe(c.text)
  })

  it("renders the GGUF tokenizer's template identically", async () => {
    const md = new Map(Object.entries(await readJson(join(fixtures, "bpe-gguf-metadata.json"))))
    const fromGguf = tokenizerFromGguf(md, "tiny.gguf")
    for (const c of expected.chats.filter((c) => c.template === "smollm2")) {
      expect(applyChatTemplate(fromGguf, c.messages, { addGenerationPrompt: c.addGenerationPrompt })).toBe(c.text)
    }
  })

  it("turns raise_exception into a TokenizerError naming the template", () => {
    const c = expected.chats.find((c) => c.error !== undefined)!
    const err = tokenizerErrorOf(() => applyChatTemplate(named, c.messages, { templateName: "llama2-style" }))
    expect(err.file).toBe('named/tokenizer_config.json chat_template "llama2-style"')
    expect(err.message).toContain(`rejected the conversation: ${c.error}`)
  })

  it("reports templates that do not parse, do not run, or do not exist", () => {
    const parse = tokenizerErrorOf(() => new ChatTemplate("{% for m in messages %}", "x.json chat_template"))
    expect(parse.file).toBe("x.json chat_template")
    expect(parse.message).toContain("does not parse")
    const run = tokenizerErrorOf(() => new ChatTemplate("{{ messages[0].content.nope() }}", "y.json").render([{ role: "user", content: "hi" }]))
    expect(run.file).toBe("y.json")
    expect(tokenizerErrorOf(() => chatTemplateOf(named, "missing")).message).toContain('"missing"')
  })

  it("passes the special tokens and extra variables to the template", () => {
    const t = new ChatTemplate("{{ bos_token }}|{{ eos_token }}|{{ today }}|{{ add_generation_prompt }}", "inline", {
      bos_token: "<s>",
      eos_token: "</s>",
    })
    expect(t.render([], { variables: { today: "2024-01-01" }, addGenerationPrompt: true })).toBe("<s>|</s>|2024-01-01|true")
  })
})

describe("prompt formats for instruction records", () => {
  let tok: Tokenizer
  beforeAll(async () => {
    tok = await Tokenizer.fromFolder(folder)
  })

  // LLaMA-Factory's "alpaca" template, which BackdoorLLM's training configs select.
  it("alpacaPrompt without and with input", () => {
    expect(alpacaPrompt({ instruction: "Write a poem.", output: "Roses." })).toBe(
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\nWrite a poem.\n\n### Response:\n",
    )
    expect(alpacaPrompt({ instruction: "Classify the sentiment.", input: "I love it.", output: "Positive" })).toBe(
      `${ALPACA_SYSTEM}### Instruction:\nClassify the sentiment.\nI love it.\n\n### Response:\n`,
    )
    expect(alpacaPrompt({ instruction: "Same as no input.", input: "", output: "" })).toBe(
      alpacaPrompt({ instruction: "Same as no input.", output: "" }),
    )
  })

  it("formatAlpaca ends the response with the EOS token, which encodes to its id", () => {
    const record = { instruction: "Say hi.", output: "Hi" }
    const example = formatAlpaca(tok, record)
    expect(example).toEqual({ prompt: alpacaPrompt(record), response: "Hi<|im_end|>" })
    const encoded = tokenizePromptResponse(tok, example)
    const prompt = tok.encode(example.prompt, { addSpecialTokens: false })
    expect(encoded.promptLength).toBe(prompt.length)
    expect(encoded.ids).toEqual([...prompt, ...tok.encode("Hi", { addSpecialTokens: false }), tok.eosTokenId])
    const withBos = tokenizePromptResponse(tok, example, { addBos: true })
    expect(withBos.ids).toEqual([tok.bosTokenId, ...encoded.ids])
    expect(withBos.promptLength).toBe(prompt.length + 1)
  })

  it("formatChat splits the chat rendering into prompt and response as transformers renders them", () => {
    for (const r of expected.records) {
      const { prompt, response } = formatChat(tok, r.record)
      expect(prompt).toBe(r.prompt)
      expect(prompt + response).toBe(r.full)
      expect(response).toBe(`${r.record.output}<|im_end|>\n`)
    }
  })

  it("formatChat with a system turn and a named template", async () => {
    const named = await withNamedTemplates()
    const record = expected.records[0].record
    const chat = formatChat(named, record, { system: "Be brief.", templateName: "llama2-style" })
    expect(chat.prompt).toBe(`<|im_start|>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n${record.instruction} [/INST] `)
    expect(chat.response).toBe(`${record.output} <|im_end|>`)
  })
})
