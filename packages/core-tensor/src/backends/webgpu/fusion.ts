import { type DeviceBuffer, specOf } from "../../backend.js"
import type { BoundBuffer, DispatchRecorder } from "./dispatch-recorder.js"
import { fusedKernel } from "./fusion-codegen.js"
import { type FusionLimits, planWindow } from "./fusion-plan.js"
import type { PendingWindow, WindowCaps } from "./pending-window.js"
import type { ProgramCache } from "./program-cache.js"

/**
 * Element-wise fusion, the backend's side (README "Element-wise fusion"): options, counters, and recording a
 * window of waiting calls — planned by fusion-plan.ts — into the command encoder.
 */

export interface FusionOptions extends WindowCaps {
  /** Calls merged into one kernel at most (default 64): bounds shader size and compile time. */
  readonly maxNodes: number
}

export const FUSION_DEFAULTS: FusionOptions = { maxPendingCalls: 256, maxDeferredBytes: 2 ** 28, maxNodes: 64 }

/** `false`, or no option with env BDVAX_WEBGPU_FUSION=0: no fusion (null). */
export function fusionOptions(option: boolean | Partial<FusionOptions> | undefined): FusionOptions | null {
  if (option === false || (option === undefined && process.env.BDVAX_WEBGPU_FUSION === "0")) return null
  return { ...FUSION_DEFAULTS, ...(typeof option === "object" ? option : {}) }
}

/** Counters since the backend was created (compare before/after to measure a workload). */
export interface WebGpuStats {
  /** Kernel calls received by `dispatch`. */
  readonly calls: number
  /** Compute dispatches recorded (each pass of a multi-pass kernel counts). */
  readonly dispatches: number
  /** Fused kernels dispatched, and the calls they replaced. */
  readonly fusedKernels: number
  readonly fusedCalls: number
  /** Outputs of fused calls that were never written to memory (freed, and read only inside their kernel). */
  readonly elidedOutputs: number
  /** Calls not run at all: everything they computed was freed unread. */
  readonly droppedCalls: number
  /** Distinct fused kernels compiled. */
  readonly fusedVariants: number
}

export type FusionCounts = { -readonly [K in Exclude<keyof WebGpuStats, "dispatches" | "fusedVariants">]: number }

export interface RecordTarget {
  readonly programs: ProgramCache
  readonly recorder: DispatchRecorder
  readonly limits: FusionLimits
  /** How a GPUBuffer is bound (whole buffer, capped at the binding limit). */
  bound(buffer: GPUBuffer): BoundBuffer
  /** Return a held-back buffer to the pool. */
  release(buffer: GPUBuffer): void
}

/** Plan the window and record its dispatches in order; the window is cleared (and its deferred frees
 *  released to the pool) even if recording fails. */
export function recordWindow(window: PendingWindow, { programs, recorder, limits, bound, release }: RecordTarget, counts: FusionCounts): void {
  try {
    const plan = planWindow(window.entries, window.freed, limits)
    const bind = (handle: DeviceBuffer) => bound(window.gpuOf(handle))
    for (const step of plan.steps) {
      if (step.kind === "barrier") {
        for (const pass of window.passesOf(step.entry)) recorder.record(pass.pipeline, pass.layout, pass.buffers, pass.params, pass.grid, pass.label)
      } else if (step.kind === "single") {
        const entry = window.entries[step.entry]
        if (entry.kind !== "node") throw new Error("webgpu fusion: a single step must be a node (planner bug)")
        const noScratch = () => {
          throw new Error(`webgpu fusion: ${entry.call.kind} asked for scratch memory`)
        }
        for (const pass of programs.prepare(programs.get(specOf(entry.call)), entry.call, noScratch))
          recorder.record(pass.pipeline, pass.layout, pass.bindings.map((b) => bind(b.view.buffer)), pass.params, pass.grid, pass.label)
      } else {
        const kernel = fusedKernel(step.kernel)
        const { pipeline, layout } = programs.fused(kernel)
        recorder.record(pipeline, layout, kernel.bindings.map((b) => bind(b.view.buffer)), kernel.params, kernel.grid, kernel.label)
        counts.fusedKernels++
        counts.fusedCalls += step.entries.length
      }
    }
    counts.elidedOutputs += plan.elided
    counts.droppedCalls += plan.dropped
  } finally {
    window.clear(release)
  }
}
