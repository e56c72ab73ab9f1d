import { create, globals } from "webgpu"
import { type Backend, type BackendInfo, type DeviceBuffer, type KernelCall, type KernelKind, type KernelSpec, type Program, specOf } from "../../backend.js"
import { BackendUnavailableError, BufferLimitError } from "../../errors.js"
import { BufferPool, GpuDeviceBuffer } from "./buffer-pool.js"
import { type BoundBuffer, DispatchRecorder } from "./dispatch-recorder.js"
import { FUSION_DEFAULTS, type FusionCounts, type FusionOptions, fusionOptions, recordWindow, type WebGpuStats } from "./fusion.js"
import { fusibleOp, isFusible } from "./fusion-nodes.js"
import type { FusionLimits } from "./fusion-plan.js"
import type { KernelContext } from "./kernel.js"
import type { HalfMatmulCall } from "./matmul.js"
import { PendingWindow, type PreparedPass } from "./pending-window.js"
import { ProgramCache, scratchView, type WebGpuProgram } from "./program-cache.js"
import { type AdapterDescription, autotuneEnabled, resolveTuning, type WebGpuTuning } from "./tuning.js"
import { PARAM_WORDS } from "./wgsl-helpers.js"

export type { FusionOptions, WebGpuStats } from "./fusion.js"

/**
 * The WebGPU backend on Dawn's Node bindings (`webgpu` on npm). Without a GPU it runs on Mesa's lavapipe, a
 * Vulkan driver on the CPU (install it with scripts/setup-webgpu-lavapipe.sh).
 *
 * Work flow: `dispatch` puts the call into a window of waiting calls (pending-window.ts); at the next sync
 * point (`read`, `flush`, a `write` to a buffer a waiting call uses, or when the window grows long) the window
 * is planned — chains of element-wise calls become fused kernels whose dead intermediates never reach memory
 * (fusion-plan.ts, README "Element-wise fusion") — and recorded into one pending command encoder (see
 * DispatchRecorder), which is submitted when the host needs results or when it grows long.
 * Device errors (validation, out-of-memory, device loss) arrive asynchronously; they are kept and thrown from
 * the next `read` or `flush` (device loss from every call after it) instead of being lost in a log.
 */

export interface WebGpuBackendOptions {
  readonly powerPreference?: GPUPowerPreference
  /** Bytes of freed buffers kept for reuse before further frees destroy them (default 1 GiB). */
  readonly maxPooledBytes?: number
  /** Kernel parameters to use instead of the adapter table / autotune cache (tests, experiments). */
  readonly tuning?: WebGpuTuning
  /** Run the matmul micro-autotune if no cached result exists (default: env BDVAX_WEBGPU_AUTOTUNE=1). */
  readonly autotune?: boolean
  /** Element-wise fusion: on by default; `false` (or env BDVAX_WEBGPU_FUSION=0) records every call as its own
   *  dispatch, as before. An object tunes the window and kernel sizes. */
  readonly fusion?: boolean | Partial<FusionOptions>
}

/** Limits asked at the adapter's maximum: big buffers and bindings, and room for large workgroups. */
const MAXED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
] as const

/** Features enabled when offered; recorded in info.features. shader-f16 enables the f16-storage matmul. */
const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ["shader-f16", "subgroups"]

const INSTALL_HINT =
  "WebGPU needs a Vulkan driver on Linux: on a machine without a GPU install Mesa's lavapipe (Mesa >= 25, " +
  "e.g. `sudo scripts/setup-webgpu-lavapipe.sh`, which installs mesa-vulkan-drivers and libvulkan1), or use the cpu backend"

let gpuInstance: GPU | null = null

/** One Dawn instance per process: it is heavy, and the globals (GPUBufferUsage, …) only need installing once. */
function gpu(): GPU {
  if (gpuInstance !== null) return gpuInstance
  for (const [name, value] of Object.entries(globals)) if (!(name in globalThis)) Object.assign(globalThis, { [name]: value })
  gpuInstance = create([])
  return gpuInstance
}

export async function createWebGpuBackend(options: WebGpuBackendOptions = {}): Promise<Backend> {
  let adapter: GPUAdapter | null
  try {
    adapter = await gpu().requestAdapter(options.powerPreference === undefined ? {} : { powerPreference: options.powerPreference })
  } catch (cause) {
    throw new BackendUnavailableError({ backend: "webgpu", message: `webgpu: Dawn failed to start (${String(cause)}). ${INSTALL_HINT}` })
  }
  if (adapter === null) throw new BackendUnavailableError({ backend: "webgpu", message: `webgpu: no GPU adapter found. ${INSTALL_HINT}` })

  const requiredLimits: Record<string, number> = {}
  for (const name of MAXED_LIMITS) requiredLimits[name] = adapter.limits[name]
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f))
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: "core-tensor" })

  // e.g. "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6) 0.0.1 [mesa software]"; drivers fill these fields unevenly.
  const a = adapter.info
  const kind = [a.vendor, a.architecture].filter((s) => s !== "").join(" ")
  const name = a.description !== "" ? a.description : a.device !== "" ? a.device : "unknown adapter"
  const info: BackendInfo = {
    name: "webgpu",
    device: kind === "" ? name : `${name} [${kind}]`,
    features: [...device.features].sort(),
    limits: { maxBufferSize: device.limits.maxBufferSize, maxBindingSize: device.limits.maxStorageBufferBindingSize },
  }
  const adapterDescription: AdapterDescription = { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description }
  const context: KernelContext = {
    tuning: options.tuning ?? resolveTuning(adapterDescription, device.limits),
    f16: device.features.has("shader-f16"),
    workgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
  }
  const backend = new WebGpuBackend(device, info, options.maxPooledBytes ?? 2 ** 30, context, adapterDescription, fusionOptions(options.fusion))
  if (options.tuning === undefined && (options.autotune ?? autotuneEnabled()) && context.tuning.source !== "autotune") {
    const { autotune } = await import("./autotune.js")
    await autotune(backend, adapterDescription)
  }
  return backend
}

export class WebGpuBackend implements Backend {
  readonly name = "webgpu" as const
  private readonly storage: BufferPool
  private readonly staging: BufferPool
  private readonly programs: ProgramCache
  private readonly recorder: DispatchRecorder
  private readonly live = new Set<GpuDeviceBuffer>()
  /** Waiting calls; null when fusion is off (every call is recorded as it comes). */
  private readonly window: PendingWindow | null
  private readonly limitsOfFusion: FusionLimits
  /** Bytes bound of a buffer at most: maxStorageBufferBindingSize, a multiple of 16. */
  private readonly bindingCap: number
  private readonly counts: FusionCounts = { calls: 0, fusedKernels: 0, fusedCalls: 0, elidedOutputs: 0, droppedCalls: 0 }
  private destroyed = false
  private lost: string | null = null
  private error: string | null = null
  private moreErrors = 0

  constructor(
    private readonly device: GPUDevice,
    readonly info: BackendInfo,
    maxPooledBytes: number,
    context: KernelContext,
    /** Dawn's adapter.info fields (the tuning table and autotune cache key on them). */
    readonly adapter: AdapterDescription,
    fusion: FusionOptions | null = FUSION_DEFAULTS,
  ) {
    this.window = fusion === null ? null : new PendingWindow(fusion)
    this.bindingCap = Math.floor(device.limits.maxStorageBufferBindingSize / 16) * 16
    this.limitsOfFusion = {
      maxBindings: device.limits.maxStorageBuffersPerShaderStage,
      maxParamWords: PARAM_WORDS,
      maxNodes: fusion?.maxNodes ?? FUSION_DEFAULTS.maxNodes,
    }
    const maxBuffer = device.limits.maxBufferSize
    this.storage = new BufferPool(device, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, "tensor", maxBuffer, maxPooledBytes, (b) =>
      this.recorder.destroyAfterSubmit(b),
    )
    this.staging = new BufferPool(device, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, "read staging", maxBuffer, 2 ** 28)
    this.programs = new ProgramCache(device, context)
    this.recorder = new DispatchRecorder(device)
    device.addEventListener("uncapturederror", (event) => {
      const message = (event as GPUUncapturedErrorEvent).error.message
      if (this.error === null) this.error = message
      else this.moreErrors++
    })
    void device.lost.then((lost) => {
      if (!this.destroyed) this.lost = `${lost.reason}: ${lost.message}`
    })
  }

  alloc(byteLength: number): DeviceBuffer {
    this.assertUsable("alloc")
    const limit = this.device.limits.maxBufferSize
    if (byteLength > limit)
      throw new BufferLimitError({ op: "alloc", bytes: byteLength, limit, message: `webgpu alloc: ${byteLength} bytes exceed this device's maxBufferSize of ${limit}` })
    const buffer = new GpuDeviceBuffer(byteLength, this.storage.acquire(byteLength))
    this.live.add(buffer)
    return buffer
  }

  free(buffer: DeviceBuffer): void {
    if (this.destroyed) return
    const b = this.own(buffer, "free")
    ;(buffer as GpuDeviceBuffer).gpu = null
    this.live.delete(buffer as GpuDeviceBuffer)
    // A waiting call uses it: it returns to the pool once the window is recorded (and the planner learns that
    // nothing outside the window reads it).
    if (this.window?.references(buffer)) {
      this.window.free(buffer, b)
      if (this.window.full) this.emit()
      return
    }
    // Dispatches already recorded may still read it; that is fine: whoever gets it next writes it through the
    // same queue, after them.
    this.storage.release(b)
  }

  write(buffer: DeviceBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.assertUsable("write")
    const target = this.own(buffer, "write")
    const bytes = data.byteLength
    if (byteOffset % 4 !== 0 || bytes % 4 !== 0)
      throw new RangeError(`webgpu write: offset ${byteOffset} and length ${bytes} must be multiples of 4 bytes (whole elements)`)
    if (byteOffset < 0 || byteOffset + bytes > buffer.byteLength)
      throw new RangeError(`webgpu write: ${bytes} bytes at ${byteOffset} overrun a ${buffer.byteLength}-byte buffer`)
    if (bytes === 0) return
    // Submit first: a dispatch recorded earlier that reads this buffer must run before the new bytes land. Calls
    // still waiting in the window need recording first only if they use it (a fresh tensor's buffer never is).
    if (this.window?.references(buffer)) this.emit()
    this.recorder.submit()
    this.device.queue.writeBuffer(target, byteOffset, new Uint8Array(data.buffer, data.byteOffset, bytes))
  }

  async read(buffer: DeviceBuffer, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.assertUsable("read")
    const source = this.own(buffer, "read")
    if (byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > buffer.byteLength)
      throw new RangeError(`webgpu read: ${byteLength} bytes at ${byteOffset} overrun a ${buffer.byteLength}-byte buffer`)
    if (byteLength === 0) {
      await this.flush()
      return new Uint8Array(0)
    }
    // Copies move whole words: widen the range to 4-byte boundaries and cut the answer out afterwards.
    const start = Math.floor(byteOffset / 4) * 4
    const end = Math.ceil((byteOffset + byteLength) / 4) * 4
    this.emit()
    const staging = this.staging.acquire(end - start)
    this.recorder.submit((encoder) => encoder.copyBufferToBuffer(source, start, staging, 0, end - start))
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, end - start)
    } catch (cause) {
      staging.destroy()
      this.throwIfFailed()
      throw cause
    }
    const bytes = new Uint8Array(staging.getMappedRange(0, end - start)).slice(byteOffset - start, byteOffset - start + byteLength)
    staging.unmap()
    this.staging.release(staging)
    this.throwIfFailed()
    return bytes
  }

  compile(spec: KernelSpec): Program {
    this.assertUsable("compile")
    return this.programs.get(spec)
  }

  /** The kernel parameters in use (adapter table, autotune cache or options). */
  get tuning(): WebGpuTuning {
    return this.programs.context.tuning
  }

  /** Switch kernel parameters (autotune): compiled variants stay valid, new calls plan with `tuning`. */
  setTuning(tuning: WebGpuTuning): void {
    this.programs.context = { ...this.programs.context, tuning }
  }

  /** What kernel generators know about this device (tuning, f16, limits). */
  get kernelContext(): KernelContext {
    return this.programs.context
  }

  /**
   * A matmul whose A and/or B buffers hold IEEE half floats (f16 storage, f32 accumulation; needs shader-f16,
   * see `kernelContext.f16`), for buffers written by hand; tensors use float16 storage (`View.half`) instead.
   * Views keep dtype "float32" but count shapes, strides and offsets in halves; out is float32.
   */
  matmulHalf(call: HalfMatmulCall): void {
    if (!this.programs.context.f16) throw new Error("webgpu matmulHalf: this adapter has no shader-f16")
    const spec = specOf(call)
    const halves = `${call.half.a ? "a" : ""}${call.half.b ? "b" : ""}`
    this.dispatch(this.compile({ ...spec, key: `${spec.key}|half=${halves}` }), call)
  }

  dispatch(program: Program, call: KernelCall): void {
    this.assertUsable(call.kind)
    const p = program as WebGpuProgram<KernelKind>
    if (p.kind !== call.kind) throw new Error(`webgpu dispatch: program ${p.key} cannot run a ${call.kind} call`)
    this.counts.calls++
    const window = this.window
    if (window !== null && isFusible(call)) {
      const operands = fusibleOp(call).operands(call)
      const buffers = new Map<DeviceBuffer, GPUBuffer>()
      for (const [name, view] of [...operands.inputs.map((v) => ["input", v] as const), ...operands.outputs.map((v) => ["output", v] as const), ...operands.state])
        buffers.set(view.buffer, this.bindable(view.buffer, call.kind, name))
      window.addNode(call, operands, buffers)
    } else {
      // Scratch buffers live until the call is recorded; freeing them right after is safe for the same reason
      // `free` is: whoever gets them next writes them through the same queue, after these dispatches.
      const scratch: GPUBuffer[] = []
      const handles = new Map<DeviceBuffer, GPUBuffer>()
      let passes: PreparedPass[]
      try {
        passes = this.programs
          .prepare(p, call, (elements) => {
            const gpuBuffer = this.storage.acquire(Math.max(16, elements * 4))
            scratch.push(gpuBuffer)
            return scratchView(new GpuDeviceBuffer(Math.max(16, elements * 4), gpuBuffer), elements)
          })
          .map((pass) => ({
            ...pass,
            buffers: pass.bindings.map((b) => {
              const gpuBuffer = this.bindable(b.view.buffer, call.kind, b.name)
              handles.set(b.view.buffer, gpuBuffer)
              return this.bound(gpuBuffer)
            }),
          }))
      } catch (e) {
        for (const b of scratch) this.storage.release(b)
        throw e
      }
      if (window === null || window.isEmpty) {
        for (const pass of passes) this.recorder.record(pass.pipeline, pass.layout, pass.buffers, pass.params, pass.grid, pass.label)
        for (const b of scratch) this.storage.release(b)
      } else window.addBarrier(passes, handles, scratch)
    }
    if (window?.full) this.emit()
  }

  /** The GPUBuffer behind a live handle that a kernel may bind. */
  private bindable(handle: DeviceBuffer, kind: string, operand: string): GPUBuffer {
    const gpuBuffer = this.own(handle, kind)
    const limit = this.device.limits.maxStorageBufferBindingSize
    if (handle.byteLength > limit)
      throw new BufferLimitError({
        op: kind,
        bytes: handle.byteLength,
        limit,
        message: `${kind}: operand ${operand} lives in a ${handle.byteLength}-byte buffer, over this device's ${limit}-byte storage binding limit (maxStorageBufferBindingSize); kernels do not chunk yet`,
      })
    return gpuBuffer
  }

  /** Bind the whole buffer (offsets and strides travel in the uniforms), capped at the binding limit: a size
   *  class may round a buffer that fits the limit up past it. 16-byte multiples suit vec4 bindings. */
  private bound(gpuBuffer: GPUBuffer): BoundBuffer {
    return { buffer: gpuBuffer, size: Math.min(gpuBuffer.size, this.bindingCap) }
  }

  /** Plan the waiting calls (fusing what can be fused) and record them into the command encoder. */
  private emit(): void {
    if (this.window === null || this.window.isEmpty) return
    const target = { programs: this.programs, recorder: this.recorder, limits: this.limitsOfFusion, bound: (b: GPUBuffer) => this.bound(b), release: (b: GPUBuffer) => this.storage.release(b) }
    recordWindow(this.window, target, this.counts)
  }

  /** What bounds a fused kernel on this device, or null when fusion is off. */
  get fusionLimits(): FusionLimits | null {
    return this.window === null ? null : this.limitsOfFusion
  }

  /** Dispatch and fusion counters since creation. */
  get stats(): WebGpuStats {
    return { ...this.counts, dispatches: this.recorder.dispatches, fusedVariants: this.programs.fusedVariants }
  }

  async flush(): Promise<void> {
    this.assertUsable("flush")
    this.emit()
    this.recorder.submit()
    await this.device.queue.onSubmittedWorkDone()
    this.throwIfFailed()
  }

  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.window?.clear((b) => b.destroy())
    for (const b of this.live) {
      b.gpu?.destroy()
      b.gpu = null
    }
    this.live.clear()
    this.storage.destroy()
    this.staging.destroy()
    this.device.destroy()
  }

  private own(buffer: DeviceBuffer, op: string): GPUBuffer {
    if (!(buffer instanceof GpuDeviceBuffer)) throw new Error(`webgpu ${op}: the buffer was not allocated by a webgpu backend`)
    if (buffer.gpu === null) throw new Error(`webgpu ${op}: use of a freed buffer`)
    return buffer.gpu
  }

  private assertUsable(op: string): void {
    if (this.destroyed) throw new Error(`webgpu ${op}: the backend has been destroyed`)
    if (this.lost !== null) throw new Error(`webgpu ${op}: the device was lost (${this.lost})`)
  }

  /** Throw the device error that arrived since the last check, if any (device loss stays sticky). */
  private throwIfFailed(): void {
    if (this.lost !== null) throw new Error(`webgpu: the device was lost (${this.lost})`)
    if (this.error === null) return
    const more = this.moreErrors > 0 ? ` (and ${this.moreErrors} more error${this.moreErrors > 1 ? "s" : ""})` : ""
    const message = `webgpu: device error: ${this.error}${more}`
    this.error = null
    this.moreErrors = 0
    throw new Error(message)
  }
}
