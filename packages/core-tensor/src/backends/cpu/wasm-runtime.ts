import { setFlagsFromString } from "node:v8"
import { type Heap, heap, MAX_PAGES } from "./heap.js"
import { defaultThreadCount, ThreadPool } from "./pool.js"
import { wasm, type WasmGlobal, type WasmModule } from "./wasm-api.js"
import { ModuleBuilder, V128 } from "./wasm-emit.js"
import { emitAttentionRows } from "./wasm-attention.js"
import { emitElementwise } from "./wasm-elementwise.js"
import { emitGemm, type GemmShape, SCRATCH_A_TAG, SCRATCH_BYTES } from "./wasm-gemm.js"

/**
 * The process-wide WASM runtime of the CPU backend: the generated module (compiled once), the main thread's
 * instance over the shared heap, and the worker pool. Every CPU backend of the process shares it; the pool's
 * workers start with the first live backend (Device.create waits until they are up, see workersReady) and stop
 * when the last backend is destroyed.
 */

/** Does this engine accept relaxed-simd's f32x4.relaxed_madd? (Node ≥ 22 does; else mul + add.) */
export function relaxedSimdSupported(): boolean {
  const probe = new ModuleBuilder({ initialPages: 1, maximumPages: 1, shared: false })
  probe.func("f", [V128, V128, V128], [V128]).get(0).get(1).get(2).f32x4RelaxedMadd()
  try {
    return wasm.validate(probe.build())
  } catch {
    return false
  }
}

/** A GEMM variant: register tile, depth slice (KC, so a KC × NR panel of B plus a KC × MR panel of A fit L1). */
export interface GemmVariant extends GemmShape {
  readonly suffix: string
  readonly kc: number
}

const FMA = relaxedSimdSupported()

/** 6 × 8: 12 v128 accumulators + 2 for B + 1 broadcast of A = the 15 XMM registers V8 allocates. */
export const GEMM_8: GemmVariant = { mr: 6, nr: 8, unroll: 2, fma: FMA, suffix: "_8", kc: 384 }
/** 6 × 16: 24 v128 accumulators, i.e. 12 YMM once V8's revectorizer pairs them (AVX2); twice the flops per cycle. */
export const GEMM_16: GemmVariant = { mr: 6, nr: 16, unroll: 2, fma: FMA, suffix: "_16", kc: 256 }

/**
 * V8's wasm revectorizer (128 → 256-bit SIMD on AVX2, `--experimental-wasm-revectorize`) exists from V8 13 (Node
 * 24) and pays off twice over on the GEMM. It is switched on only while our module compiles (see
 * compileOptimized), and whether it took effect is measured, not assumed (calibrate). BDVAX_CPU_REVEC=0 turns it off.
 */
const REVECTORIZE = process.arch === "x64" && Number(process.versions.v8.split(".")[0]) >= 13 && process.env.BDVAX_CPU_REVEC !== "0"

export type WasmFn = (...args: number[]) => number
export interface WasmExports {
  readonly [name: string]: WasmFn
}

function buildModule(): { bytes: Uint8Array; names: string[] } {
  const mod = new ModuleBuilder({ initialPages: 1, maximumPages: MAX_PAGES, shared: true })
  const scratch = mod.global("scratch")
  emitGemm(mod, GEMM_8, scratch, GEMM_8.suffix)
  emitGemm(mod, GEMM_16, scratch, GEMM_16.suffix)
  emitElementwise(mod, scratch)
  emitAttentionRows(mod)
  const bytes = mod.build()
  return { bytes, names: mod.functionNames() }
}

/**
 * Compile the module with the optimizing compiler (TurboFan) up front. V8 normally starts wasm code in its
 * baseline compiler (Liftoff) and tiers a function up in the background once it has run enough; our kernels
 * run as a few long calls, on a machine whose cores are busy with exactly those calls, so the tier-up came
 * late (seconds into a benchmark) and Liftoff code runs the GEMM 4–6× slower. The two V8 flags are switched
 * only around this one (synchronous) compilation and restored to their defaults — unless the user set any of
 * them (node options), in which case we leave them alone. The revectorizer flag likewise (REVECTORIZE).
 */
function compileOptimized(bytes: Uint8Array): WasmModule {
  const options = `${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`
  const userFlags = /liftoff|wasm-lazy-compilation|revectorize/.test(options)
  if (!userFlags) setFlagsFromString(`--no-liftoff --no-wasm-lazy-compilation${REVECTORIZE ? " --experimental-wasm-revectorize" : ""}`)
  try {
    return new wasm.Module(bytes)
  } finally {
    if (!userFlags) setFlagsFromString(`--liftoff --wasm-lazy-compilation${REVECTORIZE ? " --no-experimental-wasm-revectorize" : ""}`)
  }
}

/**
 * Pick the GEMM variant: the 6 × 16 tile when the revectorizer made it faster per flop than the 6 × 8 one
 * (timed on L1-resident panels, best of a few alternating rounds: about a millisecond). BDVAX_CPU_GEMM=8|16
 * forces one.
 */
function calibrate(exports: WasmExports, heap: Heap): GemmVariant {
  const forced = process.env.BDVAX_CPU_GEMM
  if (forced === "8") return GEMM_8
  if (forced === "16") return GEMM_16
  if (!REVECTORIZE) return GEMM_8
  const kc = 256
  const bytes = (6 + 16 + 6 * 16) * kc * 4
  const base = heap.alloc(bytes)
  try {
    heap.f32.fill(0.5, base / 4, (base + bytes) / 4)
    const [a, b, c] = [base, base + 6 * kc * 4, base + 22 * kc * 4]
    const perFlop = (variant: GemmVariant) => {
      const micro = exports[`gemm_micro${variant.suffix}`]
      const calls = 100
      const t0 = performance.now()
      for (let i = 0; i < calls; i++) micro(a, b, c, variant.nr * 4, kc, 0)
      return (performance.now() - t0) / (calls * variant.mr * variant.nr)
    }
    let best8 = Infinity
    let best16 = Infinity
    for (let round = 0; round < 5; round++) {
      best8 = Math.min(best8, perFlop(GEMM_8))
      best16 = Math.min(best16, perFlop(GEMM_16))
    }
    return best16 < 0.8 * best8 ? GEMM_16 : GEMM_8
  } finally {
    heap.free(base, bytes)
  }
}



export class Runtime {
  readonly heap: Heap
  readonly module: WasmModule
  readonly exports: WasmExports
  /** Task function index by export name. */
  readonly fn: Readonly<Record<string, number>>
  readonly pool: ThreadPool
  /** The GEMM variant in use (calibrate). */
  readonly gemm: GemmVariant
  /** A 256-byte heap block for kernel parameters (written by the main thread before a job). */
  readonly params: number
  private readonly names: string[]
  private users = 0
  private readonly mainScratch: number
  private workerScratch: number[] = []

  constructor() {
    this.heap = heap()
    const { bytes, names } = buildModule()
    this.module = compileOptimized(bytes)
    const instance = new wasm.Instance(this.module, { env: { memory: this.heap.memory } })
    const exports = instance.exports as Record<string, unknown>
    this.mainScratch = this.allocScratch()
    ;(exports.scratch as WasmGlobal).value = this.mainScratch
    this.exports = exports as unknown as WasmExports
    this.names = names
    this.fn = Object.fromEntries(names.map((n, i) => [n, i]))
    this.pool = new ThreadPool({ module: this.module, memory: this.heap.memory, names, exports })
    this.params = this.heap.alloc(256)
    this.gemm = calibrate(this.exports, this.heap)
  }

  /**
   * A backend starts using the runtime: the workers start now rather than on the first parallel job. They take
   * 50–150 ms to come up (a thread, a Node environment, an instance of the module), and a job published
   * meanwhile runs on the calling thread alone — which made the first ~100 ms of every process run at half
   * speed (the first products of a benchmark measured 0.34–0.6× their steady rate).
   */
  acquire(): void {
    this.users++
    this.startWorkers()
  }

  /**
   * Resolves once every worker has instantiated the module (true), or after `timeoutMs` (false: the jobs run
   * on the threads that are up, so a slow start costs speed, never correctness).
   */
  async workersReady(timeoutMs = 5000): Promise<boolean> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const { workers, ready } = this.pool.stats()
      if (ready >= workers) return true
      if (performance.now() > deadline) return false
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
  }

  /** A backend is destroyed; the last one stops the workers. */
  release(): void {
    if (this.users === 0) return
    if (--this.users === 0) {
      this.pool.stop()
      for (const s of this.workerScratch) this.heap.free(s, SCRATCH_BYTES)
      this.workerScratch = []
    }
  }

  /** Run the pool's pending tasks, on all threads when `parallel` (on the calling thread alone while no worker is up). */
  run(parallel: boolean): void {
    this.pool.run(parallel)
  }

  /** A thread's scratch block; its private-A tag starts out empty (heap blocks are not zeroed). */
  private allocScratch(): number {
    const scratch = this.heap.alloc(SCRATCH_BYTES)
    this.heap.i32[(scratch + SCRATCH_A_TAG) / 4] = 0
    return scratch
  }

  /**
   * Forget every thread's private packing of A (gemm_fused aTag): a GEMM that hands out tags calls this before
   * its job, so its tags only need to be unique within the call. Only between jobs (no task is running then).
   */
  resetPrivateA(): void {
    const i32 = this.heap.i32
    i32[(this.mainScratch + SCRATCH_A_TAG) / 4] = 0
    for (const s of this.workerScratch) i32[(s + SCRATCH_A_TAG) / 4] = 0
  }

  /** Start the workers (acquire does); only while a backend is live. */
  private startWorkers(): void {
    if (this.pool.started || this.users === 0) return
    const workers = defaultThreadCount() - 1
    if (workers <= 0) return
    this.workerScratch = Array.from({ length: workers }, () => this.allocScratch())
    this.pool.start(this.workerScratch)
  }
}

let runtime: Runtime | null = null

/** The process-wide runtime, created on first use. */
export function wasmRuntime(): Runtime {
  if (runtime === null) runtime = new Runtime()
  return runtime
}
