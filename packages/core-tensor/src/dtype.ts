/**
 * Element types. Compute is f32; i32 carries indices; bool is stored as one 32-bit word per element (0 or 1)
 * because WGSL storage buffers have no 8-bit type, and the CPU backend mirrors that layout byte for byte.
 */
export type DType = "float32" | "int32" | "bool"

export const DTYPES: readonly DType[] = ["float32", "int32", "bool"]

/** Bytes per element in a backend buffer. */
export const BYTES_PER_ELEMENT = 4

export type HostArray<D extends DType> = D extends "float32" ? Float32Array : D extends "int32" ? Int32Array : Uint8Array

/** The typed array a backend buffer holds for a dtype (bool is a Uint32 word per element). */
export function storageArray(dtype: DType, buffer: ArrayBufferLike, byteOffset = 0, length?: number) {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer, byteOffset, length)
    case "int32":
      return new Int32Array(buffer, byteOffset, length)
    case "bool":
      return new Uint32Array(buffer, byteOffset, length)
  }
}

/**
 * What a tensor can be created or cast as: a DType, or "float16" — float values stored as IEEE binary16 (2 bytes
 * per element) where the device can compute on them (WebGPU with `shader-f16`: matmul reads them and
 * accumulates in f32), converted to float32 on write everywhere else (the CPU). A float16-stored tensor still
 * has `dtype` "float32" (its values are floats); `Tensor.storageDType` says "float16".
 */
export type CreateDType = DType | "float16"

const f32Bits = new Uint32Array(1)
const f32View = new Float32Array(f32Bits.buffer)

/** IEEE binary16 bits of x, rounded to nearest even (overflow → ±Infinity, NaN → quiet NaN). */
export function toHalfBits(x: number): number {
  f32View[0] = x // first to f32 (round to nearest even), as a device holding x in f32 would
  const bits = f32Bits[0]
  const sign = (bits >>> 16) & 0x8000
  const a = bits & 0x7fffffff
  if (a >= 0x47800000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00) // ≥ 2^16 (inf) or NaN
  if (a < 0x38800000) {
    // below 2^-14: a subnormal half (units of 2^-24) or zero
    if (a < 0x33000000) return sign // < 2^-25 rounds to 0
    const e = a >>> 23
    const m = (a & 0x7fffff) | 0x800000
    const shift = 126 - e
    const q = m >>> shift
    const rem = m & ((1 << shift) - 1)
    const half = 1 << (shift - 1)
    return sign | (q + (rem > half || (rem === half && (q & 1) === 1) ? 1 : 0))
  }
  // normal: rebias the exponent, round at bit 13 to nearest even (a carry may reach the exponent: 65520 → inf)
  return sign | ((a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13)
}

/** The number an IEEE binary16 bit pattern holds (exact). */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const e = (h >>> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0) return sign * m * 2 ** -24
  if (e === 31) return m === 0 ? sign * Infinity : Number.NaN
  return sign * (1 + m / 1024) * 2 ** (e - 15)
}

/** Values as packed halves, padded to whole 32-bit words (backends move words). */
export function packHalves(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(Math.max(2, values.length + (values.length % 2)))
  for (let i = 0; i < values.length; i++) out[i] = toHalfBits(values[i])
  return out
}
