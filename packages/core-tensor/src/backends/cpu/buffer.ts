import type { DeviceBuffer, View } from "../../backend.js"
import { BYTES_PER_ELEMENT, storageArray, type DType } from "../../dtype.js"

/** Every element is a 32-bit word, so buffers are sized in whole words (a trailing partial word is padding). */
export const roundUpToWord = (byteLength: number) => Math.ceil(byteLength / BYTES_PER_ELEMENT) * BYTES_PER_ELEMENT

/**
 * A CPU device buffer: an ArrayBuffer plus one typed-array window per dtype, made once so kernels never
 * allocate views on the hot path. The handle is never reused after `free` (only its ArrayBuffer is pooled),
 * so a stale handle fails loudly instead of silently aliasing a newer allocation.
 */
export class CpuBuffer implements DeviceBuffer {
  readonly byteLength: number
  private arrays: { readonly bytes: ArrayBuffer; readonly f32: Float32Array; readonly i32: Int32Array; readonly u32: Uint32Array } | null

  constructor(byteLength: number, storage: ArrayBuffer) {
    this.byteLength = byteLength
    this.arrays = {
      bytes: storage,
      f32: storageArray("float32", storage) as Float32Array,
      i32: storageArray("int32", storage) as Int32Array,
      u32: storageArray("bool", storage) as Uint32Array,
    }
  }

  private live() {
    if (this.arrays === null) throw new Error("cpu backend: use of a freed buffer")
    return this.arrays
  }

  /** The backing store; throws on a freed handle. */
  bytes(): ArrayBuffer {
    return this.live().bytes
  }

  /** Detach the ArrayBuffer from this handle (dropping every view of it) and hand it back for pooling. */
  release(): ArrayBuffer {
    const storage = this.live().bytes
    this.arrays = null
    return storage
  }

  f32(): Float32Array {
    return this.live().f32
  }
  i32(): Int32Array {
    return this.live().i32
  }
  u32(): Uint32Array {
    return this.live().u32
  }
}

/** The typed array type a dtype is stored as (bool is one Uint32 word per element, see dtype.ts). */
export type Elements = Float32Array | Int32Array | Uint32Array

/**
 * How kernels reach the bytes behind a view. The accessors check the view's dtype, so a kernel that reads a
 * float32 operand through `f32` cannot silently reinterpret int32 bits.
 */
export interface Memory {
  f32(view: View): Float32Array
  i32(view: View): Int32Array
  /** bool views as 0/1 words. */
  bool(view: View): Uint32Array
  /** The array matching the view's dtype, for kernels that are generic over dtypes. */
  elements(view: View): Elements
  /** Raw 32-bit words of any dtype, for bit-exact moves (copy, where, pad). */
  words(view: View): Uint32Array
}

function cpuBufferOf(view: View): CpuBuffer {
  const buffer = view.buffer
  if (!(buffer instanceof CpuBuffer)) throw new Error("cpu backend: view's buffer belongs to another backend")
  return buffer
}

function expectDType(view: View, dtype: DType, accessor: string): void {
  if (view.dtype !== dtype) throw new Error(`cpu backend: ${accessor} accessor used on a ${view.dtype} view`)
}

export const memory: Memory = {
  f32(view) {
    expectDType(view, "float32", "f32")
    return cpuBufferOf(view).f32()
  },
  i32(view) {
    expectDType(view, "int32", "i32")
    return cpuBufferOf(view).i32()
  },
  bool(view) {
    expectDType(view, "bool", "bool")
    return cpuBufferOf(view).u32()
  },
  elements(view) {
    const buffer = cpuBufferOf(view)
    switch (view.dtype) {
      case "float32":
        return buffer.f32()
      case "int32":
        return buffer.i32()
      case "bool":
        return buffer.u32()
    }
  },
  words(view) {
    return cpuBufferOf(view).u32()
  },
}

/** Number of elements of a shape. */
export const elementCount = (shape: readonly number[]): number => {
  let n = 1
  for (const d of shape) n *= d
  return n
}
