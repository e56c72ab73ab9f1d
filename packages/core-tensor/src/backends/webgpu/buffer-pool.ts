import type { DeviceBuffer } from "../../backend.js"

/**
 * Size classes: below 4 KiB, multiples of 256 bytes; above, eight classes per power of two (a class is a
 * multiple of 1/8 of the power of two below it). A buffer is therefore at most 12.5% larger than asked, powers
 * of two map to themselves (so a buffer within a power-of-two binding limit stays within it), and a training
 * loop that allocates the same shapes every step hits the pool every time.
 */
export function sizeClass(byteLength: number): number {
  const bytes = Math.max(256, byteLength)
  if (bytes <= 4096) return Math.ceil(bytes / 256) * 256
  const step = 2 ** (Math.floor(Math.log2(bytes - 1)) - 3)
  return Math.ceil(bytes / step) * step
}

/** A webgpu device buffer: the GPUBuffer of its size class, or null once freed (so stale handles fail loudly). */
export class GpuDeviceBuffer implements DeviceBuffer {
  constructor(
    readonly byteLength: number,
    public gpu: GPUBuffer | null,
  ) {}
}

/**
 * Free GPUBuffers by size class. Buffers come back here on `free` and leave on `alloc`; usage flags are fixed
 * per pool (one for storage, one for map-read staging). Pooled bytes are capped: beyond `maxPooledBytes` a
 * returned buffer is destroyed instead of kept.
 */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>()
  private pooledBytes = 0

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: GPUBufferUsageFlags,
    private readonly label: string,
    private readonly maxBufferSize: number,
    private readonly maxPooledBytes: number,
    /** How a buffer the pool does not keep is destroyed: dispatches recorded but not yet submitted may still
     *  bind it, so the backend defers the destroy until after the next submit. */
    private readonly discard: (buffer: GPUBuffer) => void = (b) => b.destroy(),
  ) {}

  /** A buffer of at least `byteLength` bytes (its size class, or the exact 4-byte-rounded size when the class
   *  would exceed the device's maximum buffer size). */
  acquire(byteLength: number): GPUBuffer {
    let size = sizeClass(byteLength)
    if (size > this.maxBufferSize) size = Math.ceil(byteLength / 4) * 4
    const reused = this.free.get(size)?.pop()
    if (reused !== undefined) {
      this.pooledBytes -= size
      return reused
    }
    return this.device.createBuffer({ size, usage: this.usage, label: `${this.label} ${size}` })
  }

  release(buffer: GPUBuffer): void {
    if (this.pooledBytes + buffer.size > this.maxPooledBytes) {
      this.discard(buffer)
      return
    }
    const list = this.free.get(buffer.size)
    if (list === undefined) this.free.set(buffer.size, [buffer])
    else list.push(buffer)
    this.pooledBytes += buffer.size
  }

  destroy(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy()
    this.free.clear()
    this.pooledBytes = 0
  }
}
