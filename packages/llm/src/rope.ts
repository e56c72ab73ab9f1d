import type { Device, Tensor } from "@bdvax/core-tensor"
import type { ModelConfig } from "./model-config.js"

/**
 * Rotary tables exactly as Hugging Face's LlamaRotaryEmbedding computes them: inverse frequencies in float32
 * (with rope_scaling applied), angles = position · inv_freq in float32, emb = cat(freqs, freqs), then cos/sin.
 * Positions are host-side integers (the caller knows them: prompt offsets, left padding), so the tables are
 * built on the host and uploaded once per forward.
 */
const f32 = Math.fround

export function inverseFrequencies(c: ModelConfig, seqLen: number): Float32Array {
  const dim = c.headDim
  let base = c.ropeTheta
  const s = c.ropeScaling
  if (s.ropeType === "dynamic" && seqLen > c.maxPositionEmbeddings)
    base = base * ((s.factor * seqLen) / c.maxPositionEmbeddings - (s.factor - 1)) ** (dim / (dim - 2))
  const inv = new Float32Array(dim / 2)
  for (let i = 0; i < dim / 2; i++) inv[i] = f32(1 / f32(base ** f32((2 * i) / dim)))
  if (s.ropeType === "linear") for (let i = 0; i < inv.length; i++) inv[i] = f32(inv[i] / s.factor)
  if (s.ropeType === "llama3") {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i]
      if (wavelen > lowWavelen) inv[i] = f32(inv[i] / s.factor)
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
        inv[i] = f32((1 - smooth) * (inv[i] / s.factor) + smooth * inv[i])
      }
    }
  }
  return inv
}

/** cos/sin tables [B, T, headDim] for per-row positions (B rows of T positions each). */
export function ropeTables(dev: Device, c: ModelConfig, positions: readonly (readonly number[])[]): { cos: Tensor; sin: Tensor } {
  const b = positions.length
  const t = positions[0]?.length ?? 0
  const dim = c.headDim
  const half = dim / 2
  const maxPos = positions.reduce((m, row) => row.reduce((a, p) => Math.max(a, p), m), 0)
  const inv = inverseFrequencies(c, maxPos + 1)
  const cos = new Float32Array(b * t * dim)
  const sin = new Float32Array(b * t * dim)
  for (let r = 0; r < b; r++)
    for (let j = 0; j < t; j++) {
      const base = (r * t + j) * dim
      const p = positions[r][j]
      for (let i = 0; i < half; i++) {
        const angle = f32(p * inv[i])
        const cv = Math.cos(angle)
        const sv = Math.sin(angle)
        cos[base + i] = cos[base + half + i] = cv
        sin[base + i] = sin[base + half + i] = sv
      }
    }
  return { cos: dev.tensor(cos, [b, t, dim]), sin: dev.tensor(sin, [b, t, dim]) }
}
