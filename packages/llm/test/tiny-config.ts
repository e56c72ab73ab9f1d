import type { ModelConfig } from "../src/model-config.js"

/** A tiny Llama (2 layers, 4 heads / 2 KV heads, hidden 32) for self-contained tests; override what a test needs. */
export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    architecture: "llama",
    vocabSize: 40,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: { ropeType: "default" },
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: false,
    slidingWindow: null,
    attentionBias: false,
    mlpBias: false,
    initializerRange: 0.2,
    bosTokenId: 1,
    eosTokenId: [2],
    padTokenId: 0,
    hiddenAct: "silu",
    ...overrides,
  }
}
