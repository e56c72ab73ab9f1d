import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import type { WasmMemory, WasmModule } from "./wasm-api.js"

/**
 * Worker threads for the CPU backend's WASM kernels.
 *
 * Every thread (the main thread and `availableParallelism() − 1` workers) has its own instance of the same
 * compiled module over the same shared memory. Work is a *job*: a list of tasks, each one call of a module
 * export with up to 11 i32 arguments, written into a shared control block. The main thread publishes a job,
 * wakes the workers, claims tasks itself like any worker, then waits until every task is done — so `dispatch`
 * stays synchronous, and a worker that is slow to wake (or still starting) only means the main thread does
 * more of the tasks itself: no task waits for a particular thread.
 *
 * Claiming (claimTask). The task list is cut into one contiguous range per thread (main thread = 0, worker i =
 * i). A thread takes its own range from the front, then steals from the back of the others'. So when every
 * thread is there, each one does the same part of a job every time — the same columns of C in a GEMM, which
 * then stay in that core's cache from one call to the next instead of bouncing between cores (a shared
 * next-task counter dealt them out in a different interleaving each call) — and when a thread is late, the
 * others take its range over from the far end. Each range is one word, (end << 16) | next, changed only by
 * compare-exchange; a job is over when every range is empty. A thread still looking for work of a finished
 * job can only find an empty range, or claim a task of the next job once that is published — a legitimate
 * claim: the next job's records, COUNT and DONE are written before its ranges.
 *
 * Control block (Int32Array over a SharedArrayBuffer):
 *   GEN    bumped (Atomics.notify) when a job is published; idle workers Atomics.wait on it
 *   COUNT  tasks in the current job
 *   DONE   tasks finished; the thread finishing the last one notifies the main thread
 *   EXIT   set by `destroy`
 *   FAILED tasks that threw (a trap); the main thread rethrows after the job
 *   READY  workers that have instantiated the module; WORKER_TASKS tasks run by workers (diagnostics)
 *   RANGES one claim word per thread, RANGE_STRIDE words (a cache line) apart
 *   then MAX_TASKS records of TASK_WORDS words: [function index, arg0, …, arg10].
 *
 * Worker code is an `eval` string (no file to resolve from sources, bundles or tests), receives the compiled
 * WasmModule, the memory and the control block through workerData, and is `unref`'d so it never
 * keeps the process alive.
 */

const GEN = 0
const COUNT = 2
const DONE = 3
const EXIT = 4
const FAILED = 5
const READY = 6
const WORKER_TASKS = 7
const RANGES = 16
const RANGE_STRIDE = 16
/** Threads a pool can have (defaultThreadCount caps at this). */
export const MAX_THREADS = 64
const RECORDS = RANGES + MAX_THREADS * RANGE_STRIDE
export const TASK_WORDS = 12
/** Tasks per job (a range word holds indices in 16 bits). */
export const MAX_TASKS = 8192

/**
 * Claim a task of the current job for thread `self` of `threads`: the front of its own range, else the back of
 * another's (nearest first). Returns the task index, or −1 when every range is empty. Range r's word is at
 * ctl[first + r·stride]: (end << 16) | next. Self-contained (no free variables but Atomics): the workers run
 * its source text (WORKER_SOURCE).
 */
export function claimTask(ctl: Int32Array, self: number, threads: number, first: number, stride: number): number {
  let at = first + self * stride
  for (;;) {
    const w = Atomics.load(ctl, at)
    const next = w & 0xffff
    if (next >= w >>> 16) break
    if (Atomics.compareExchange(ctl, at, w, w + 1) === w) return next
  }
  for (let d = 1; d < threads; d++) {
    at = first + ((self + d) % threads) * stride
    for (;;) {
      const w = Atomics.load(ctl, at)
      const end = w >>> 16
      if ((w & 0xffff) >= end) break
      if (Atomics.compareExchange(ctl, at, w, w - 0x10000) === w) return end - 1
    }
  }
  return -1
}

/** Cut `count` tasks into one range per thread (as equal as can be) and publish the range words. */
export function publishRanges(ctl: Int32Array, count: number, threads: number, first: number, stride: number): void {
  for (let r = 0; r < threads; r++) {
    const start = Math.floor((r * count) / threads)
    const end = Math.floor(((r + 1) * count) / threads)
    Atomics.store(ctl, first + r * stride, start | (end << 16))
  }
}

/**
 * How long an idle worker polls for the next job before sleeping in Atomics.wait, and the main thread for the
 * last tasks before it sleeps: measured in time, not in loop rounds (V8 compiles the polling loop to a few
 * instructions, so the old 10 000 rounds lasted only ~10–20 µs). Jobs often follow each other within tens of
 * microseconds, and waking a sleeping thread costs ~80 µs on a quiet machine and up to a scheduler time slice
 * (milliseconds) on a busy one — as long as a small product itself. So a worker keeps polling for ~0.5 ms after
 * a job (BDVAX_CPU_SPIN_US overrides it) — except after a job it ran alone: then the main thread was not running
 * beside it (the kernel had put both threads on one core, or another process had the main thread's core),
 * and polling would only take the core from the main thread, so it sleeps at once. The main thread polls
 * ~0.1 ms for tasks still running elsewhere (a task is ~10–30 µs when the job is small, and when it is not,
 * sleeping costs little beside it) and then sleeps, so that a worker sharing its core can finish them.
 */
export const WORKER_SPIN_US = 500
const MAIN_SPIN_MS = 0.1

/** Worker polling time: BDVAX_CPU_SPIN_US when set (0 = sleep at once), else WORKER_SPIN_US. */
export function workerSpinMicroseconds(): number {
  const raw = process.env.BDVAX_CPU_SPIN_US
  const requested = raw === undefined || raw === "" ? Number.NaN : Number(raw)
  return Number.isFinite(requested) && requested >= 0 ? Math.min(requested, 1e6) : WORKER_SPIN_US
}

const WORKER_SOURCE = `
const { workerData } = require("node:worker_threads")
const { module, memory, control, names, scratch, spinMs, self, threads } = workerData
const instance = new WebAssembly.Instance(module, { env: { memory } })
const ex = instance.exports
ex.scratch.value = scratch
const fns = names.map((n) => ex[n])
const ctl = new Int32Array(control)
const GEN = ${GEN}, COUNT = ${COUNT}, DONE = ${DONE}, EXIT = ${EXIT}, FAILED = ${FAILED}, RECORDS = ${RECORDS}, W = ${TASK_WORDS}
const claimTask = ${claimTask.toString()}
let gen = Atomics.load(ctl, GEN)
Atomics.add(ctl, ${READY}, 1)
let alone = false
for (;;) {
  // Poll for the next job (performance.now() only every 256 rounds), then sleep; a job this worker ran alone
  // means the main thread was not running meanwhile: sleep at once, so as not to keep it off its core.
  let deadline = alone ? 0 : performance.now() + spinMs
  let spins = 0
  while (Atomics.load(ctl, GEN) === gen) {
    if ((++spins & 255) === 0 && performance.now() > deadline) {
      Atomics.wait(ctl, GEN, gen)
      deadline = performance.now() + spinMs
    }
  }
  gen = Atomics.load(ctl, GEN)
  if (Atomics.load(ctl, EXIT) !== 0) break
  let mine = 0
  for (;;) {
    const index = claimTask(ctl, self, threads, ${RANGES}, ${RANGE_STRIDE})
    if (index < 0) break
    const r = RECORDS + index * W
    try {
      fns[ctl[r]](ctl[r + 1], ctl[r + 2], ctl[r + 3], ctl[r + 4], ctl[r + 5], ctl[r + 6], ctl[r + 7], ctl[r + 8], ctl[r + 9], ctl[r + 10], ctl[r + 11])
    } catch (e) {
      Atomics.add(ctl, FAILED, 1)
    }
    mine++
    Atomics.add(ctl, ${WORKER_TASKS}, 1)
    if (Atomics.add(ctl, DONE, 1) + 1 === Atomics.load(ctl, COUNT)) Atomics.notify(ctl, DONE)
  }
  alone = mine > 1 && mine === Atomics.load(ctl, COUNT)
}
`

export interface PoolOptions {
  readonly module: WasmModule
  readonly memory: WasmMemory
  /** Export names, in function-index order, that tasks may call. */
  readonly names: readonly string[]
  /** The main thread's instance exports (for tasks it runs itself). */
  readonly exports: Record<string, unknown>
}

const controlBlock = () => new Int32Array(new SharedArrayBuffer((RECORDS + MAX_TASKS * TASK_WORDS) * 4))

export class ThreadPool {
  private ctl = controlBlock()
  private readonly fns: ((...args: number[]) => void)[]
  private readonly workers: Worker[] = []
  private gen = 0
  private count = 0

  constructor(private readonly options: PoolOptions) {
    this.fns = options.names.map((n) => {
      const fn = options.exports[n]
      if (typeof fn !== "function") throw new Error(`cpu pool: module has no export "${n}"`)
      return fn as (...args: number[]) => void
    })
  }

  /** Threads that run jobs: the workers plus the calling thread. */
  get threads(): number {
    return this.workers.length + 1
  }

  /** Workers that are up (have instantiated the module), and tasks they have run since `start`. */
  stats(): { workers: number; ready: number; workerTasks: number } {
    return { workers: this.workers.length, ready: Atomics.load(this.ctl, READY), workerTasks: Atomics.load(this.ctl, WORKER_TASKS) }
  }

  get started(): boolean {
    return this.workers.length > 0
  }

  /**
   * Spawn one worker per scratch address (its per-thread scratch in the heap). Workers instantiate the module
   * asynchronously; jobs published before a worker is ready simply run on the other threads.
   */
  start(scratch: readonly number[]): void {
    if (this.started) return
    const { module, memory, names } = this.options
    if (scratch.length + 1 > MAX_THREADS) throw new Error(`cpu pool: at most ${MAX_THREADS} threads, asked for ${scratch.length + 1}`)
    const threads = scratch.length + 1
    const spinMs = workerSpinMicroseconds() / 1000
    for (const [i, s] of scratch.entries()) {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module, memory, control: this.ctl.buffer, names, scratch: s, spinMs, self: i + 1, threads },
        stdout: false,
        stderr: false,
      })
      worker.unref()
      // A worker that fails to start (or dies) just never claims tasks; the other threads do them.
      worker.on("error", () => {})
      this.workers.push(worker)
    }
  }

  /** Terminate the workers (jobs keep running, on the calling thread only, until `start` again). */
  stop(): void {
    Atomics.store(this.ctl, EXIT, 1)
    Atomics.add(this.ctl, GEN, 1)
    Atomics.notify(this.ctl, GEN)
    for (const w of this.workers) void w.terminate()
    this.workers.length = 0
    // A fresh control block: a terminated worker that has not exited yet can never see a later job.
    this.ctl = controlBlock()
    this.gen = 0
  }

  /** Start a new task list. */
  begin(): void {
    this.count = 0
  }

  get pending(): number {
    return this.count
  }

  /** Append a task: call function `fn` (an index into `names`) with `args` (i32; at most 11). */
  task(fn: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0, a8 = 0, a9 = 0, a10 = 0): void {
    if (this.count >= MAX_TASKS) throw new Error(`cpu pool: more than ${MAX_TASKS} tasks in one job`)
    const r = RECORDS + this.count * TASK_WORDS
    const c = this.ctl
    c[r] = fn
    c[r + 1] = a0
    c[r + 2] = a1
    c[r + 3] = a2
    c[r + 4] = a3
    c[r + 5] = a4
    c[r + 6] = a5
    c[r + 7] = a6
    c[r + 8] = a7
    c[r + 9] = a8
    c[r + 10] = a9
    c[r + 11] = a10
    this.count++
  }

  /**
   * Run the tasks added since `begin` and return when all are done: on every thread when `parallel` (and
   * there is more than one task), else in order on the calling thread.
   */
  run(parallel: boolean): void {
    const count = this.count
    if (count === 0) return
    const c = this.ctl
    if (!parallel || count === 1 || this.workers.length === 0) {
      for (let i = 0; i < count; i++) this.call(RECORDS + i * TASK_WORDS)
      return
    }
    const threads = this.workers.length + 1
    this.gen = (this.gen + 1) | 0
    // COUNT, DONE and FAILED before the ranges: a thread that claims from a range sees the job it belongs to.
    Atomics.store(c, COUNT, count)
    Atomics.store(c, DONE, 0)
    Atomics.store(c, FAILED, 0)
    publishRanges(c, count, threads, RANGES, RANGE_STRIDE)
    Atomics.store(c, GEN, this.gen)
    Atomics.notify(c, GEN)
    let error: unknown = null
    for (;;) {
      const index = claimTask(c, 0, threads, RANGES, RANGE_STRIDE)
      if (index < 0) break
      try {
        this.call(RECORDS + index * TASK_WORDS)
      } catch (e) {
        error ??= e
      }
      Atomics.add(c, DONE, 1)
    }
    let spins = 0
    let deadline = 0
    for (;;) {
      const done = Atomics.load(c, DONE)
      if (done >= count) break
      if ((++spins & 255) !== 0) continue
      const now = performance.now()
      if (deadline === 0) deadline = now + MAIN_SPIN_MS
      else if (now > deadline) Atomics.wait(c, DONE, done, 1000)
    }
    if (error !== null) throw error
    if (Atomics.load(c, FAILED) !== 0) throw new Error("cpu backend: a kernel task failed on a worker thread")
  }

  private call(r: number): void {
    const c = this.ctl
    this.fns[c[r]](c[r + 1], c[r + 2], c[r + 3], c[r + 4], c[r + 5], c[r + 6], c[r + 7], c[r + 8], c[r + 9], c[r + 10], c[r + 11])
  }

}

/**
 * Threads to use: one per available core (the main thread is one of them), or BDVAX_CPU_THREADS when set
 * (1 = no workers).
 */
export function defaultThreadCount(): number {
  const requested = Number(process.env.BDVAX_CPU_THREADS)
  if (Number.isInteger(requested) && requested >= 1) return Math.min(requested, 64)
  return Math.max(1, availableParallelism())
}
