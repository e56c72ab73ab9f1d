import { type Backend, type BackendName, type KernelCall, specOf } from "./backend.js"
import { startCpuBackend } from "./backends/cpu/cpu-backend.js"
import { type CreateDType, type DType, packHalves, storageArray } from "./dtype.js"
import { BufferLimitError, shapeError } from "./errors.js"
import { MemoryAccount, type MemoryStats, Storage } from "./memory.js"
import { contiguousStrides, type Shape, sizeOf, validateShape } from "./shape.js"
import { Tensor } from "./tensor.js"
import type { Rng } from "./rng.js"

export type HostData = ArrayLike<number> | number

/**
 * A backend plus the memory accounting of the tensors that live on it. All tensor factories hang off a Device;
 * ops between tensors of different devices are an error.
 */
export class Device {
  readonly account = new MemoryAccount()

  constructor(readonly backend: Backend) {}

  /**
   * `cpu` resolves once its worker threads are up (its kernels are synchronous); `webgpu` needs a
   * Vulkan/Metal/D3D adapter (see BackendUnavailableError).
   */
  static async create(name: BackendName): Promise<Device> {
    if (name === "cpu") return new Device(await startCpuBackend())
    const { createWebGpuBackend } = await import("./backends/webgpu/webgpu-backend.js")
    return new Device(await createWebGpuBackend())
  }

  get name(): BackendName {
    return this.backend.name
  }

  /** @internal compile (cached) and enqueue one kernel. */
  run(call: KernelCall): void {
    this.backend.dispatch(this.backend.compile(specOf(call)), call)
  }

  /** @internal a fresh contiguous tensor with undefined contents. */
  empty(shape: Shape, dtype: DType = "float32", op = "empty"): Tensor {
    validateShape(op, shape)
    const bytes = Math.max(4, sizeOf(shape) * 4)
    const limit = this.backend.info.limits.maxBufferSize
    if (bytes > limit)
      throw new BufferLimitError({ op, bytes, limit, message: `${op}: ${bytes} bytes for [${shape.join(", ")}] exceed the ${this.name} buffer limit of ${limit}` })
    const storage = new Storage(this.backend, this.backend.alloc(bytes), bytes, this.account)
    return new Tensor(this, storage, dtype, [...shape], contiguousStrides(shape), 0)
  }

  /** Whether float16 storage stays float16 here (WebGPU with shader-f16); elsewhere it is converted to float32. */
  get float16Storage(): boolean {
    return this.backend.name === "webgpu" && this.backend.info.features.includes("shader-f16")
  }

  /** @internal a fresh contiguous float16-stored tensor (float32 values kept as IEEE halves), undefined contents.
   *  Only where `float16Storage`. */
  emptyHalf(shape: Shape, op: string): Tensor {
    validateShape(op, shape)
    const bytes = Math.max(4, Math.ceil(sizeOf(shape) / 2) * 4)
    const limit = this.backend.info.limits.maxBufferSize
    if (bytes > limit)
      throw new BufferLimitError({ op, bytes, limit, message: `${op}: ${bytes} bytes for float16 [${shape.join(", ")}] exceed the ${this.name} buffer limit of ${limit}` })
    const storage = new Storage(this.backend, this.backend.alloc(bytes), bytes, this.account)
    return new Tensor(this, storage, "float32", [...shape], contiguousStrides(shape), 0, true)
  }

  /** A tensor from host values (row-major). `shape` defaults to [data.length], or [] for a number.
   *  dtype "float16" rounds the values to IEEE halves (nearest even) and keeps them as halves where the device
   *  computes on them (`float16Storage`); elsewhere they are converted to float32 on write, unrounded. */
  tensor(data: HostData, shape?: Shape, dtype: CreateDType = "float32"): Tensor {
    const values: ArrayLike<number> = typeof data === "number" ? [data] : data
    const s = shape ?? (typeof data === "number" ? [] : [values.length])
    if (sizeOf(s) !== values.length)
      throw shapeError("tensor", [s], `${values.length} values do not fill shape (size ${sizeOf(s)})`)
    if (dtype === "float16") {
      if (!this.float16Storage) return this.tensor(values, s, "float32")
      const t = this.emptyHalf(s, "tensor")
      if (values.length > 0) this.backend.write(t.storage.buffer, packHalves(values))
      return t
    }
    const t = this.empty(s, dtype, "tensor")
    if (values.length > 0) {
      const host = storageArray(dtype, new ArrayBuffer(values.length * 4))
      if (dtype === "bool") for (let i = 0; i < values.length; i++) host[i] = values[i] ? 1 : 0
      else host.set(values)
      this.backend.write(t.storage.buffer, host)
    }
    return t
  }

  scalar(value: number, dtype: DType = "float32"): Tensor {
    return this.tensor([value], [], dtype)
  }

  full(shape: Shape, value: number, dtype: DType = "float32"): Tensor {
    const t = this.empty(shape, dtype, "full")
    if (t.size > 0) this.run({ kind: "fill", value, out: t.view("full") })
    return t
  }

  zeros(shape: Shape, dtype: DType = "float32"): Tensor {
    return this.full(shape, 0, dtype)
  }

  ones(shape: Shape, dtype: DType = "float32"): Tensor {
    return this.full(shape, 1, dtype)
  }

  /** [0, 1, …, n−1]. */
  arange(n: number, dtype: DType = "int32"): Tensor {
    return this.tensor(Array.from({ length: n }, (_, i) => i), [n], dtype)
  }

  /** Uniform [low, high) draws from a counter-based generator: identical bits on every backend. */
  rand(shape: Shape, rng: Rng, low = 0, high = 1): Tensor {
    const t = this.draw(shape, rng, "uniform")
    if (low === 0 && high === 1) return t
    return affineInPlaceFree(t, high - low, low)
  }

  /** Normal(mean, std) draws from a counter-based generator. */
  randn(shape: Shape, rng: Rng, mean = 0, std = 1): Tensor {
    const t = this.draw(shape, rng, "normal")
    if (mean === 0 && std === 1) return t
    return affineInPlaceFree(t, std, mean)
  }

  private draw(shape: Shape, rng: Rng, dist: "uniform" | "normal"): Tensor {
    const t = this.empty(shape, "float32", dist === "uniform" ? "rand" : "randn")
    if (t.size > 0) this.run({ kind: "random", dist, seed: rng.seed, stream: rng.takeStream(), offset: 0, out: t.view("random") })
    return t
  }

  memory(): MemoryStats {
    const a = this.account
    return { liveTensors: a.liveTensors.size, liveStorages: a.liveStorages, liveBytes: a.liveBytes, peakBytes: a.peakBytes }
  }

  flush(): Promise<void> {
    return this.backend.flush()
  }

  destroy(): void {
    for (const t of [...this.account.liveTensors]) t.dispose()
    this.backend.destroy()
  }
}

/** x·scale + shift as a new tensor, disposing x (used by the random factories). */
function affineInPlaceFree(x: Tensor, scale: number, shift: number): Tensor {
  const scaled = x.mul(scale)
  const y = scaled.add(shift)
  scaled.dispose()
  x.dispose()
  return y
}
