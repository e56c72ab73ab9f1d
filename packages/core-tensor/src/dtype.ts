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
