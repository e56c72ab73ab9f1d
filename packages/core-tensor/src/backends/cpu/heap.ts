import { wasm, type WasmMemory } from "./wasm-api.js"

/**
 * The CPU backend's memory: one shared, growable WasmMemory per process (per JS realm, strictly: a
 * worker thread that loads this module gets its own), holding every CPU device buffer as an (offset, length)
 * range. JS kernels read it through typed-array views, the WASM kernels and the worker threads through the very
 * same bytes, so nothing is copied between them on the hot path.
 *
 * Limits. A wasm32 memory addresses at most 65536 pages of 64 KiB = 4 GiB, and that is the memory's declared
 * maximum: the sum of live CPU buffers (plus the backend's packing scratch) across all CPU devices of a
 * process cannot exceed 4 GiB. A single buffer is further limited to 2^31 − 1 bytes (BackendLimits). Memory
 * grows on demand and is never returned to the OS (a wasm memory cannot shrink); freed ranges are reused.
 *
 * Allocator. Sizes round up to a size class: multiples of 64 bytes up to 256 bytes, then four classes per
 * power of two (at most 25% slack), every block 64-byte aligned (a cache line, and v128 alignment). Each class
 * has a LIFO free list, so the most recently freed (cache-warm) block of a class is reused first. A request
 * that no free list serves takes fresh memory from the top (growing the memory in steps of at least
 * GROW_STEP). When the memory cannot grow further, every free block is coalesced with its free neighbours and
 * the request is served first-fit from the merged ranges (which are split; the top moves down when the
 * highest range is free) before giving up with a RangeError.
 */

const PAGE = 65536
/** 4 GiB: the wasm32 limit. */
export const MAX_PAGES = 65536
const INITIAL_PAGES = 256 // 16 MiB
const GROW_STEP_PAGES = 256
const ALIGN = 64

/** The block size a request of `bytes` is rounded up to. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN)
  const step = Math.max(ALIGN, 2 ** (Math.floor(Math.log2(bytes - 1)) - 2))
  return Math.ceil(bytes / step) * step
}

interface Range {
  offset: number
  size: number
}

export class Heap {
  readonly memory: WasmMemory
  /** Bumped on every grow: typed-array views made before it no longer cover the whole memory. */
  generation = 0
  f32!: Float32Array
  i32!: Int32Array
  u32!: Uint32Array
  u8!: Uint8Array
  f64!: Float64Array
  /** First byte never handed out. */
  private top = ALIGN // offset 0 stays unused, so no block is at address 0
  private readonly freeLists = new Map<number, number[]>()
  /** Coalesced free ranges (sorted by offset), only populated after memory pressure. */
  private loose: Range[] = []
  /** Bytes in live blocks, and in free lists; for tests and diagnostics. */
  liveBytes = 0
  freeBytes = 0

  constructor(initialPages = INITIAL_PAGES, private readonly maxPages = MAX_PAGES) {
    this.memory = new wasm.Memory({ initial: initialPages, maximum: MAX_PAGES, shared: true })
    this.refreshViews()
  }

  get byteLength(): number {
    return this.memory.buffer.byteLength
  }

  private refreshViews(): void {
    const buffer = this.memory.buffer
    this.f32 = new Float32Array(buffer)
    this.i32 = new Int32Array(buffer)
    this.u32 = new Uint32Array(buffer)
    this.u8 = new Uint8Array(buffer)
    this.f64 = new Float64Array(buffer)
    this.generation++
  }

  /** A block of at least `bytes` bytes, 64-byte aligned; returns its offset. Its size is `sizeClass(bytes)`. */
  alloc(bytes: number): number {
    const size = sizeClass(bytes)
    const list = this.freeLists.get(size)
    let offset = list !== undefined && list.length > 0 ? list.pop()! : -1
    if (offset >= 0) this.freeBytes -= size
    else offset = this.fromLoose(size)
    if (offset < 0) offset = this.fromTop(size)
    if (offset < 0) {
      this.coalesce()
      offset = this.fromLoose(size)
      if (offset < 0) offset = this.fromTop(size)
    }
    if (offset < 0)
      throw new RangeError(
        `cpu backend: out of memory: ${bytes} bytes requested with ${this.liveBytes} bytes live in the ${this.maxPages * PAGE}-byte shared heap (wasm32 limit: 4 GiB for all CPU buffers of a process)`,
      )
    this.liveBytes += size
    return offset
  }

  /** Return a block obtained from `alloc(bytes)`. */
  free(offset: number, bytes: number): void {
    const size = sizeClass(bytes)
    let list = this.freeLists.get(size)
    if (list === undefined) this.freeLists.set(size, (list = []))
    list.push(offset)
    this.liveBytes -= size
    this.freeBytes += size
  }

  private fromTop(size: number): number {
    const end = this.top + size
    if (end > this.byteLength) {
      const needed = Math.ceil((end - this.byteLength) / PAGE)
      const current = this.byteLength / PAGE
      const room = this.maxPages - current
      if (needed > room) return -1
      // Grow by at least a step and by a quarter of the current size, so a growing workload grows rarely.
      const pages = Math.min(room, Math.max(needed, GROW_STEP_PAGES, Math.floor(current / 4)))
      this.memory.grow(pages)
      this.refreshViews()
    }
    const offset = this.top
    this.top = end
    return offset
  }

  private fromLoose(size: number): number {
    for (let i = 0; i < this.loose.length; i++) {
      const r = this.loose[i]
      if (r.size < size) continue
      const offset = r.offset
      r.offset += size
      r.size -= size
      if (r.size === 0) this.loose.splice(i, 1)
      this.freeBytes -= size
      return offset
    }
    return -1
  }

  /** Merge every free block with its free neighbours into `loose`; a free range at the top lowers the top. */
  private coalesce(): void {
    const ranges: Range[] = this.loose
    for (const [size, list] of this.freeLists) for (const offset of list) ranges.push({ offset, size })
    this.freeLists.clear()
    ranges.sort((x, y) => x.offset - y.offset)
    const merged: Range[] = []
    for (const r of ranges) {
      const last = merged[merged.length - 1]
      if (last !== undefined && last.offset + last.size === r.offset) last.size += r.size
      else merged.push({ ...r })
    }
    const highest = merged[merged.length - 1]
    if (highest !== undefined && highest.offset + highest.size === this.top) {
      this.top = highest.offset
      this.freeBytes -= highest.size
      merged.pop()
    }
    this.loose = merged
  }
}

let shared: Heap | null = null

/** The process-wide heap, created on first use. */
export function heap(): Heap {
  if (shared === null) shared = new Heap()
  return shared
}
