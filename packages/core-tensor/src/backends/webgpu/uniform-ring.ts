import { PARAM_WORDS, type ParamList } from "./wgsl-helpers.js"

/** Bytes per dispatch's uniform block: PARAM_WORDS words, which is also WebGPU's 256-byte uniform offset alignment. */
export const SLOT_BYTES = PARAM_WORDS * 4

/**
 * Uniform storage for the dispatches of one pending command encoder. Each dispatch packs its parameters into
 * the next 256-byte slot of a host staging array; `upload` copies the used part into the GPU uniform buffer
 * with queue.writeBuffer right before the encoder is submitted. Reusing the same GPU buffer for the next batch
 * is safe because queue operations execute in order: the next batch's writeBuffer runs only after this batch's
 * command buffer, so no pending dispatch ever sees its slot overwritten.
 */
export class UniformRing {
  readonly buffer: GPUBuffer
  private readonly words: Uint32Array
  private readonly floats: Float32Array
  private readonly ints: Int32Array
  private used = 0

  constructor(
    device: GPUDevice,
    readonly slots: number,
  ) {
    this.buffer = device.createBuffer({ size: slots * SLOT_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: "uniforms" })
    const host = new ArrayBuffer(slots * SLOT_BYTES)
    this.words = new Uint32Array(host)
    this.floats = new Float32Array(host)
    this.ints = new Int32Array(host)
  }

  get full(): boolean {
    return this.used === this.slots
  }

  /** Pack `params` into a fresh slot; returns its byte offset in `buffer`. */
  push(params: ParamList): number {
    if (this.full) throw new Error("webgpu: uniform ring full; the pending encoder should have been submitted")
    const start = this.used * PARAM_WORDS
    const end = start + PARAM_WORDS
    params.pack(this.words.subarray(start, end), this.floats.subarray(start, end), this.ints.subarray(start, end))
    return this.used++ * SLOT_BYTES
  }

  /** Copy the used slots to the GPU and start over. Call right before submitting the encoder that uses them. */
  upload(queue: GPUQueue): void {
    if (this.used === 0) return
    queue.writeBuffer(this.buffer, 0, this.words, 0, this.used * PARAM_WORDS)
    this.used = 0
  }
}
