import { mkdtemp, readFile, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { beforeAll, describe, expect, it } from "vitest"
import { TokenizerError } from "../src/errors.js"
import { tokenizerFromGguf } from "../src/gguf-tokenizer.js"
import { Tokenizer } from "../src/tokenizer.js"

// Expected values come from transformers / tokenizers (Python), written by
// tests/llm-tokenizer/gen_tokenizer_fixtures.py for a small tokenizer with SmolLM2's layout.
const fixtures = fileURLToPath(new URL("./fixtures/tokenizer/", import.meta.url))
const folder = join(fixtures, "bpe")

interface Expected {
  vocabSize: number
  specialIds: { bos: number; eos: number; pad: number; unk: number }
  encodings: { text: string; ids: number[]; tokens: string[]; decoded: string; decodedSkipSpecial: string }[]
  flagged: { text: string; ids: number[]; idsNoSpecial: number[] }[]
  batches: { texts: string[]; paddingSide: "left" | "right"; ids: number[][]; attentionMask: number[][] }[]
  /** By tokenizer.ggml.pre: ids of every encodings[i].text, from transformers' GGUF converter. */
  preTokenizers: Record<string, number[][]>
}

const readJson = async (file: string) => JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>
const expected = JSON.parse(await readFile(join(fixtures, "bpe-expected.json"), "utf8")) as Expected
const ggufMetadata = async () => new Map(Object.entries(await readJson(join(fixtures, "bpe-gguf-metadata.json"))))

/** Runs `f`, expecting a TokenizerError; returns it. */
function tokenizerErrorOf(f: () => unknown): TokenizerError {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(TokenizerError)
    return e as TokenizerError
  }
  throw new Error("expected a TokenizerError")
}

async function rejectedWith(p: Promise<unknown>): Promise<TokenizerError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(e).toBeInstanceOf(TokenizerError)
  return e as TokenizerError
}

describe("Tokenizer from tokenizer.json + tokenizer_config.json", () => {
  let tok: Tokenizer
  beforeAll(async () => {
    tok = await Tokenizer.fromFolder(folder)
  })

  it("encodes every fixture string exactly as transformers", () => {
    for (const e of expected.encodings) {
      expect(tok.encode(e.text, { addSpecialTokens: false }), JSON.stringify(e.text)).toEqual(e.ids)
      // SmolLM2's layout adds no BOS/EOS, so special tokens change nothing.
      expect(tok.encode(e.text), JSON.stringify(e.text)).toEqual(e.ids)
      expect(e.ids.map((id) => tok.idToToken(id))).toEqual(e.tokens)
      expect(e.tokens.map((t) => tok.tokenToId(t))).toEqual(e.ids)
    }
  })

  it("decodes as transformers, with and without special tokens", () => {
    for (const e of expected.encodings) {
      expect(tok.decode(e.ids), JSON.stringify(e.text)).toBe(e.decoded)
      expect(tok.decode(e.ids, { skipSpecialTokens: true }), JSON.stringify(e.text)).toBe(e.decodedSkipSpecial)
    }
  })

  it("reports the special tokens, vocabulary size and config fields", () => {
    expect(tok.vocabSize).toBe(expected.vocabSize)
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkToken?.id]).toEqual([
      expected.specialIds.bos,
      expected.specialIds.eos,
      expected.specialIds.pad,
      expected.specialIds.unk,
    ])
    expect(tok.bosToken?.content).toBe("<|im_start|>")
    expect(tok.eosToken?.content).toBe("<|im_end|>")
    expect(tok.addBosToken).toBe(false)
    expect(tok.addEosToken).toBe(false)
    expect(tok.modelMaxLength).toBe(8192)
    expect(tok.isSpecialId(2)).toBe(true)
    expect(tok.isSpecialId(tok.tokenToId("<tool_call>")!)).toBe(false)
    expect(tok.chatTemplate()).toContain("<|im_start|>")
    expect(tok.idToToken(123_456)).toBeUndefined()
  })

  it("adds BOS/EOS when tokenizer_config.json sets add_bos_token/add_eos_token, as transformers v5", async () => {
    const json = await readJson(join(folder, "tokenizer.json"))
    const config = { ...(await readJson(join(folder, "tokenizer_config.json"))), add_bos_token: true, add_eos_token: true }
    const flagged = Tokenizer.fromJson(json, config, { tokenizerFile: "t.json", configFile: "c.json" })
    expect(flagged.addBosToken).toBe(true)
    expect(flagged.addEosToken).toBe(true)
    for (const e of expected.flagged) {
      expect(flagged.encode(e.text), JSON.stringify(e.text)).toEqual(e.ids)
      expect(flagged.encode(e.text, { addSpecialTokens: false })).toEqual(e.idsNoSpecial)
    }
  })

  it("pads batches on either side with attention masks, as transformers", () => {
    for (const b of expected.batches) {
      const got = tok.encodeBatch(b.texts, { paddingSide: b.paddingSide })
      expect(got.inputIds, `${b.paddingSide} ${JSON.stringify(b.texts)}`).toEqual(b.ids)
      expect(got.attentionMask).toEqual(b.attentionMask)
    }
    const overridden = tok.encodeBatch(["a", "Hello world"], { paddingSide: "left", padTokenId: 0 })
    expect(overridden.inputIds[0].slice(0, 3)).toEqual([0, 0, 0])
    expect(tok.encodeBatch([], { paddingSide: "right" })).toEqual({ inputIds: [], attentionMask: [] })
  })

  it("decodes an empty list to the empty string and rejects ids outside the vocabulary", () => {
    expect(tok.decode([])).toBe("")
    const err = tokenizerErrorOf(() => tok.decode([5, 99_999]))
    expect(err.file).toBe(join(folder, "tokenizer.json"))
    expect(err.message).toContain("99999")
    tokenizerErrorOf(() => tok.decode([1.5]))
  })
})

describe("Tokenizer errors name the file at fault", () => {
  const source = { tokenizerFile: "dir/tokenizer.json", configFile: "dir/tokenizer_config.json" }

  it("missing tokenizer.json", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bdvax-tok-"))
    const err = await rejectedWith(Tokenizer.fromFolder(dir))
    expect(err.file).toBe(join(dir, "tokenizer.json"))
    expect(err.message).toMatch(/tokenizer\.json: cannot be read/)
  })

  it("malformed JSON in either file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bdvax-tok-"))
    await writeFile(join(dir, "tokenizer.json"), "{ not json")
    expect((await rejectedWith(Tokenizer.fromFolder(dir))).file).toBe(join(dir, "tokenizer.json"))
    await writeFile(join(dir, "tokenizer.json"), await readFile(join(folder, "tokenizer.json")))
    await writeFile(join(dir, "tokenizer_config.json"), "[1,")
    const err = await rejectedWith(Tokenizer.fromFolder(dir))
    expect(err.file).toBe(join(dir, "tokenizer_config.json"))
    expect(err.message).toContain("not valid JSON")
  })

  it("tokenizer_config.json is optional", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bdvax-tok-"))
    await writeFile(join(dir, "tokenizer.json"), await readFile(join(folder, "tokenizer.json")))
    const bare = await Tokenizer.fromFolder(dir)
    expect(bare.bosToken).toBeNull()
    expect(bare.encode("Hello world")).toEqual(expected.encodings[0].ids)
    expect(bare.chatTemplate()).toBeUndefined()
  })

  it("structurally wrong contents", async () => {
    const json = await readJson(join(folder, "tokenizer.json"))
    expect(tokenizerErrorOf(() => Tokenizer.fromJson([], {}, source)).file).toBe(source.tokenizerFile)
    expect(tokenizerErrorOf(() => Tokenizer.fromJson({ added_tokens: [] }, {}, source)).message).toContain('"model"')
    const badModel = { ...json, model: { ...(json.model as object), type: "NoSuchModel" } }
    expect(tokenizerErrorOf(() => Tokenizer.fromJson(badModel, {}, source)).file).toBe(source.tokenizerFile)
    expect(tokenizerErrorOf(() => Tokenizer.fromJson(json, "x", source)).file).toBe(source.configFile)
    const unknownBos = tokenizerErrorOf(() => Tokenizer.fromJson(json, { bos_token: "<nope>" }, source))
    expect(unknownBos.file).toBe(source.configFile)
    expect(unknownBos.message).toContain("bos_token")
    expect(tokenizerErrorOf(() => Tokenizer.fromJson(json, { chat_template: 3 }, source)).file).toBe(source.configFile)
    expect(tokenizerErrorOf(() => Tokenizer.fromJson(json, { chat_template: [{ name: "x" }] }, source)).file).toBe(
      source.configFile,
    )
  })

  it("batch padding without a pad token", async () => {
    const json = await readJson(join(folder, "tokenizer.json"))
    const noPad = Tokenizer.fromJson(json, {}, source)
    const err = tokenizerErrorOf(() => noPad.encodeBatch(["a", "Hello world"], { paddingSide: "right" }))
    expect(err.file).toBe(source.configFile)
    // Equal lengths need no padding, so no pad token either.
    expect(noPad.encodeBatch(["a", "a"], { paddingSide: "right" }).inputIds).toEqual([
      expected.encodings.find((e) => e.text === "a")!.ids,
      expected.encodings.find((e) => e.text === "a")!.ids,
    ])
  })

  it("special tokens written as AddedToken objects in tokenizer_config.json", async () => {
    const json = await readJson(join(folder, "tokenizer.json"))
    const config = { eos_token: { __type: "AddedToken", content: "<|im_end|>", special: true } }
    expect(Tokenizer.fromJson(json, config, source).eosTokenId).toBe(expected.specialIds.eos)
  })
})

describe("Tokenizer from GGUF metadata", () => {
  let fromFiles: Tokenizer
  let fromGguf: Tokenizer
  beforeAll(async () => {
    fromFiles = await Tokenizer.fromFolder(folder)
    fromGguf = tokenizerFromGguf(await ggufMetadata(), "tiny.gguf")
  })

  it("encodes and decodes identically to the tokenizer.json path", () => {
    for (const e of expected.encodings) {
      expect(fromGguf.encode(e.text), JSON.stringify(e.text)).toEqual(e.ids)
      expect(fromGguf.encode(e.text)).toEqual(fromFiles.encode(e.text))
      expect(fromGguf.decode(e.ids)).toBe(e.decoded)
      expect(fromGguf.decode(e.ids, { skipSpecialTokens: true })).toBe(e.decodedSkipSpecial)
    }
    for (const b of expected.batches) {
      expect(fromGguf.encodeBatch(b.texts, { paddingSide: b.paddingSide }).inputIds).toEqual(b.ids)
    }
  })

  it("carries the special tokens, add_bos_token and chat template over", () => {
    expect(fromGguf.vocabSize).toBe(fromFiles.vocabSize)
    expect([fromGguf.bosToken, fromGguf.eosToken, fromGguf.padToken, fromGguf.unkToken]).toEqual([
      fromFiles.bosToken,
      fromFiles.eosToken,
      fromFiles.padToken,
      fromFiles.unkToken,
    ])
    expect(fromGguf.addBosToken).toBe(false)
    expect(fromGguf.chatTemplate()).toBe(fromFiles.chatTemplate())
    expect(fromGguf.isSpecialId(1)).toBe(true)
    expect(fromGguf.isSpecialId(fromGguf.tokenToId("<tool_call>")!)).toBe(false)
  })

  it("splits as transformers' GGUF converter for the Llama 3, Qwen 2, Tekken and GPT-2 pre-tokenizers", async () => {
    const md = await ggufMetadata()
    for (const [pre, want] of Object.entries(expected.preTokenizers)) {
      md.set("tokenizer.ggml.pre", pre)
      const tok = tokenizerFromGguf(md, `${pre}.gguf`)
      expected.encodings.forEach((e, i) => {
        expect(tok.encode(e.text, { addSpecialTokens: false }), `${pre} ${JSON.stringify(e.text)}`).toEqual(want[i])
      })
    }
  })

  it("accepts typed arrays and bigints, as a binary GGUF reader may return them", async () => {
    const md = await ggufMetadata()
    md.set("tokenizer.ggml.token_type", Int32Array.from(md.get("tokenizer.ggml.token_type") as number[]))
    md.set("tokenizer.ggml.bos_token_id", 1n)
    md.set("tokenizer.ggml.add_bos_token", true)
    const tok = tokenizerFromGguf(md, "typed.gguf")
    expect(tok.bosTokenId).toBe(1)
    expect(tok.encode("Hello world")).toEqual([1, ...expected.encodings[0].ids])
  })

  it("names the GGUF and the key at fault", async () => {
    const broken = async (edit: (md: Map<string, unknown>) => void) => {
      const md = await ggufMetadata()
      edit(md)
      return tokenizerErrorOf(() => tokenizerFromGguf(md, "model.gguf"))
    }
    const cases: [string, (md: Map<string, unknown>) => void][] = [
      ["tokenizer.ggml.model", (md) => md.delete("tokenizer.ggml.model")],
      ["tokenizer.ggml.model", (md) => md.set("tokenizer.ggml.model", "bert")],
      ["tokenizer.ggml.tokens", (md) => md.set("tokenizer.ggml.tokens", [1, 2])],
      ["tokenizer.ggml.merges", (md) => md.delete("tokenizer.ggml.merges")],
      ["tokenizer.ggml.pre", (md) => md.set("tokenizer.ggml.pre", "no-such-pre")],
      ["tokenizer.ggml.token_type", (md) => md.set("tokenizer.ggml.token_type", [3, 3])],
      ["tokenizer.ggml.eos_token_id", (md) => md.set("tokenizer.ggml.eos_token_id", 5000)],
      ["tokenizer.ggml.add_bos_token", (md) => md.set("tokenizer.ggml.add_bos_token", "yes")],
    ]
    for (const [key, edit] of cases) {
      const err = await broken(edit)
      expect(err.file, key).toContain("model.gguf")
      expect(err.message, key).toContain(key)
    }
  })
})

describe("Tokenizer from SentencePiece GGUF metadata (tokenizer.ggml.model = llama)", () => {
  // A BPE model trained with the sentencepiece library (Llama 2's settings), converted to GGUF keys as
  // llama.cpp does; sentencepiece's own encode/decode is the reference.
  interface SpmExpected {
    vocabSize: number
    specialIds: { bos: number; eos: number; unk: number }
    encodings: { text: string; ids: number[]; pieces: string[]; decoded: string }[]
  }
  let spm: SpmExpected
  let tok: Tokenizer
  beforeAll(async () => {
    spm = JSON.parse(await readFile(join(fixtures, "spm-expected.json"), "utf8")) as SpmExpected
    const md = new Map(Object.entries(await readJson(join(fixtures, "spm-gguf-metadata.json"))))
    tok = tokenizerFromGguf(md, "spm.gguf")
  })

  it("encodes every fixture string exactly as sentencepiece, with merges derived from the scores", () => {
    for (const e of spm.encodings) {
      expect(tok.encode(e.text, { addSpecialTokens: false }), JSON.stringify(e.text)).toEqual(e.ids)
      expect(e.ids.map((id) => tok.idToToken(id))).toEqual(e.pieces)
    }
  })

  it("adds BOS (add_bos_token) and decodes as sentencepiece", () => {
    expect(tok.vocabSize).toBe(spm.vocabSize)
    expect([tok.bosTokenId, tok.eosTokenId, tok.unkToken?.id]).toEqual([spm.specialIds.bos, spm.specialIds.eos, spm.specialIds.unk])
    expect(tok.addBosToken).toBe(true)
    for (const e of spm.encodings) {
      expect(tok.encode(e.text), JSON.stringify(e.text)).toEqual([spm.specialIds.bos, ...e.ids])
      expect(tok.decode(e.ids), JSON.stringify(e.text)).toBe(e.decoded)
      expect(tok.decode([spm.specialIds.bos, ...e.ids, spm.specialIds.eos], { skipSpecialTokens: true })).toBe(e.decoded)
    }
  })

  it("matches control tokens whole in text, with the space prefix after them (llama.cpp)", () => {
    const hello = spm.encodings[0]
    expect(tok.encode(`<s>${hello.text}</s>`, { addSpecialTokens: false })).toEqual([
      spm.specialIds.bos,
      ...hello.ids,
      spm.specialIds.eos,
    ])
  })

  it("needs scores when the GGUF has no merges", async () => {
    const md = new Map(Object.entries(await readJson(join(fixtures, "spm-gguf-metadata.json"))))
    md.delete("tokenizer.ggml.scores")
    expect(tokenizerErrorOf(() => tokenizerFromGguf(md, "spm.gguf")).message).toContain("tokenizer.ggml.scores")
  })
})
