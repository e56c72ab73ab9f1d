import type { DeviceBuffer, View } from "../../backend.js"
import { BYTES_PER_ELEMENT, type DType } from "../../dtype.js"
import type { Heap } from "./heap.js"

/** Every element is a 32-bit word, so buffers are sized in whole words (a trailing partial word is padding). */
export const roundUpToWord = (byteLength: number) => Math.ceil(byteLength / BYTES_PER_ELEMENT) * BYTES_PER_ELEMENT

/**
 * A CPU device buffer: a range [base, base + byteLength) of the process's shared heap (heap.ts). Kernels see
 * it through typed arrays that start at `base` (element 0 of the buffer is element 0 of the array), made once on
 * first use: shared memory is never detached, so a view made before the heap grows stays valid for its range. The handle is never
 * reused after `free` (only its range is), so a stale handle fails loudly instead of silently aliasing a
 * newer allocation.
 */
export class CpuBuffer implements DeviceBuffer {
  readonly byteLength: number
  /** Byte offset of the buffer in the heap. */
  readonly base: number
  /** Bytes reserved (byteLength rounded to whole words; the heap block may be larger). */
  readonly reserved: number
  private live = true
  private views: { readonly f32: Float32Array; readonly i32: Int32Array; readonly u32: Uint32Array } | null = null

  constructor(
    readonly heap: Heap,
    byteLength: number,
    /** The owning backend's set of live buffers (the buffer removes itself on release). */
    private readonly owner: Set<CpuBuffer> | null = null,
  ) {
    this.byteLength = byteLength
    this.reserved = Math.max(BYTES_PER_ELEMENT, roundUpToWord(byteLength))
    this.base = heap.alloc(this.reserved)
  }

  get alive(): boolean {
    return this.live
  }

  private arrays() {
    if (!this.live) throw new Error("cpu backend: use of a freed buffer")
    if (this.views === null) {
      const words = this.reserved / BYTES_PER_ELEMENT
      const buffer = this.heap.memory.buffer
      this.views = {
        f32: new Float32Array(buffer, this.base, words),
        i32: new Int32Array(buffer, this.base, words),
        u32: new Uint32Array(buffer, this.base, words),
      }
    }
    return this.views
  }

  /** Check the handle is live (throws on a freed one). */
  check(): void {
    if (!this.live) throw new Error("cpu backend: use of a freed buffer")
  }

  /** Give the range back to the heap; the handle is dead afterwards. */
  release(): void {
    this.check()
    this.live = false
    this.views = null
    this.owner?.delete(this)
    this.heap.free(this.base, this.reserved)
  }

  f32(): Float32Array {
    return this.arrays().f32
  }
  i32(): Int32Array {
    return this.arrays().i32
  }
  u32(): Uint32Array {
    return this.arrays().u32
  }
}

/** The typed array type a dtype is stored as (bool is one Uint32 word per element, see dtype.ts). */
export type Elements = Float32Array | Int32Array | Uint32Array

/**
 * How kernels reach the bytes behind a view. The accessors check the view's dtype, so a kernel that reads a
 * float32 operand through `f32` cannot silently reinterpret int32 bits. The arrays start at the buffer's first
 * element (index with `view.offset`); `addr` gives the heap byte address of the view's first element, for
 * WASM kernels.
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
  /** Heap byte address of element `view.offset` (checks the buffer is live). */
  addr(view: View): number
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
  addr(view) {
    const buffer = cpuBufferOf(view)
    buffer.check()
    return buffer.base + view.offset * BYTES_PER_ELEMENT
  },
}

/** Number of elements of a shape. */
export const elementCount = (shape: readonly number[]): number => {
  let n = 1
  for (const d of shape) n *= d
  return n
}
