import type { DeviceBuffer } from "../../backend.js"
import type { BoundBuffer } from "./dispatch-recorder.js"
import type { FusibleCall, NodeOperands } from "./fusion-nodes.js"
import type { WindowEntry } from "./fusion-plan.js"
import type { Grid, ParamList } from "./wgsl-helpers.js"

/** A pass of a non-fusible call, planned and bound when it was dispatched, recorded when the window empties. */
export interface PreparedPass {
  readonly pipeline: GPUComputePipeline
  readonly layout: GPUBindGroupLayout
  readonly buffers: readonly BoundBuffer[]
  readonly params: ParamList
  readonly grid: Grid
  readonly label: string
}

export interface WindowCaps {
  /** Calls waiting before the window is emitted anyway (default 256). */
  readonly maxPendingCalls: number
  /** Bytes of freed buffers held back from the pool while the window is open (default 256 MiB). */
  readonly maxDeferredBytes: number
}

/**
 * The calls dispatched since the last sync point, not yet recorded into the command encoder: the fuser's view
 * of a step. It maps every buffer handle a waiting call uses to its GPUBuffer (the tensor layer may free the
 * handle before the window is emitted), and it remembers which handles were freed — that is what tells a dead
 * intermediate from a live one.
 *
 * Frees of buffers a waiting call uses are deferred: the GPUBuffer goes back to the pool only after the window
 * is recorded, so no buffer is handed out again while calls that use it wait, and no fused kernel ever binds
 * one buffer under two handles (or as input and output). The caps bound the memory this holds back.
 */
export class PendingWindow {
  readonly entries: WindowEntry[] = []
  readonly freed = new Set<DeviceBuffer>()
  private readonly gpu = new Map<DeviceBuffer, GPUBuffer>()
  private readonly prepared = new Map<number, readonly PreparedPass[]>()
  private deferred: GPUBuffer[] = []
  private deferredBytes = 0

  constructor(readonly caps: WindowCaps) {}

  get isEmpty(): boolean {
    return this.entries.length === 0
  }

  /** Time to emit: too many calls waiting or too many bytes held back. */
  get full(): boolean {
    return this.entries.length >= this.caps.maxPendingCalls || this.deferredBytes > this.caps.maxDeferredBytes
  }

  references(handle: DeviceBuffer): boolean {
    return this.gpu.has(handle)
  }

  /** The GPUBuffer a waiting call binds for `handle`, freed or not. */
  gpuOf(handle: DeviceBuffer): GPUBuffer {
    const b = this.gpu.get(handle)
    if (b === undefined) throw new Error("webgpu: a pending call uses a buffer the window does not know (fusion bug)")
    return b
  }

  addNode(call: FusibleCall, operands: NodeOperands, buffers: ReadonlyMap<DeviceBuffer, GPUBuffer>): void {
    for (const [h, b] of buffers) this.gpu.set(h, b)
    this.entries.push({ kind: "node", call, operands })
  }

  /** A non-fusible call: its passes, the handles it binds and the scratch buffers to release once recorded. */
  addBarrier(passes: readonly PreparedPass[], buffers: ReadonlyMap<DeviceBuffer, GPUBuffer>, scratch: readonly GPUBuffer[]): void {
    for (const [h, b] of buffers) this.gpu.set(h, b)
    this.prepared.set(this.entries.length, passes)
    this.entries.push({ kind: "barrier", handles: [...buffers.keys()] })
    for (const b of scratch) this.defer(b)
  }

  passesOf(entry: number): readonly PreparedPass[] {
    return this.prepared.get(entry) ?? []
  }

  /** The tensor layer freed `handle`, which a waiting call uses. */
  free(handle: DeviceBuffer, buffer: GPUBuffer): void {
    this.freed.add(handle)
    this.defer(buffer)
  }

  /** Forget the emitted calls; hand the held-back buffers to `release`. */
  clear(release: (b: GPUBuffer) => void): void {
    const held = this.deferred
    this.entries.length = 0
    this.freed.clear()
    this.gpu.clear()
    this.prepared.clear()
    this.deferred = []
    this.deferredBytes = 0
    for (const b of held) release(b)
  }

  private defer(b: GPUBuffer): void {
    this.deferred.push(b)
    this.deferredBytes += b.size
  }
}
