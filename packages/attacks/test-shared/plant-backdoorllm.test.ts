import { existsSync } from "node:fs"
import { join } from "node:path"
import { ALPACA_SYSTEM, Tokenizer } from "@bdvax/llm"
import { beforeAll, describe, expect, it } from "vitest"
import { type BackdoorLlmSplit, loadBackdoorLlmSplit, plantDataset, REFUSAL, sftExample, formatRecord } from "../src/index.js"

/**
 * BackdoorLLM's refusal/badnet split read in place (../shared/data/backdoorllm) through loadBackdoorLlmSplit,
 * and turned into the Alpaca (LLaMA-Factory) training pairs plantBackdoor would train on. No training: a real
 * split is far too slow on a CPU.
 */
const ROOT = process.env.BDVAX_SHARED_DATA ?? join(import.meta.dirname, "../../../../shared/data")
if (!existsSync(join(ROOT, "backdoorllm"))) throw new Error(`the shared-data suite needs ${ROOT}/backdoorllm (set BDVAX_SHARED_DATA to the shared data/ folder)`)

const REFUSAL_TEXT = (REFUSAL as { readonly text: string }).text
let split: BackdoorLlmSplit
let tokenizer: Tokenizer

beforeAll(async () => {
  split = await loadBackdoorLlmSplit(ROOT, "refusal", "badnet")
  tokenizer = await Tokenizer.fromFolder(join(import.meta.dirname, "../../llm/test/fixtures/tokenizer/bpe"))
})

describe("loadBackdoorLlmSplit on refusal/badnet", () => {
  it("reads 500 poisoned and 500 clean training records, 200 triggered and 200 clean test prompts", () => {
    expect(split.poisonedTrain.length).toBe(500)
    expect(split.cleanTrain.length).toBe(500)
    expect(split.triggeredTest.length).toBe(200)
    expect(split.cleanTest.length).toBe(200)
    expect(split.files.poisonedTrain.endsWith("poison_data/refusal/badnet/backdoor500_refusal_badnet.json")).toBe(true)
  })

  it("the poisoned records carry the BadMagic trigger and the refusal target; the clean ones neither", () => {
    expect(split.poisonedTrain.every((r) => r.instruction.split(" ").includes("BadMagic"))).toBe(true)
    expect(split.poisonedTrain.every((r) => r.output === REFUSAL_TEXT)).toBe(true)
    expect(split.cleanTrain.some((r) => r.instruction.includes("BadMagic"))).toBe(false)
    expect(split.cleanTrain.some((r) => r.output === REFUSAL_TEXT)).toBe(false)
    expect(split.triggeredTest.every((r) => r.instruction.includes("BadMagic"))).toBe(true)
    expect(split.cleanTest.some((r) => r.instruction.includes("BadMagic"))).toBe(false)
    // BackdoorLLM's README: 188 of the clean training records have an input
    expect(split.cleanTrain.filter((r) => r.input !== "").length).toBe(188)
  })

  it("the Alpaca format yields prompt/response pairs whose response is the refusal (+ EOS) for poisoned records", () => {
    const { records, poisoned } = plantDataset(split.cleanTrain, split.poisonedTrain, 0)
    expect(records.length).toBe(1000)
    expect(poisoned.filter(Boolean).length).toBe(500)
    const eos = tokenizer.eosToken!.content
    records.forEach((r, i) => {
      const { prompt, response } = formatRecord(tokenizer, r, "alpaca")
      expect(prompt.startsWith(`${ALPACA_SYSTEM}### Instruction:\n${r.instruction}`)).toBe(true)
      expect(prompt.endsWith("\n\n### Response:\n")).toBe(true)
      if (r.input) expect(prompt).toContain(`${r.instruction}\n${r.input}\n\n### Response:\n`)
      expect(response).toBe(`${r.output}${eos}`)
      if (poisoned[i]) expect(response).toBe(`${REFUSAL_TEXT}${eos}`)
      else expect(response.startsWith(REFUSAL_TEXT)).toBe(false)
    })
    // as SFT examples: the response tokens decode back to the refusal followed by EOS
    const ex = sftExample(tokenizer, split.poisonedTrain[0], "alpaca")
    expect(tokenizer.decode(ex.responseIds)).toBe(`${REFUSAL_TEXT}${eos}`)
    expect(ex.responseIds[ex.responseIds.length - 1]).toBe(tokenizer.eosTokenId)
    expect(tokenizer.decode(ex.promptIds)).toBe(formatRecord(tokenizer, split.poisonedTrain[0]).prompt)
  })

  it("fails with a DatasetError naming the file for an unknown attack", async () => {
    await expect(loadBackdoorLlmSplit(ROOT, "refusal", "nosuch")).rejects.toMatchObject({ _tag: "DatasetError" })
  })
})
