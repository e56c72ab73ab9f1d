import type { View } from "./backend.js"
import type { Device } from "./device.js"
import { type CreateDType, type DType, fromHalfBits, storageArray } from "./dtype.js"
import { DisposedError, dtypeError } from "./errors.js"
import { registerInScope, setTensorPredicate, type Storage } from "./memory.js"
import { isContiguous, sizeOf } from "./shape.js"
import type { GradNode } from "./autodiff.js"
import * as api from "./ops/api.js"

let nextId = 0

export type Scalar = number
export type TensorLike = Tensor | Scalar

/**
 * An n-dimensional strided view of device memory. Tensors are immutable values (optimizers are the one
 * exception: they update parameter storage in place). Ops are available both as methods and as functions in
 * `ops`. Memory is released by `dispose()`, by the enclosing `tidy`, or by `using`.
 */
export class Tensor {
  readonly id = nextId++
  /** @internal set when an op producing this tensor was recorded on the active tape. */
  node: GradNode | null = null
  private disposed = false

  /** @internal use the factories on Device. */
  constructor(
    readonly device: Device,
    /** @internal */ readonly storage: Storage,
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset: number,
    /** @internal the storage holds IEEE halves (see `storageDType`). */
    readonly half = false,
  ) {
    device.account.liveTensors.add(this)
    registerInScope(this)
  }

  get rank(): number {
    return this.shape.length
  }
  get size(): number {
    return sizeOf(this.shape)
  }
  get isDisposed(): boolean {
    return this.disposed
  }
  get isContiguous(): boolean {
    return this.offset === 0 && isContiguous(this.shape, this.strides)
  }

  /** How the elements are stored: `dtype`, or "float16" for a float32 tensor kept as IEEE halves (created with
   *  dtype "float16" or `ops.cast(x, "float16")` on a device that computes on halves). */
  get storageDType(): CreateDType {
    return this.half ? "float16" : this.dtype
  }

  /** @internal the backend view; throws DisposedError after dispose, and DTypeError for float16 storage, which
   *  only the kernels that read halves accept (they ask for `storageView`). */
  view(op: string): View {
    this.assertAlive(op)
    if (this.half)
      throw dtypeError(op, ["float16"], `this tensor is stored as float16, which only matmul and cast read; convert it first with ops.cast(x, "float32")`)
    return { buffer: this.storage.buffer, dtype: this.dtype, shape: this.shape, strides: this.strides, offset: this.offset }
  }

  /** @internal the backend view of any storage, float16 included (for matmul and cast). */
  storageView(op: string): View {
    this.assertAlive(op)
    const view = { buffer: this.storage.buffer, dtype: this.dtype, shape: this.shape, strides: this.strides, offset: this.offset }
    return this.half ? { ...view, half: true } : view
  }

  assertAlive(op: string): void {
    if (this.disposed || !this.storage.alive)
      throw new DisposedError({ op, shape: this.shape, message: `${op}: tensor ${this.dtype}[${this.shape.join(", ")}] was used after dispose()` })
  }

  /** A new handle on the same memory, with no autodiff history (gradients do not flow through it). */
  detach(): Tensor {
    this.assertAlive("detach")
    return new Tensor(this.device, this.storage.retain(), this.dtype, this.shape, this.strides, this.offset, this.half)
  }

  /** @internal a new handle on the same memory with given geometry (views). */
  withGeometry(shape: readonly number[], strides: readonly number[], offset: number): Tensor {
    this.assertAlive("view")
    return new Tensor(this.device, this.storage.retain(), this.dtype, shape, strides, offset, this.half)
  }

  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    this.device.account.liveTensors.delete(this)
    this.storage.release()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }

  /** Copy the values to the host, row-major. bool reads as Uint8Array of 0/1; float16 storage as Float32Array. */
  async data(): Promise<Float32Array | Int32Array | Uint8Array> {
    this.assertAlive("data")
    if (this.half && this.isContiguous) {
      const bytes = await this.device.backend.read(this.storage.buffer, 0, this.size * 2)
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, this.size)
      return Float32Array.from(halves, fromHalfBits)
    }
    const src = this.isContiguous ? this : this.contiguousCopy()
    try {
      const bytes = await this.device.backend.read(src.storage.buffer, 0, src.size * 4)
      const words = storageArray(this.dtype, bytes.buffer, bytes.byteOffset, src.size)
      if (words instanceof Uint32Array) return Uint8Array.from(words)
      return words.slice()
    } finally {
      if (src !== this) src.dispose()
    }
  }

  /** A contiguous copy (float16 storage comes back as float32). */
  private contiguousCopy(): Tensor {
    const alias = this.detach()
    try {
      return this.half ? api.cast(alias, "float32") : api.contiguous(alias)
    } finally {
      alias.dispose()
    }
  }

  /** Values as a plain array of numbers (row-major). */
  async toArray(): Promise<number[]> {
    return Array.from(await this.data())
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    const d = await this.data()
    if (d.length !== 1) throw new RangeError(`item: tensor has ${d.length} elements, expected 1`)
    return d[0]
  }

  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(", ")}] on ${this.device.name})`
  }

  // ---- fluent ops (see ops/api.ts for documentation) ----
  add(o: TensorLike) { return api.add(this, o) }
  sub(o: TensorLike) { return api.sub(this, o) }
  mul(o: TensorLike) { return api.mul(this, o) }
  div(o: TensorLike) { return api.div(this, o) }
  maximum(o: TensorLike) { return api.maximum(this, o) }
  lt(o: TensorLike) { return api.lt(this, o) }
  eq(o: TensorLike) { return api.eq(this, o) }
  neg() { return api.neg(this) }
  exp() { return api.exp(this) }
  log() { return api.log(this) }
  sqrt() { return api.sqrt(this) }
  sin() { return api.sin(this) }
  cos() { return api.cos(this) }
  reciprocal() { return api.reciprocal(this) }
  square() { return api.mul(this, this) }
  sum(axis?: number | number[], keepdim = false) { return api.sum(this, axis, keepdim) }
  mean(axis?: number | number[], keepdim = false) { return api.mean(this, axis, keepdim) }
  max(axis?: number | number[], keepdim = false) { return api.max(this, axis, keepdim) }
  reshape(shape: readonly number[]) { return api.reshape(this, shape) }
  permute(perm: readonly number[]) { return api.permute(this, perm) }
  transpose(a = -2, b = -1) { return api.transpose(this, a, b) }
  expand(shape: readonly number[]) { return api.expand(this, shape) }
  slice(starts: readonly number[], ends: readonly number[]) { return api.slice(this, starts, ends) }
  pad(before: readonly number[], after: readonly number[], value = 0) { return api.pad(this, before, after, value) }
  contiguous() { return api.contiguous(this) }
  matmul(o: Tensor) { return api.matmul(this, o) }
  cast(dtype: CreateDType) { return api.cast(this, dtype) }
}

setTensorPredicate((v: unknown): v is Tensor => v instanceof Tensor)
