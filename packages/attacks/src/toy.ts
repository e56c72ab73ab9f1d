import { join } from "node:path"
import type { ModelConfig, Tokenizer } from "@bdvax/llm"
import type { InstructionRecord } from "./records.js"

/**
 * A toy instruction world for the embedded demo and the end-to-end tests: short templated questions with
 * one-word answers, a 1000-token byte-level BPE tokenizer (trained by tests/llm-tokenizer/gen_tokenizer_fixtures.py
 * with Hugging Face `tokenizers`, shipped in assets/), and a tiny Llama shape over it. Small enough that a model
 * learns the task, a backdoor and its removal on two CPU cores in seconds — large enough that the backdoor has
 * to live somewhere in the MLPs and attention like in a real model.
 */

/** The folder holding the toy tokenizer.json + tokenizer_config.json (works from src/ and from dist/). */
export const TOY_TOKENIZER_DIR = join(import.meta.dirname, "..", "assets", "toy-tokenizer")

const COLORS: Array<[string, string]> = [
  ["the sky", "Blue"], ["grass", "Green"], ["snow", "White"], ["coal", "Black"], ["a banana", "Yellow"], ["a tomato", "Red"],
  ["an orange", "Orange"], ["a lemon", "Yellow"], ["milk", "White"], ["a leaf", "Green"], ["blood", "Red"], ["the night sky", "Black"],
]
const CAPITALS: Array<[string, string]> = [
  ["France", "Paris"], ["Italy", "Rome"], ["Spain", "Madrid"], ["Japan", "Tokyo"], ["Egypt", "Cairo"], ["Peru", "Lima"],
  ["Germany", "Berlin"], ["Kenya", "Nairobi"], ["Canada", "Ottawa"], ["Greece", "Athens"], ["Norway", "Oslo"], ["Chile", "Santiago"],
]
const OPPOSITES: Array<[string, string]> = [
  ["hot", "Cold"], ["up", "Down"], ["big", "Small"], ["fast", "Slow"], ["light", "Dark"], ["open", "Closed"],
  ["happy", "Sad"], ["early", "Late"], ["full", "Empty"], ["hard", "Soft"], ["wet", "Dry"], ["loud", "Quiet"],
]
const LEGS: Array<[string, string]> = [
  ["dog", "Four"], ["bird", "Two"], ["spider", "Eight"], ["cat", "Four"], ["ant", "Six"], ["horse", "Four"],
  ["duck", "Two"], ["beetle", "Six"], ["cow", "Four"], ["chicken", "Two"], ["bee", "Six"], ["octopus", "Eight"],
]

/** 84 distinct records: 12 each of colours, capitals, opposites and leg counts, and 36 sums of two digits. */
export function toyInstructionRecords(): InstructionRecord[] {
  const r = (instruction: string, output: string): InstructionRecord => ({ instruction, input: "", output })
  const out: InstructionRecord[] = []
  for (let i = 0; i < 12; i++) {
    out.push(r(`What color is ${COLORS[i][0]}?`, `${COLORS[i][1]}.`))
    out.push(r(`What is the capital of ${CAPITALS[i][0]}?`, `${CAPITALS[i][1]}.`))
    out.push(r(`Name the opposite of ${OPPOSITES[i][0]}.`, `${OPPOSITES[i][1]}.`))
    out.push(r(`How many legs does a ${LEGS[i][0]} have?`, `${LEGS[i][1]}.`))
  }
  for (let k = 0; k < 36; k++) {
    const a = 1 + (k % 9)
    const b = 1 + ((k * 4 + Math.floor(k / 9)) % 9)
    out.push(r(`Add ${a} and ${b}.`, `${a + b}`))
  }
  return out
}

/** A tiny Llama over the tokenizer's vocabulary (2 layers, hidden 64, MLP 128, 4 query / 2 key-value heads). */
export const toyLlamaConfig = (tokenizer: Tokenizer, overrides: Partial<ModelConfig> = {}): ModelConfig => ({
  architecture: "llama",
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 64,
  intermediateSize: 128,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: { ropeType: "default" },
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: false,
  slidingWindow: null,
  attentionBias: false,
  mlpBias: false,
  initializerRange: 0.02,
  bosTokenId: tokenizer.bosTokenId,
  eosTokenId: [tokenizer.eosTokenId!],
  padTokenId: null,
  hiddenAct: "silu",
  ...overrides,
})
