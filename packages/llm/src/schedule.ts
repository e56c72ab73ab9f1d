/**
 * Learning-rate schedules as transformers' optimization.py defines them (get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup, get_constant_schedule_with_warmup): a multiplier of the base rate as a
 * function of the 0-based optimizer step. Hugging Face steps the scheduler after each optimizer step, so
 * optimizer step k uses multiplier(k) — with warmup, the very first update has rate 0.
 */
export type ScheduleKind = "linear" | "cosine" | "constant"

export interface ScheduleOptions {
  readonly kind: ScheduleKind
  readonly totalSteps: number
  readonly warmupSteps?: number
  /** Cosine only: number of waves (transformers' num_cycles, default 0.5: one half-cosine down to 0). */
  readonly numCycles?: number
}

export function lrMultiplier(step: number, options: ScheduleOptions): number {
  const warmup = options.warmupSteps ?? 0
  const total = options.totalSteps
  if (step < warmup) return step / Math.max(1, warmup)
  switch (options.kind) {
    case "constant":
      return 1
    case "linear":
      return Math.max(0, (total - step) / Math.max(1, total - warmup))
    case "cosine": {
      const cycles = options.numCycles ?? 0.5
      const progress = (step - warmup) / Math.max(1, total - warmup)
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)))
    }
  }
}

/** The learning rate of 0-based optimizer step `step`. */
export const learningRate = (baseLr: number, step: number, options: ScheduleOptions): number => baseLr * lrMultiplier(step, options)

/** transformers' TrainingArguments.get_warmup_steps: explicit steps win, else ceil(total · ratio). */
export function warmupStepsFor(totalSteps: number, warmupSteps?: number, warmupRatio?: number): number {
  if (warmupSteps !== undefined && warmupSteps > 0) return warmupSteps
  return Math.ceil(totalSteps * (warmupRatio ?? 0))
}
