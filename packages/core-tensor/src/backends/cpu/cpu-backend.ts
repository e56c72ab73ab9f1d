import { cpus } from "node:os"
import type { Backend, BackendInfo, DeviceBuffer, KernelCall, KernelKind, KernelSpec, Program } from "../../backend.js"
import { BufferLimitError } from "../../errors.js"
import { CpuBuffer, memory, roundUpToWord, type Memory } from "./buffer.js"
import { kernels } from "./kernels.js"

/**
 * Largest buffer, in bytes. V8 allows larger ArrayBuffers on 64-bit hosts, but 2^31 − 1 keeps every element
 * index below 2^29 (small integers in V8, exact everywhere) and matches what the WebGPU path can bind, so a
 * program that fits one backend fits the other.
 */
const MAX_BUFFER_BYTES = 2 ** 31 - 1

/** Freed ArrayBuffers kept for reuse: at most this many per size and this many bytes in all. */
const POOL_PER_SIZE = 8
const POOL_MAX_BYTES = 256 * 1024 * 1024

class CpuProgram implements Program {
  constructor(
    readonly key: string,
    readonly kind: KernelKind,
    readonly run: (call: KernelCall, mem: Memory) => void,
  ) {}
}

/**
 * The CPU backend: buffers are ArrayBuffers, programs are the kernel functions in kernels.ts, and dispatch
 * runs synchronously — so writes, dispatches and reads are trivially ordered and `flush` has nothing to wait for.
 */
class CpuBackend implements Backend {
  readonly name = "cpu" as const
  readonly info: BackendInfo = {
    name: "cpu",
    device: `cpu (${cpus()[0]?.model ?? "unknown"})`,
    features: [],
    limits: { maxBufferSize: MAX_BUFFER_BYTES, maxBindingSize: MAX_BUFFER_BYTES },
  }
  private readonly programs = new Map<string, CpuProgram>()
  private readonly pool = new Map<number, ArrayBuffer[]>()
  private pooledBytes = 0
  private destroyed = false

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
    const size = roundUpToWord(byteLength)
    const reused = this.pool.get(size)?.pop()
    if (reused !== undefined) this.pooledBytes -= size
    return new CpuBuffer(byteLength, reused ?? new ArrayBuffer(size))
  }

  free(buffer: DeviceBuffer): void {
    if (this.destroyed) return
    const storage = asCpuBuffer(buffer, "free").release()
    const size = storage.byteLength
    const sameSize = this.pool.get(size) ?? []
    if (sameSize.length >= POOL_PER_SIZE || this.pooledBytes + size > POOL_MAX_BYTES) return
    sameSize.push(storage)
    this.pool.set(size, sameSize)
    this.pooledBytes += size
  }

  write(buffer: DeviceBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.checkAlive("write")
    const target = asCpuBuffer(buffer, "write")
    checkRange("write", target, byteOffset, data.byteLength)
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    new Uint8Array(target.bytes()).set(bytes, byteOffset)
  }

  read(buffer: DeviceBuffer, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    try {
      this.checkAlive("read")
      const source = asCpuBuffer(buffer, "read")
      checkRange("read", source, byteOffset, byteLength)
      // A copy, so later kernels writing the buffer cannot change what the caller holds.
      return Promise.resolve(new Uint8Array(source.bytes().slice(byteOffset, byteOffset + byteLength)))
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
    this.destroyed = true
    this.programs.clear()
    this.pool.clear()
    this.pooledBytes = 0
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

export function createCpuBackend(): Backend {
  return new CpuBackend()
}
