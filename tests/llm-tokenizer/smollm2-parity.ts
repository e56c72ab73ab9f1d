/**
 * Second half of smollm2_parity.py: builds SmolLM2's tokenizer from its GGUF metadata with tokenizerFromGguf
 * and compares it with the Hugging Face reference the Python half wrote.
 *
 *   pnpm exec tsx tests/llm-tokenizer/smollm2-parity.ts <work dir of smollm2_parity.py> [<the .gguf>]
 *
 * With the GGUF's path it also reads the metadata with @bdvax/llm's own GGUF reader (readGgufMetadata), so
 * the binary reader and the tokenizer are checked together; without it, from the gguf package's JSON dump.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { isDeepStrictEqual } from "node:util"
import { applyChatTemplate, type ChatMessage } from "../../packages/llm/src/chat-template.js"
import { readGgufMetadata } from "../../packages/llm/src/gguf.js"
import { tokenizerFromGguf } from "../../packages/llm/src/gguf-tokenizer.js"
import type { Tokenizer } from "../../packages/llm/src/tokenizer.js"

interface Expected {
  vocabSize: number
  encodings: { text: string; ids: number[]; decoded: string; decodedSkipSpecial: string }[]
  batches: { texts: string[]; paddingSide: "left" | "right"; ids: number[][]; attentionMask: number[][] }[]
  chats: { name: string; messages: ChatMessage[]; addGenerationPrompt: boolean; text: string; ids: number[] }[]
}

const [work, ggufPath] = process.argv.slice(2)
if (!work) throw new Error("usage: smollm2-parity.ts <work dir> [<gguf>]")
const metadata = new Map(Object.entries(JSON.parse(readFileSync(join(work, "smollm2-metadata.json"), "utf8")) as object))
const expected = JSON.parse(readFileSync(join(work, "smollm2-expected.json"), "utf8")) as Expected
const tokenizers: [string, Tokenizer][] = [["json", tokenizerFromGguf(metadata, "SmolLM2-135M-Instruct.Q4_1.gguf")]]
if (ggufPath) {
  const header = await readGgufMetadata(ggufPath)
  tokenizers.push(["readGgufMetadata", tokenizerFromGguf(header.metadata, header.file)])
}

let passed = 0
let failed = 0
function check(label: string, got: unknown, want: unknown): void {
  if (isDeepStrictEqual(got, want)) {
    passed++
    return
  }
  failed++
  console.log(`FAIL ${label}\n  want ${JSON.stringify(want)}\n  got  ${JSON.stringify(got)}`)
}

for (const [via, tok] of tokenizers) {
  check(`${via}: vocabSize`, tok.vocabSize, expected.vocabSize)
  for (const e of expected.encodings) {
    const label = `${via}: ${JSON.stringify(e.text)}`
    check(`encode ${label}`, tok.encode(e.text), e.ids)
    check(`decode ${label}`, tok.decode(e.ids), e.decoded)
    check(`decode(skip special) ${label}`, tok.decode(e.ids, { skipSpecialTokens: true }), e.decodedSkipSpecial)
  }
  for (const b of expected.batches) {
    const got = tok.encodeBatch(b.texts, { paddingSide: b.paddingSide })
    check(`${via}: batch ${b.paddingSide} ${JSON.stringify(b.texts)}`, got, { inputIds: b.ids, attentionMask: b.attentionMask })
  }
  for (const c of expected.chats) {
    const text = applyChatTemplate(tok, c.messages, { addGenerationPrompt: c.addGenerationPrompt })
    check(`${via}: chat ${c.name}`, text, c.text)
    check(`${via}: chat ids ${c.name}`, tok.encode(text, { addSpecialTokens: false }), c.ids)
  }
}
console.log(`smollm2-parity: ${passed} passed, ${failed} failed`)
process.exitCode = failed === 0 ? 0 : 1
