import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { loadModelConfig, parseModelConfig, toHfConfigJson } from "../src/config.js"
import { ConfigError, MissingFileError } from "../src/errors.js"
import type { ModelConfig } from "../src/model-config.js"

/**
 * config.json parsing. The valid configs are real Hugging Face files (SmolLM2-135M-Instruct, Mistral-7B-v0.1,
 * Llama-3.2-1B, TinyLlama written by transformers ≥ 5 with rope_parameters); the expected defaults are those of
 * transformers' LlamaConfig / MistralConfig.
 */
const smolLM2 = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 576,
  initializer_range: 0.041666666666666664,
  intermediate_size: 1536,
  is_llama_config: true,
  max_position_embeddings: 8192,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  pad_token_id: 2,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_interleaved: false,
  rope_scaling: null,
  rope_theta: 100000,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.42.3",
  use_cache: true,
  vocab_size: 49152,
}

const mistral7B = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.34.0.dev0",
  use_cache: true,
  vocab_size: 32000,
}

const llama32 = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.45.0.dev0",
  use_cache: true,
  vocab_size: 128256,
}

/** The smallest config transformers would accept for us: everything else defaults. */
const minimal = { model_type: "llama", vocab_size: 100, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4 }
/** `json` without `key` (as a config.json that lacks it). */
const without = (json: Record<string, unknown>, key: string) => Object.fromEntries(Object.entries(json).filter(([k]) => k !== key))

describe("valid configs", () => {
  it("SmolLM2 (Llama, GQA, tied)", () => {
    expect(parseModelConfig(smolLM2, "config.json")).toEqual({
      architecture: "llama",
      vocabSize: 49152,
      hiddenSize: 576,
      intermediateSize: 1536,
      numHiddenLayers: 30,
      numAttentionHeads: 9,
      numKeyValueHeads: 3,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 100000,
      ropeScaling: { ropeType: "default" },
      maxPositionEmbeddings: 8192,
      tieWordEmbeddings: true,
      slidingWindow: null,
      attentionBias: false,
      mlpBias: false,
      initializerRange: 0.041666666666666664,
      bosTokenId: 1,
      eosTokenId: [2],
      padTokenId: 2,
      hiddenAct: "silu",
    } satisfies ModelConfig)
  })

  it("Mistral 7B (sliding window, no biases)", () => {
    const c = parseModelConfig(mistral7B, "config.json")
    expect(c.architecture).toBe("mistral")
    expect(c.slidingWindow).toBe(4096)
    expect(c.numKeyValueHeads).toBe(8)
    expect(c.headDim).toBe(128)
    expect(c.maxPositionEmbeddings).toBe(32768)
    expect(c.padTokenId).toBeNull()
    expect(parseModelConfig({ ...mistral7B, sliding_window: null }, "config.json").slidingWindow).toBeNull()
  })

  it("Llama 3.2 (llama3 rope scaling, several eos ids)", () => {
    const c = parseModelConfig(llama32, "config.json")
    expect(c.ropeScaling).toEqual({ ropeType: "llama3", factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 })
    expect(c.ropeTheta).toBe(500000)
    expect(c.eosTokenId).toEqual([128001, 128008, 128009])
    expect(c.bosTokenId).toBe(128000)
  })

  it("fills in transformers' defaults", () => {
    const llama = parseModelConfig(minimal, "config.json")
    expect(llama).toMatchObject({
      numKeyValueHeads: 4,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScaling: { ropeType: "default" },
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      slidingWindow: null,
      attentionBias: false,
      mlpBias: false,
      initializerRange: 0.02,
      bosTokenId: 1,
      eosTokenId: [2],
      padTokenId: null,
    })
    // MistralConfig: num_key_value_heads defaults to 8, max_position_embeddings to 4096·32, sliding window 4096.
    const mistral = parseModelConfig({ ...minimal, model_type: "mistral", num_attention_heads: 16 }, "config.json")
    expect(mistral).toMatchObject({ numKeyValueHeads: 8, maxPositionEmbeddings: 131072, slidingWindow: 4096, headDim: 4 })
    // An explicit null means "as many as the attention heads" (both classes).
    expect(parseModelConfig({ ...minimal, model_type: "mistral", num_key_value_heads: null }, "c").numKeyValueHeads).toBe(4)
    // The architecture can come from `architectures` alone.
    expect(parseModelConfig({ ...without(minimal, "model_type"), architectures: ["MistralForCausalLM"], num_key_value_heads: 2 }, "c").architecture).toBe("mistral")
  })

  it("reads every rope_scaling spelling", () => {
    const withRope = (rope: Record<string, unknown>, key = "rope_scaling") => parseModelConfig({ ...minimal, [key]: rope }, "c")
    expect(withRope({ type: "linear", factor: 2 }).ropeScaling).toEqual({ ropeType: "linear", factor: 2 })
    expect(withRope({ rope_type: "dynamic", factor: 4 }).ropeScaling).toEqual({ ropeType: "dynamic", factor: 4 })
    expect(withRope({ rope_type: "default" }).ropeScaling).toEqual({ ropeType: "default" })
    // transformers ≥ 5 writes rope_parameters, which carries rope_theta too.
    const v5 = withRope({ rope_type: "default", rope_theta: 250000 }, "rope_parameters")
    expect([v5.ropeScaling, v5.ropeTheta]).toEqual([{ ropeType: "default" }, 250000])
    const llama3 = withRope({ rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 })
    // original_max_position_embeddings defaults to max_position_embeddings, as transformers standardizes it.
    expect(llama3.ropeScaling).toEqual({ ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 2048 })
  })

  it.each([
    ["SmolLM2", smolLM2],
    ["Mistral 7B", mistral7B],
    ["Llama 3.2", llama32],
    ["minimal", minimal],
    ["linear rope", { ...minimal, rope_scaling: { type: "linear", factor: 2 } }],
    ["no eos", { ...minimal, eos_token_id: null, bos_token_id: null }],
  ])("toHfConfigJson round-trips %s", (_, json) => {
    const config = parseModelConfig(json, "config.json")
    const saved = JSON.parse(JSON.stringify(toHfConfigJson(config)))
    expect(parseModelConfig(saved, "saved.json")).toEqual(config)
  })
})

describe("invalid configs name the file and field", () => {
  it.each<[string, unknown, string, RegExp]>([
    ["negative heads", { ...minimal, num_attention_heads: -4 }, "num_attention_heads", /expected a positive integer, got -4/],
    ["fractional layers", { ...minimal, num_hidden_layers: 2.5 }, "num_hidden_layers", /expected a positive integer, got 2.5/],
    ["string hidden size", { ...minimal, hidden_size: "64" }, "hidden_size", /expected a positive integer, got "64"/],
    ["missing vocab size", without(minimal, "vocab_size"), "vocab_size", /is required/],
    ["zero kv heads", { ...minimal, num_key_value_heads: 0 }, "num_key_value_heads", /expected a positive integer, got 0/],
    ["kv heads a string", { ...minimal, num_key_value_heads: "2" }, "num_key_value_heads", /expected a positive integer or null, got "2"/],
    ["bad eps", { ...minimal, rms_norm_eps: -1 }, "rms_norm_eps", /expected a positive number, got -1/],
    ["bad tie flag", { ...minimal, tie_word_embeddings: "yes" }, "tie_word_embeddings", /expected true or false, got "yes"/],
    ["bad eos", { ...minimal, eos_token_id: "</s>" }, "eos_token_id", /expected a token id, a list of token ids or null/],
    ["bad eos in a list", { ...minimal, eos_token_id: [2, -1] }, "eos_token_id.1", /expected a token id/],
    ["rope_scaling not an object", { ...minimal, rope_scaling: 2 }, "rope_scaling", /expected an object or null, got 2/],
    ["rope factor not a number", { ...minimal, rope_scaling: { type: "linear", factor: "2" } }, "rope_scaling.factor", /expected a positive number/],
    ["rope factor missing", { ...minimal, rope_scaling: { type: "linear" } }, "rope_scaling.factor", /is required for rope type "linear"/],
    ["rope factor below 1", { ...minimal, rope_scaling: { rope_type: "dynamic", factor: 0.5 } }, "rope_scaling.factor", /≥ 1/],
    ["unsupported rope type", { ...minimal, rope_scaling: { rope_type: "yarn", factor: 4 } }, "rope_scaling.rope_type", /"yarn" is not supported/],
    ["legacy key, unsupported", { ...minimal, rope_scaling: { type: "su", factor: 4 } }, "rope_scaling.type", /"su" is not supported/],
    ["llama3 without low_freq_factor", { ...minimal, rope_scaling: { rope_type: "llama3", factor: 8, high_freq_factor: 4 } }, "rope_scaling.low_freq_factor", /is required/],
    ["llama3 with inverted factors", { ...minimal, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 1 } }, "rope_scaling.high_freq_factor", /must exceed low_freq_factor/],
    ["heads not divisible by kv heads", { ...minimal, num_key_value_heads: 3 }, "num_key_value_heads", /3 must divide num_attention_heads \(4\)/],
    ["hidden not divisible by heads", { ...minimal, num_attention_heads: 6 }, "num_attention_heads", /6 must divide hidden_size \(64\)/],
    ["gelu", { ...minimal, hidden_act: "gelu" }, "hidden_act", /expected "silu".*got "gelu"/],
    ["another model type", { ...minimal, model_type: "gpt2" }, "model_type", /expected "llama" or "mistral", got "gpt2"/],
    ["no model type at all", without(minimal, "model_type"), "model_type", /is required/],
    ["foreign architecture", { ...minimal, architectures: ["GPT2LMHeadModel"] }, "architectures", /expected LlamaForCausalLM or MistralForCausalLM/],
    ["contradicting architecture", { ...minimal, architectures: ["MistralForCausalLM"] }, "architectures", /contradicts model_type "llama"/],
    ["not an object", [1, 2], "(root)", /expected a JSON object, got \[1,2\]/],
    ["null", null, "(root)", /expected a JSON object/],
  ])("%s", (_, json, field, pattern) => {
    let error: unknown
    try {
      parseModelConfig(json, "config.json")
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ConfigError)
    const e = error as ConfigError
    expect([e.file, e.field]).toEqual(["config.json", field])
    expect(e.message.startsWith(`config.json: field "${field}": `)).toBe(true)
    expect(e.message).toMatch(pattern)
  })

  it("head_dim makes a non-divisible hidden size valid", () => {
    expect(parseModelConfig({ ...minimal, num_attention_heads: 6, num_key_value_heads: 2, head_dim: 16 }, "c").headDim).toBe(16)
  })
})

describe("loadModelConfig (Effect)", () => {
  it("reads a file, and fails with typed errors", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bdvax-config-"))
    try {
      await writeFile(join(dir, "config.json"), JSON.stringify(smolLM2))
      const c = await Effect.runPromise(loadModelConfig(join(dir, "config.json")))
      expect(c.hiddenSize).toBe(576)

      const missing = await Effect.runPromiseExit(loadModelConfig(join(dir, "absent.json")))
      expect(Exit.isFailure(missing) && JSON.stringify(missing.cause)).toContain("MissingFileError")

      await writeFile(join(dir, "broken.json"), "{ not json")
      const broken = await Effect.runPromise(Effect.flip(loadModelConfig(join(dir, "broken.json"))))
      expect(broken).toBeInstanceOf(ConfigError)
      expect(broken.message).toMatch(/broken\.json: field "\(root\)": not valid JSON/)

      await writeFile(join(dir, "invalid.json"), JSON.stringify({ ...smolLM2, num_key_value_heads: 2 }))
      const invalid = await Effect.runPromise(Effect.flip(loadModelConfig(join(dir, "invalid.json"))))
      expect(invalid).toBeInstanceOf(ConfigError)
      expect((invalid as ConfigError).field).toBe("num_key_value_heads")

      const flipped = await Effect.runPromise(Effect.flip(loadModelConfig(join(dir, "absent.json"))))
      expect(flipped).toBeInstanceOf(MissingFileError)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
