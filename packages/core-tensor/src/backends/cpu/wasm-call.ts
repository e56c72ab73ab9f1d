import { MAX_TASKS } from "./pool.js"
import { type Runtime, wasmRuntime } from "./wasm-runtime.js"

/**
 * Calling the element-wise WASM kernels from the JS kernels: directly on the calling thread for small work, as
 * thread-pool tasks (chunks of elements or rows) for large work.
 */

const bitsF32 = new Float32Array(1)
const bitsI32 = new Int32Array(bitsF32.buffer)

/** The bit pattern of f32(x), for passing an f32 scalar through an i32 parameter. */
export function f32Bits(x: number): number {
  bitsF32[0] = x
  return bitsI32[0]
}

/**
 * Work (elements × a per-element cost weight: 1 for a plain add, ~4 for exp-based kernels) from which a kernel
 * is split over the threads. Below it, waking the workers costs more than it saves.
 */
export const PARALLEL_WORK = 1 << 17

/** Chunks per thread, so a thread that is descheduled (the machine is shared) delays the job by little. */
const CHUNKS_PER_THREAD = 4

/**
 * Run `fn` over elements [0, n): `args(start, count)` gives its arguments for one chunk (element offsets must be
 * added to the pointers by the caller). One call inline when the work is small, else chunks of at least 4096
 * elements (multiples of 16) on the pool.
 */
export function forElements(name: string, n: number, cost: number, args: (start: number, count: number) => number[]): void {
  const rt = wasmRuntime()
  const fn = rt.exports[name]
  if (n * cost < PARALLEL_WORK || rt.pool.threads === 1) {
    fn(...args(0, n))
    return
  }
  const chunks = rt.pool.threads * CHUNKS_PER_THREAD
  const step = Math.max(4096, Math.ceil(n / chunks / 16) * 16)
  submit(rt, rt.fn[name], Math.ceil(n / step), (i) => {
    const start = i * step
    return args(start, Math.min(step, n - start))
  })
}

/** Run a row kernel over rows [0, rows): `args(r0, r1)` gives one chunk's arguments. */
export function forRows(name: string, rows: number, rowWork: number, args: (r0: number, r1: number) => number[]): void {
  const rt = wasmRuntime()
  const fn = rt.exports[name]
  if (rows * rowWork < PARALLEL_WORK || rows === 1 || rt.pool.threads === 1) {
    fn(...args(0, rows))
    return
  }
  const chunks = Math.min(rows, rt.pool.threads * CHUNKS_PER_THREAD)
  const step = Math.ceil(rows / chunks)
  submit(rt, rt.fn[name], Math.ceil(rows / step), (i) => args(i * step, Math.min(rows, (i + 1) * step)))
}

/** Independent calls of one function (e.g. one per row of a strided operand), batched into pool jobs. */
export function forCalls(name: string, calls: number, work: number, args: (i: number) => number[]): void {
  const rt = wasmRuntime()
  if (work < PARALLEL_WORK || calls === 1 || rt.pool.threads === 1) {
    const fn = rt.exports[name]
    for (let i = 0; i < calls; i++) fn(...args(i))
    return
  }
  submit(rt, rt.fn[name], calls, args)
}

function submit(rt: Runtime, fn: number, tasks: number, args: (i: number) => number[]): void {
  const pool = rt.pool
  pool.begin()
  for (let i = 0; i < tasks; i++) {
    if (pool.pending >= MAX_TASKS) rt.run(true), pool.begin()
    const a = args(i)
    pool.task(fn, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10])
  }
  rt.run(true)
}
