import { cpus } from "node:os"
import type { Backend, BackendInfo, DeviceBuffer, KernelCall, KernelKind, KernelSpec, Program } from "../../backend.js"
import { BufferLimitError } from "../../errors.js"
import { CpuBuffer, memory, type Memory } from "./buffer.js"
import { MAX_PAGES } from "./heap.js"
import { kernels } from "./kernels.js"
import { defaultThreadCount } from "./pool.js"
import { GEMM_16, type Runtime, wasmRuntime } from "./wasm-runtime.js"

/**
 * Largest buffer, in bytes. V8 allows larger ArrayBuffers on 64-bit hosts, but 2^31 − 1 keeps every element
 * index below 2^29 (small integers in V8, exact everywhere) and matches what the WebGPU path can bind, so a
 * program that fits one backend fits the other.
 */
const MAX_BUFFER_BYTES = 2 ** 31 - 1
/** All CPU buffers of a process together: the shared wasm32 heap's 4 GiB. */
const HEAP_LIMIT_BYTES = MAX_PAGES * 65536

class CpuProgram implements Program {
  constructor(
    readonly key: string,
    readonly kind: KernelKind,
    readonly run: (call: KernelCall, mem: Memory) => void,
  ) {}
}

/**
 * The CPU backend. Buffers are ranges of the process's shared WebAssembly heap (heap.ts; all CPU backends of a
 * process share it, at most 4 GiB in all), programs are the kernel functions in kernels.ts — JS, and WASM SIMD
 * for the hot ones (matmul, contiguous float element-wise ops, optimizers), split over worker threads when big
 * enough (wasm-runtime.ts, pool.ts). `dispatch` runs synchronously (the calling thread waits for the workers), so
 * writes, dispatches and reads are trivially ordered and `flush` has nothing to wait for.
 *
 * Environment knobs: BDVAX_CPU_THREADS=n (threads including the caller; 1 = no workers), BDVAX_CPU_REVEC=0 (no
 * 256-bit revectorization of the WASM code), BDVAX_CPU_GEMM=8|16 (force the 6 × 8 or 6 × 16 GEMM tile),
 * BDVAX_CPU_SPIN_US=µs (how long an idle worker polls for the next job before sleeping; default 500, pool.ts).
 */
class CpuBackend implements Backend {
  readonly name = "cpu" as const
  readonly info: BackendInfo
  private readonly programs = new Map<string, CpuProgram>()
  private readonly live = new Set<CpuBuffer>()
  private readonly runtime: Runtime
  private destroyed = false

  constructor() {
    this.runtime = wasmRuntime()
    this.runtime.acquire()
    const threads = defaultThreadCount()
    const { fma } = this.runtime.gemm
    const wide = this.runtime.gemm === GEMM_16
    this.info = {
      name: "cpu",
      device: `cpu (${cpus()[0]?.model ?? "unknown"}, ${threads} thread${threads === 1 ? "" : "s"}, wasm simd${fma ? " + relaxed fma" : ""}${wide ? ", 256-bit revectorized gemm" : ""})`,
      features: ["wasm-simd", ...(fma ? ["relaxed-simd"] : []), ...(wide ? ["wasm-revectorize"] : []), ...(threads > 1 ? ["threads"] : [])],
      limits: { maxBufferSize: MAX_BUFFER_BYTES, maxBindingSize: MAX_BUFFER_BYTES },
    }
  }

  alloc(byteLength: number): DeviceBuffer {
    this.checkAlive("alloc")
    if (!Number.isInteger(byteLength) || byteLength < 0) throw new RangeError(`cpu alloc: invalid byte length ${byteLength}`)
    if (byteLength > MAX_BUFFER_BYTES) {
      throw new BufferLimitError({
        op: "alloc",
        bytes: byteLength,
        limit: MAX_BUFFER_BYTES,
        message: `alloc: ${byteLength} bytes exceeds the cpu backend's buffer limit of ${MAX_BUFFER_BYTES} bytes`,
      })
    }
    let buffer: CpuBuffer
    try {
      buffer = new CpuBuffer(this.runtime.heap, byteLength, this.live)
    } catch (error) {
      if (!(error instanceof RangeError)) throw error
      // The shared heap is full (4 GiB for every CPU buffer of the process, see heap.ts).
      throw new BufferLimitError({ op: "alloc", bytes: byteLength, limit: HEAP_LIMIT_BYTES, message: `alloc: ${error.message}` })
    }
    this.live.add(buffer)
    return buffer
  }

  free(buffer: DeviceBuffer): void {
    if (this.destroyed) return
    asCpuBuffer(buffer, "free").release()
  }

  write(buffer: DeviceBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.checkAlive("write")
    const target = asCpuBuffer(buffer, "write")
    target.check()
    checkRange("write", target, byteOffset, data.byteLength)
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    this.runtime.heap.u8.set(bytes, target.base + byteOffset)
  }

  read(buffer: DeviceBuffer, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    try {
      this.checkAlive("read")
      const source = asCpuBuffer(buffer, "read")
      source.check()
      checkRange("read", source, byteOffset, byteLength)
      // A copy (into a plain ArrayBuffer), so later kernels writing the buffer cannot change what the caller holds.
      const start = source.base + byteOffset
      const copy = new Uint8Array(byteLength)
      copy.set(this.runtime.heap.u8.subarray(start, start + byteLength))
      return Promise.resolve(copy)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  compile(spec: KernelSpec): Program {
    this.checkAlive("compile")
    let program = this.programs.get(spec.key)
    if (program === undefined) {
      // Indexing the table with a union kind gives a union of functions; dispatch re-checks the kind.
      const run = kernels[spec.kind] as (call: KernelCall, mem: Memory) => void
      if (run === undefined) throw new Error(`cpu compile: no kernel for kind "${spec.kind}"`)
      program = new CpuProgram(spec.key, spec.kind, run)
      this.programs.set(spec.key, program)
    }
    return program
  }

  dispatch(program: Program, call: KernelCall): void {
    this.checkAlive("dispatch")
    if (!(program instanceof CpuProgram)) throw new Error(`cpu dispatch: program "${program.key}" was not compiled by the cpu backend`)
    if (program.kind !== call.kind) throw new Error(`cpu dispatch: program "${program.key}" cannot run a ${call.kind} call`)
    program.run(call, memory)
  }

  flush(): Promise<void> {
    return Promise.resolve()
  }

  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.programs.clear()
    for (const buffer of [...this.live]) buffer.release()
    this.live.clear()
    this.runtime.release()
  }

  private checkAlive(op: string): void {
    if (this.destroyed) throw new Error(`cpu ${op}: the backend has been destroyed`)
  }
}

function asCpuBuffer(buffer: DeviceBuffer, op: string): CpuBuffer {
  if (!(buffer instanceof CpuBuffer)) throw new Error(`cpu ${op}: buffer belongs to another backend`)
  return buffer
}

/** Reads and writes must stay within the size asked for at alloc (not the word-rounded padding). */
function checkRange(op: string, buffer: CpuBuffer, byteOffset: number, byteLength: number): void {
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset + byteLength > buffer.byteLength) {
    throw new RangeError(`cpu ${op}: range [${byteOffset}, ${byteOffset + byteLength}) outside a ${buffer.byteLength}-byte buffer`)
  }
}

/** A CPU backend; its worker threads are still coming up (jobs run on the threads that are up meanwhile). */
export function createCpuBackend(): Backend {
  return new CpuBackend()
}

/** A CPU backend whose worker threads are up (or, after `timeoutMs`, as many as came up): what Device.create uses. */
export async function startCpuBackend(timeoutMs = 5000): Promise<Backend> {
  const backend = new CpuBackend()
  await wasmRuntime().workersReady(timeoutMs)
  return backend
}
