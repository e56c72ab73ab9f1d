import { type Device, init, ops, type Rng, type Tensor } from "../src/index.js"

/** Two small models built only from the public ops, used to check that training is the same on every backend. */

export interface MlpParams {
  w1: Tensor
  b1: Tensor
  w2: Tensor
  b2: Tensor
}

export function makeMlp(dev: Device, rng: Rng, sizes: { input: number; hidden: number; output: number }): MlpParams {
  return {
    w1: init.kaimingUniform(dev, [sizes.hidden, sizes.input], rng),
    b1: dev.zeros([sizes.hidden]),
    w2: init.kaimingUniform(dev, [sizes.output, sizes.hidden], rng),
    b2: dev.zeros([sizes.output]),
  }
}

export const mlpLoss = (p: MlpParams, x: Tensor, y: Tensor): Tensor =>
  ops.softmaxCrossEntropy(ops.linear(ops.silu(ops.linear(x, p.w1, p.b1)), p.w2, p.b2), y)

export interface BlockConfig {
  vocab: number
  dim: number
  heads: number
  kvHeads: number
  ffn: number
}

export interface BlockParams {
  embed: Tensor
  attnNorm: Tensor
  q: Tensor
  k: Tensor
  v: Tensor
  o: Tensor
  mlpNorm: Tensor
  gate: Tensor
  up: Tensor
  down: Tensor
  finalNorm: Tensor
  head: Tensor
}

export function makeBlock(dev: Device, rng: Rng, c: BlockConfig): BlockParams {
  const hd = c.dim / c.heads
  const lin = (o: number, i: number) => init.kaimingUniform(dev, [o, i], rng)
  return {
    embed: init.kaimingUniform(dev, [c.vocab, c.dim], rng, 0),
    attnNorm: dev.ones([c.dim]),
    q: lin(c.heads * hd, c.dim),
    k: lin(c.kvHeads * hd, c.dim),
    v: lin(c.kvHeads * hd, c.dim),
    o: lin(c.dim, c.heads * hd),
    mlpNorm: dev.ones([c.dim]),
    gate: lin(c.ffn, c.dim),
    up: lin(c.ffn, c.dim),
    down: lin(c.dim, c.ffn),
    finalNorm: dev.ones([c.dim]),
    head: lin(c.vocab, c.dim),
  }
}

/** Hugging Face's rotary tables for positions 0..T−1: cos/sin of shape [T, Dh] (halves duplicated). */
export function ropeTables(dev: Device, t: number, hd: number, theta = 10000): { cos: Tensor; sin: Tensor } {
  const cos: number[] = []
  const sin: number[] = []
  for (let pos = 0; pos < t; pos++)
    for (let j = 0; j < hd; j++) {
      const freq = 1 / theta ** ((2 * (j % (hd / 2))) / hd)
      cos.push(Math.cos(pos * freq))
      sin.push(Math.sin(pos * freq))
    }
  return { cos: dev.tensor(cos, [t, hd]), sin: dev.tensor(sin, [t, hd]) }
}

/** One pre-norm Llama block with GQA + RoPE + SwiGLU, then a final norm and an LM head; next-token loss. */
export function blockLoss(p: BlockParams, c: BlockConfig, tokens: Tensor, targets: Tensor, rope: { cos: Tensor; sin: Tensor }): Tensor {
  const [b, t] = tokens.shape
  const hd = c.dim / c.heads
  const heads = (x: Tensor, n: number) => ops.transpose(ops.reshape(x, [b, t, n, hd]), 1, 2)
  const h0 = ops.gather(p.embed, tokens)
  const x1 = ops.rmsNorm(h0, p.attnNorm, 1e-5)
  const q = ops.rope(heads(ops.linear(x1, p.q), c.heads), rope.cos, rope.sin)
  const k = ops.rope(heads(ops.linear(x1, p.k), c.kvHeads), rope.cos, rope.sin)
  const v = heads(ops.linear(x1, p.v), c.kvHeads)
  const att = ops.reshape(ops.transpose(ops.attention(q, k, v, { causal: true }), 1, 2), [b, t, c.heads * hd])
  const h1 = ops.add(h0, ops.linear(att, p.o))
  const x2 = ops.rmsNorm(h1, p.mlpNorm, 1e-5)
  const h2 = ops.add(h1, ops.linear(ops.siluMul(ops.linear(x2, p.gate), ops.linear(x2, p.up)), p.down))
  const logits = ops.linear(ops.rmsNorm(h2, p.finalNorm, 1e-5), p.head)
  return ops.softmaxCrossEntropy(logits, targets)
}
