/**
 * 16-bit float conversions for checkpoints: IEEE half (f16) and bfloat16 (bf16) bit patterns held in
 * Uint16Arrays, to and from Float32Array. Reading is exact (every f16/bf16 value is an f32 value); writing
 * rounds to nearest, ties to even, as PyTorch's `.half()` / `.bfloat16()` do, so saved checkpoints match
 * what torch would have written.
 */

const f32Scratch = new Float32Array(1)
const u32Scratch = new Uint32Array(f32Scratch.buffer)

/** One f16 bit pattern → its f32 value (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exponent = (h >> 10) & 0x1f
  const mantissa = h & 0x3ff
  if (exponent === 0) return sign * mantissa * 2 ** -24 // zero and subnormals
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN
  return sign * (1024 + mantissa) * 2 ** (exponent - 25)
}

// A 65536-entry table (256 KB) turns f16 decoding of large tensors into one lookup per element.
let f16Table: Float32Array | undefined
function f16ToF32Table(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536)
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h)
  }
  return f16Table
}

/** f16 bit patterns → Float32Array (exact). */
export function f16ToF32(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array {
  const table = f16ToF32Table()
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]]
  return out
}

/** bf16 bit patterns → Float32Array (exact: bf16 is the top half of an f32). */
export function bf16ToF32(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array {
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length)
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16
  return out
}

/** One f32 value → f16 bits, round to nearest even; overflow → ±Infinity, NaN stays NaN. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value
  const x = u32Scratch[0]
  const sign = (x >>> 16) & 0x8000
  const exponent = (x >>> 23) & 0xff
  const mantissa = x & 0x7fffff
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 | (mantissa >>> 13) : 0)
  const e = exponent - 127 + 15 // re-biased exponent
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    // Subnormal f16 (or zero): shift the full 24-bit significand right and round the bits shifted out.
    if (e < -10) return sign // below half the smallest subnormal: rounds to ±0
    const significand = mantissa | 0x800000
    const shift = 14 - e
    const kept = significand >>> shift
    const rest = significand & ((1 << shift) - 1)
    const half = 1 << (shift - 1)
    const roundUp = rest > half || (rest === half && (kept & 1) === 1)
    return sign | (kept + (roundUp ? 1 : 0)) // a carry into bit 10 correctly yields the smallest normal
  }
  const kept = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  const roundUp = rest > 0x1000 || (rest === 0x1000 && (kept & 1) === 1)
  return sign | (kept + (roundUp ? 1 : 0)) // a carry may overflow into the exponent, up to Infinity: correct
}

/** One f32 value → bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value
  const x = u32Scratch[0]
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
}

/** Float32Array → f16 bit patterns (round to nearest even). */
export function f32ToF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i])
  return out
}

/** Float32Array → bf16 bit patterns (round to nearest even). */
export function f32ToBf16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i])
  return out
}
