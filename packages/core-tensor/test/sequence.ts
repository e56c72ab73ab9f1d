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
