/**
 * ggml tensor types and dequantization to f32, for the types a small Llama GGUF uses. Block layouts (all
 * little-endian, 32 elements per block), as ggml-common.h defines them and gguf-py's `quants.py` decodes them:
 *
 *   Q8_0  (34 bytes): f16 d, 32 × int8 q                     x[i] = q[i]·d
 *   Q4_0  (18 bytes): f16 d, 16 bytes of nibble pairs        x[i] = (nibble − 8)·d
 *   Q4_1  (20 bytes): f16 d, f16 m, 16 bytes of nibble pairs x[i] = nibble·d + m
 *
 * where byte j of the nibble bytes holds element j in its low nibble and element j + 16 in its high nibble.
 * Products and sums are rounded to f32 exactly as numpy's float32 arithmetic does in gguf-py, so results are
 * bit-identical to `gguf.quants.dequantize` (d·q is exact in f32; f32 + f32 rounded once from a double is the
 * correctly rounded f32 sum).
 */
import { checkpointError } from "./errors.js"
import { bf16ToF32, f16BitsToF32, f16ToF32 } from "./half.js"

interface GgmlType {
  readonly name: string
  /** Elements per block. */
  readonly blockSize: number
  /** Bytes per block. */
  readonly typeSize: number
}

const QK_K = 256

/** Every type id gguf-py knows, with its block geometry (needed to bound tensors we cannot decode). */
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(
  (
    [
      [0, "F32", 1, 4], [1, "F16", 1, 2], [2, "Q4_0", 32, 18], [3, "Q4_1", 32, 20],
      [6, "Q5_0", 32, 22], [7, "Q5_1", 32, 24], [8, "Q8_0", 32, 34], [9, "Q8_1", 32, 40],
      [10, "Q2_K", QK_K, 84], [11, "Q3_K", QK_K, 110], [12, "Q4_K", QK_K, 144], [13, "Q5_K", QK_K, 176],
      [14, "Q6_K", QK_K, 210], [15, "Q8_K", QK_K, 292], [16, "IQ2_XXS", QK_K, 66], [17, "IQ2_XS", QK_K, 74],
      [18, "IQ3_XXS", QK_K, 98], [19, "IQ1_S", QK_K, 50], [20, "IQ4_NL", 32, 18], [21, "IQ3_S", QK_K, 110],
      [22, "IQ2_S", QK_K, 82], [23, "IQ4_XS", QK_K, 136], [24, "I8", 1, 1], [25, "I16", 1, 2],
      [26, "I32", 1, 4], [27, "I64", 1, 8], [28, "F64", 1, 8], [29, "IQ1_M", QK_K, 56], [30, "BF16", 1, 2],
      [34, "TQ1_0", QK_K, 54], [35, "TQ2_0", QK_K, 66], [39, "MXFP4", 32, 17],
    ] as const
  ).map(([id, name, blockSize, typeSize]) => [id, { name, blockSize, typeSize }]),
)

export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, BF16: 30 } as const

export const ggmlTypeName = (type: number): string => GGML_TYPES.get(type)?.name ?? `unknown type ${type}`

/** Whether `dequantize` can decode this type. */
export const canDequantize = (type: number): boolean => Object.values(GGML_TYPE).includes(type as never)

/**
 * Decodes `count` elements of ggml type `type` from `bytes` (exactly the tensor's bytes).
 * Unsupported types fail with a CheckpointError naming the file, tensor and type.
 */
export function dequantize(bytes: Uint8Array, type: number, count: number, file: string, tensor: string): Float32Array {
  const out = new Float32Array(count)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  switch (type) {
    case GGML_TYPE.F32:
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true)
      return out
    case GGML_TYPE.F16:
      return f16ToF32(halfWords(bytes, count), out)
    case GGML_TYPE.BF16:
      return bf16ToF32(halfWords(bytes, count), out)
    case GGML_TYPE.Q8_0:
      return dequantQ8_0(bytes, view, out)
    case GGML_TYPE.Q4_0:
      return dequantQ4_0(bytes, view, out)
    case GGML_TYPE.Q4_1:
      return dequantQ4_1(bytes, view, out)
    default:
      throw checkpointError(file, `ggml type ${ggmlTypeName(type)} cannot be dequantized (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)`, tensor)
  }
}

/** The bytes as u16 words, copied when the offset is not 2-aligned. */
function halfWords(bytes: Uint8Array, count: number): Uint16Array {
  const src = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice()
  return new Uint16Array(src.buffer, src.byteOffset, count)
}

function dequantQ8_0(bytes: Uint8Array, view: DataView, out: Float32Array): Float32Array {
  const q = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let block = 0, at = 0; at < out.length; block++, at += 32) {
    const base = block * 34
    const d = f16BitsToF32(view.getUint16(base, true))
    for (let i = 0; i < 32; i++) out[at + i] = q[base + 2 + i] * d
  }
  return out
}

/** Q4_0: x = (n − 8)·d. */
function dequantQ4_0(bytes: Uint8Array, view: DataView, out: Float32Array): Float32Array {
  for (let block = 0, at = 0; at < out.length; block++, at += 32) {
    const base = block * 18
    const d = f16BitsToF32(view.getUint16(base, true))
    for (let j = 0; j < 16; j++) {
      const b = bytes[base + 2 + j]
      out[at + j] = ((b & 0x0f) - 8) * d
      out[at + j + 16] = ((b >> 4) - 8) * d
    }
  }
  return out
}

/** Q4_1: x = n·d + m. n·d is exact in f32, so adding m (an f32) rounds once, as numpy's float32 does. */
function dequantQ4_1(bytes: Uint8Array, view: DataView, out: Float32Array): Float32Array {
  for (let block = 0, at = 0; at < out.length; block++, at += 32) {
    const base = block * 20
    const d = f16BitsToF32(view.getUint16(base, true))
    const m = f16BitsToF32(view.getUint16(base + 2, true))
    for (let j = 0; j < 16; j++) {
      const b = bytes[base + 4 + j]
      out[at + j] = (b & 0x0f) * d + m
      out[at + j + 16] = (b >> 4) * d + m
    }
  }
  return out
}
