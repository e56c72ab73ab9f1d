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
 * Control block (Int32Array over a SharedArrayBuffer):
 *   GEN    bumped (Atomics.notify) when a job is published; idle workers Atomics.wait on it
 *   CLAIM  (job tag << 16) | next task index; threads claim by compare-exchange, so a thread still holding an
 *          old job's tag can never claim a task of a newer job; closed with index 0xffff when a job finishes
 *   COUNT  tasks in the current job
 *   DONE   tasks finished; the thread finishing the last one notifies the main thread
 *   EXIT   set by `destroy`
 *   FAILED tasks that threw (a trap); the main thread rethrows after the job
 *   READY  workers that have instantiated the module; WORKER_TASKS tasks run by workers (diagnostics)
 *   then MAX_TASKS records of TASK_WORDS words: [function index, arg0, …, arg10].
 *
 * Worker code is an `eval` string (no file to resolve from sources, bundles or tests), receives the compiled
 * WasmModule, the memory and the control block through workerData, and is `unref`'d so it never
 * keeps the process alive.
 */

const GEN = 0
const CLAIM = 1
const COUNT = 2
const DONE = 3
const EXIT = 4
const FAILED = 5
const READY = 6
const WORKER_TASKS = 7
const RECORDS = 16
export const TASK_WORDS = 12
export const MAX_TASKS = 8192
const CLOSED = 0xffff

/**
 * How long an idle worker polls for the next job before sleeping (a dispatch often follows another within
 * microseconds), and the main thread for the last task: ~150 µs each (an Atomics.load round is ~15 ns). Longer
 * spins win on an idle machine and lose on a busy one, where a spinning thread burns the time slice another
 * of our threads could have used.
 */
const WORKER_SPIN = 10000
const MAIN_SPIN = 10000

const WORKER_SOURCE = `
const { workerData } = require("node:worker_threads")
const { module, memory, control, names, scratch } = workerData
const instance = new WebAssembly.Instance(module, { env: { memory } })
const ex = instance.exports
ex.scratch.value = scratch
const fns = names.map((n) => ex[n])
const ctl = new Int32Array(control)
const GEN = ${GEN}, CLAIM = ${CLAIM}, COUNT = ${COUNT}, DONE = ${DONE}, EXIT = ${EXIT}, FAILED = ${FAILED}, RECORDS = ${RECORDS}, W = ${TASK_WORDS}
let gen = Atomics.load(ctl, GEN)
Atomics.add(ctl, ${READY}, 1)
for (;;) {
  let spins = 0
  while (Atomics.load(ctl, GEN) === gen) {
    if (++spins > ${WORKER_SPIN}) { Atomics.wait(ctl, GEN, gen); spins = 0 }
  }
  gen = Atomics.load(ctl, GEN)
  if (Atomics.load(ctl, EXIT) !== 0) break
  const tag = (gen & 0x7fff) << 16
  for (;;) {
    const w = Atomics.load(ctl, CLAIM)
    if ((w & 0x7fff0000) !== tag) break
    const index = w & 0xffff
    if (index >= Atomics.load(ctl, COUNT)) break
    if (Atomics.compareExchange(ctl, CLAIM, w, w + 1) !== w) continue
    const r = RECORDS + index * W
    try {
      fns[ctl[r]](ctl[r + 1], ctl[r + 2], ctl[r + 3], ctl[r + 4], ctl[r + 5], ctl[r + 6], ctl[r + 7], ctl[r + 8], ctl[r + 9], ctl[r + 10], ctl[r + 11])
    } catch (e) {
      Atomics.add(ctl, FAILED, 1)
    }
    Atomics.add(ctl, ${WORKER_TASKS}, 1)
    if (Atomics.add(ctl, DONE, 1) + 1 === Atomics.load(ctl, COUNT)) Atomics.notify(ctl, DONE)
  }
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
    Atomics.store(this.ctl, CLAIM, CLOSED)
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
    for (const s of scratch) {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { module, memory, control: this.ctl.buffer, names, scratch: s },
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
    Atomics.store(this.ctl, CLAIM, CLOSED)
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
    this.gen = (this.gen + 1) | 0
    const tag = (this.gen & 0x7fff) << 16
    Atomics.store(c, COUNT, count)
    Atomics.store(c, DONE, 0)
    Atomics.store(c, FAILED, 0)
    Atomics.store(c, CLAIM, tag)
    Atomics.store(c, GEN, this.gen)
    Atomics.notify(c, GEN)
    let error: unknown = null
    for (;;) {
      const w = Atomics.load(c, CLAIM)
      const index = w & 0xffff
      if (index >= count) break
      if (Atomics.compareExchange(c, CLAIM, w, w + 1) !== w) continue
      try {
        this.call(RECORDS + index * TASK_WORDS)
      } catch (e) {
        error ??= e
      }
      Atomics.add(c, DONE, 1)
    }
    let spins = 0
    for (;;) {
      const done = Atomics.load(c, DONE)
      if (done >= count) break
      if (++spins > MAIN_SPIN) Atomics.wait(c, DONE, done, 1000)
    }
    // Close the job: a thread still holding its tag can no longer claim anything.
    Atomics.store(c, CLAIM, tag | CLOSED)
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
