import { BindGroupCache } from "./bind-groups.js"
import { UniformRing } from "./uniform-ring.js"
import type { Grid, ParamList } from "./wgsl-helpers.js"

/** Dispatches per command buffer: a bound on host memory and latency, and the size of the uniform ring. */
export const MAX_PENDING_DISPATCHES = 256

/** A storage buffer and the byte size to bind. */
export interface BoundBuffer {
  readonly buffer: GPUBuffer
  readonly size: number
}

/**
 * The pending command encoder. Dispatches go into one compute pass (WebGPU orders dispatches within a pass:
 * each sees the writes of the ones before), and the encoder is submitted as one command buffer when the
 * backend asks (read, write, flush) or when MAX_PENDING_DISPATCHES are waiting.
 */
export class DispatchRecorder {
  private encoder: GPUCommandEncoder | null = null
  private pass: GPUComputePassEncoder | null = null
  private readonly uniforms: UniformRing
  /** Compute dispatches recorded since creation (each pass of a multi-pass kernel counts). */
  dispatches = 0

  private readonly groups: BindGroupCache

  constructor(private readonly device: GPUDevice) {
    this.uniforms = new UniformRing(device, MAX_PENDING_DISPATCHES)
    this.groups = new BindGroupCache(device, this.uniforms.buffer)
  }

  record(pipeline: GPUComputePipeline, layout: GPUBindGroupLayout, buffers: readonly BoundBuffer[], params: ParamList, grid: Grid, label: string): void {
    const offset = this.uniforms.push(params)
    const group = this.groups.get(layout, buffers, label)
    this.encoder ??= this.device.createCommandEncoder({ label: "steps" })
    this.pass ??= this.encoder.beginComputePass()
    this.pass.setPipeline(pipeline)
    this.pass.setBindGroup(0, group, [offset])
    this.pass.dispatchWorkgroups(grid[0], grid[1], grid[2])
    this.dispatches++
    if (this.uniforms.full) this.submit()
  }

  /** Destroy a buffer once nothing unsubmitted can bind it: now if no encoder is pending, else right after the
   *  pending encoder is submitted (destroying a buffer that submitted work still uses is legal; submitting work
   *  that binds a destroyed buffer is not). */
  destroyAfterSubmit(buffer: GPUBuffer): void {
    this.groups.forget(buffer)
    if (this.encoder === null) buffer.destroy()
    else this.retired.push(buffer)
  }

  private readonly retired: GPUBuffer[] = []

  /** Submit what is pending, after appending `then` (e.g. a copy for a read) to the same command buffer. */
  submit(then?: (encoder: GPUCommandEncoder) => void): void {
    if (this.encoder === null && then === undefined) return
    const encoder = this.encoder ?? this.device.createCommandEncoder({ label: "steps" })
    this.pass?.end()
    this.pass = null
    this.encoder = null
    then?.(encoder)
    // The uniforms of these dispatches must be on the GPU before the command buffer runs.
    this.uniforms.upload(this.device.queue)
    this.device.queue.submit([encoder.finish()])
    for (const b of this.retired) b.destroy()
    this.retired.length = 0
  }
}
