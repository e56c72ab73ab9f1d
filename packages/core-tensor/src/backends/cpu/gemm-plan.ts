/**
 * How one GEMM is cut into tasks for the worker pool (matmul.ts runs the plan).
 *
 * A task is (batch, a range of row panels, a slab of column panels); it packs its own slab of B per depth slice
 * (gemm_fused), so the cost of packing B is paid once per *row range*: splitting along N costs nothing, splitting
 * along M re-packs B once per extra range. So the plan splits columns first and rows only when M is long (or
 * nothing else is left).
 *
 * Why many small tasks: tasks are claimed dynamically, and on a machine shared with other work a thread often
 * arrives late (woken from sleep, or descheduled) — the job then ends when the last task claimed ends. With a
 * dozen 100 µs tasks, a worker that joined late and claimed the last one made a 0.65 ms product take 1.3–1.7 ms
 * (slower than one thread); with ~16 tasks per thread of ≥ 1 MFLOP (~10 µs) a late thread costs little more than
 * one small task. A floor on the task size keeps the per-task overhead (a claim, a call, re-reading packed A)
 * small.
 */

/** Rows of C per block of packed A held in L2 (see matmul.ts). */
export const MC_MAX = 120
/** Widest column slab of one task (its kc × nc slab of B must also fit the thread's scratch). */
export const NC_MAX = 256
/** Tasks per thread wanted for a parallel product. */
export const TASKS_PER_THREAD = 16
/** No split makes a task smaller than this (flops). */
export const MIN_TASK_FLOPS = 1 << 20

export interface GemmPlanInput {
  readonly M: number
  readonly N: number
  readonly K: number
  readonly batches: number
  /** Register tile of the GEMM variant. */
  readonly mr: number
  readonly nr: number
  /** Deepest depth slice of the variant (its KC). */
  readonly kcMax: number
  /** Bytes of a thread's scratch for the packed kc × nc slab of B. */
  readonly bScratchBytes: number
  /** Threads that will run the tasks (1: no split beyond what the scratch needs). */
  readonly threads: number
}

export interface GemmPlan {
  /** Depth slice: K is walked in ⌈K / kc⌉ slices of ≤ kc. */
  readonly kc: number
  /** Row panels (of mr rows) per task, and rows per MC block inside a task (a multiple of mr). */
  readonly rangePanels: number
  readonly mcMax: number
  /** Column panels (of nr columns) per task. */
  readonly ncPanels: number
  /** Tasks in all: batches × row ranges × column slabs. */
  readonly taskCount: number
}

export function planGemm(p: GemmPlanInput): GemmPlan {
  const { M, N, K, batches, mr, nr, threads } = p
  const kSlices = Math.max(1, Math.ceil(K / p.kcMax))
  const kc = Math.max(1, Math.ceil(K / kSlices))
  const mPanels = Math.ceil(M / mr)
  const nPanels = Math.ceil(N / nr)
  // Widest slab: NC_MAX columns, and kc × nc floats within the scratch.
  const scratchPanels = Math.floor(p.bScratchBytes / (4 * kc * nr))
  let ncPanels = Math.max(1, Math.min(nPanels, Math.floor(NC_MAX / nr), scratchPanels))
  let rangePanels = mPanels
  const tasks = () => batches * Math.ceil(mPanels / rangePanels) * Math.ceil(nPanels / ncPanels)
  const halve = (x: number) => Math.ceil(x / 2)
  if (threads > 1) {
    const wanted = TASKS_PER_THREAD * threads
    while (tasks() < wanted) {
      const rows = Math.min(M, rangePanels * mr)
      const cols = Math.min(N, ncPanels * nr)
      if (2 * K * rows * cols < 2 * MIN_TASK_FLOPS) break
      if (cols >= 128) ncPanels = halve(ncPanels)
      else if (rows >= 4 * MC_MAX) rangePanels = halve(rangePanels)
      else if (ncPanels >= 4) ncPanels = halve(ncPanels)
      else if (rows >= 2 * MC_MAX) rangePanels = halve(rangePanels)
      else if (ncPanels >= 2) ncPanels = halve(ncPanels)
      else if (rangePanels >= 2) rangePanels = halve(rangePanels)
      else break
    }
  }
  const mcMax = Math.ceil(Math.min(MC_MAX, rangePanels * mr) / mr) * mr
  return { kc, rangePanels, mcMax, ncPanels, taskCount: tasks() }
}
