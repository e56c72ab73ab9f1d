/** Elements of a tensor of this shape. */
export const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** A deterministic pseudo-random sequence in [-1, 1) (a 32-bit LCG's top 24 bits): test data for the CPU kernels. */
export function sequence(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    out[i] = ((s >>> 8) / 16777216) * 2 - 1
  }
  return out
}

/** mulberry32: a stream of deterministic uniforms in [0, 1), so a failure reproduces. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = Math.imul(s ^ (s >>> 15), s | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** n deterministic values in [lo, hi) (mulberry32). */
export function values(n: number, seed: number, lo = -2, hi = 2): number[] {
  const next = mulberry32(seed)
  return Array.from({ length: n }, () => lo + (hi - lo) * next())
}
