import type { BoundBuffer } from "./dispatch-recorder.js"
import { SLOT_BYTES } from "./uniform-ring.js"

/** Bind groups kept at most; beyond, the cache starts over (a training loop needs far fewer). */
const MAX_GROUPS = 4096

/**
 * Bind groups by (layout, bound buffers): a training step binds the same pooled buffers to the same pipelines
 * every time, and creating a bind group costs ~20 µs plus ~4 µs per entry on Dawn/lavapipe — as much as the rest
 * of a dispatch. The uniform block is bound with a dynamic offset (each dispatch's slot of the uniform ring), so
 * one group serves every slot. A buffer about to be destroyed is `forget`-ten first: a cached group that binds a
 * destroyed buffer must never be submitted.
 */
export class BindGroupCache {
  private readonly groups = new Map<string, { readonly group: GPUBindGroup; readonly buffers: readonly GPUBuffer[] }>()
  private readonly keysOf = new Map<GPUBuffer, Set<string>>()
  private readonly ids = new WeakMap<object, number>()
  private nextId = 0

  constructor(
    private readonly device: GPUDevice,
    private readonly uniforms: GPUBuffer,
  ) {}

  get(layout: GPUBindGroupLayout, buffers: readonly BoundBuffer[], label: string): GPUBindGroup {
    let key = String(this.idOf(layout))
    for (const b of buffers) key += `|${this.idOf(b.buffer)}:${b.size}`
    const known = this.groups.get(key)
    if (known !== undefined) return known.group
    if (this.groups.size >= MAX_GROUPS) this.clear()
    const group = this.device.createBindGroup({
      layout,
      label,
      entries: [
        { binding: 0, resource: { buffer: this.uniforms, offset: 0, size: SLOT_BYTES } },
        ...buffers.map((b, i) => ({ binding: i + 1, resource: { buffer: b.buffer, offset: 0, size: b.size } })),
      ],
    })
    const bound = buffers.map((b) => b.buffer)
    this.groups.set(key, { group, buffers: bound })
    for (const b of bound) {
      const keys = this.keysOf.get(b)
      if (keys === undefined) this.keysOf.set(b, new Set([key]))
      else keys.add(key)
    }
    return group
  }

  /** Drop every group that binds `buffer` (call before destroying it). */
  forget(buffer: GPUBuffer): void {
    for (const key of this.keysOf.get(buffer) ?? []) {
      const entry = this.groups.get(key)
      this.groups.delete(key)
      for (const other of entry?.buffers ?? []) if (other !== buffer) this.keysOf.get(other)?.delete(key)
    }
    this.keysOf.delete(buffer)
  }

  clear(): void {
    this.groups.clear()
    this.keysOf.clear()
  }

  private idOf(o: object): number {
    let id = this.ids.get(o)
    if (id === undefined) {
      id = this.nextId++
      this.ids.set(o, id)
    }
    return id
  }
}
