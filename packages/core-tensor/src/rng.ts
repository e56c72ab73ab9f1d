/**
 * Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
 * generator, so element i of any draw is a pure function of (seed, stream, i) and both backends — this file on
 * the CPU and the WGSL port in the webgpu backend — produce the same bits in any order and any thread layout.
 *
 * Element i of a draw uses one Philox block with counter (i + offset, 0, streamLo, streamHi) and key
 * (seedLo, seedHi):
 *   uniform: (w0 >>> 8) · 2⁻²⁴                                  ∈ [0, 1), exactly representable in f32
 *   normal : u1 = ((w0 >>> 8) + 1) · 2⁻²⁴ ∈ (0, 1], u2 = (w1 >>> 8) · 2⁻²⁴,
 *            z = sqrt(−2 ln u1) · cos(2π u2)                    (Box–Muller, cosine branch)
 * The uniform bits are identical across backends; normals agree to f32 rounding of log/cos/sqrt.
 */
const M0 = 0xd2511f53
const M1 = 0xcd9e8d57
const W0 = 0x9e3779b9
const W1 = 0xbb67ae85

/** High 32 bits of the 64-bit product of two u32, via 16-bit halves (the same arithmetic as the WGSL port). */
export function mulhi32(a: number, b: number): number {
  const aLo = a & 0xffff
  const aHi = a >>> 16
  const bLo = b & 0xffff
  const bHi = b >>> 16
  const lolo = aLo * bLo
  const lohi = aLo * bHi
  const hilo = aHi * bLo
  const hihi = aHi * bHi
  const cross = (lolo >>> 16) + (lohi & 0xffff) + (hilo & 0xffff)
  return (hihi + (lohi >>> 16) + (hilo >>> 16) + Math.floor(cross / 65536)) >>> 0
}

/** One Philox-4x32-10 block. Returns four u32 words. */
export function philox4x32(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): [number, number, number, number] {
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi32(M0, c0)
    const lo0 = Math.imul(M0, c0) >>> 0
    const hi1 = mulhi32(M1, c2)
    const lo1 = Math.imul(M1, c2) >>> 0
    const n0 = (hi1 ^ c1 ^ k0) >>> 0
    const n2 = (hi0 ^ c3 ^ k1) >>> 0
    c0 = n0
    c1 = lo1
    c2 = n2
    c3 = lo0
    k0 = (k0 + W0) >>> 0
    k1 = (k1 + W1) >>> 0
  }
  return [c0, c1, c2, c3]
}

const TWO_POW_M24 = 1 / 16777216

export function uniformFromBits(w0: number): number {
  return (w0 >>> 8) * TWO_POW_M24
}

export function normalFromBits(w0: number, w1: number): number {
  const u1 = Math.fround(((w0 >>> 8) + 1) * TWO_POW_M24)
  const u2 = Math.fround((w1 >>> 8) * TWO_POW_M24)
  const r = Math.fround(Math.sqrt(Math.fround(-2 * Math.fround(Math.log(u1)))))
  return Math.fround(r * Math.fround(Math.cos(Math.fround(2 * Math.PI * u2))))
}

/** Fill `out` with element i = draw(seed, stream, i + offset), as the `random` kernel defines it. */
export function fillRandom(
  out: Float32Array,
  dist: "uniform" | "normal",
  seed: readonly [number, number],
  stream: readonly [number, number],
  offset: number,
): void {
  for (let i = 0; i < out.length; i++) {
    const [w0, w1] = philox4x32((i + offset) >>> 0, 0, stream[0] >>> 0, stream[1] >>> 0, seed[0] >>> 0, seed[1] >>> 0)
    out[i] = dist === "uniform" ? uniformFromBits(w0) : normalFromBits(w0, w1)
  }
}

/**
 * A seeded generator handle: every draw takes a fresh stream, so draws are independent and a program that
 * makes the same draws in the same order gets the same numbers on every backend.
 */
export class Rng {
  private nextStream = 0
  readonly seed: readonly [number, number]
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`Rng: seed must be a non-negative safe integer, got ${seed}`)
    this.seed = [seed >>> 0, Math.floor(seed / 4294967296) >>> 0]
  }
  /** The (lo, hi) stream id for the next draw. */
  takeStream(): [number, number] {
    const s = this.nextStream++
    return [s >>> 0, Math.floor(s / 4294967296) >>> 0]
  }
  /** A child generator with an independent seed, derived deterministically (for per-layer or per-worker use). */
  fork(): Rng {
    const [w0, w1] = philox4x32(0xffffffff, 0xffffffff, ...this.takeStream(), this.seed[0], this.seed[1])
    return new Rng(w0 + (w1 & 0x1fffff) * 4294967296)
  }
}
