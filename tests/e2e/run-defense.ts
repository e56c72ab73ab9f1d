import type { LoraAdapter, Params } from "@bdvax/llm"
import { type DefenseResult, disposeDefense } from "@bdvax/purify"
import { measure, type ModelScores } from "./metrics.js"
import type { DefenseRow } from "./table.js"
import type { ToyWorld } from "./toy-world.js"

/** A defense row plus what the test checks about the run itself. */
export interface MeasuredDefense extends DefenseRow {
  /** Optimizer steps of its clean finetune (null: none ran). */
  readonly steps: number | null
  /** Tensors still alive after the defended model was measured and disposed (0 when nothing leaked). */
  readonly leaked: number
}

export interface DefenseSpec {
  readonly defense: string
  readonly mode: "full" | "adapter"
  readonly note?: string
  /** Seconds spent before `run` that belong to this defense (building the signature). */
  readonly extraSeconds?: number
  readonly run: () => Promise<DefenseResult> | DefenseResult
}

/**
 * Run one defense on the suspicious model, time it, measure the model it returns (adapter results are applied
 * to `base`), dispose it and count the tensors left behind: every row of the table goes through here, so every
 * method is measured the same way and checked for leaks.
 */
export async function runDefense(world: ToyWorld, base: Params, spec: DefenseSpec): Promise<MeasuredDefense> {
  const liveBefore = world.dev.memory().liveTensors
  const t0 = performance.now()
  const result = await spec.run()
  const seconds = (performance.now() - t0) / 1000 + (spec.extraSeconds ?? 0)
  const model: { params: Params; lora?: LoraAdapter } = result.mode === "full" ? { params: result.params } : { params: base, lora: result.adapter }
  let scores: ModelScores
  try {
    scores = await measure(world, model)
  } finally {
    disposeDefense(result)
  }
  const leaked = world.dev.memory().liveTensors - liveBefore
  return { defense: spec.defense, mode: spec.mode, note: spec.note, ...scores, seconds, steps: result.training?.steps ?? null, leaked }
}

/**
 * Several runs of one control (e.g. random channel draws) as one row: the rates and time averaged, the
 * individual ASRs in the note, leaks summed. Single random draws of a few channels vary a lot at this scale
 * (one draw can hit the few channels that matter), so a control row that is a single draw would mislead.
 */
export function averageRows(runs: readonly MeasuredDefense[]): MeasuredDefense {
  if (runs.length === 0) throw new RangeError("averageRows: no runs")
  const mean = (f: (r: MeasuredDefense) => number) => runs.reduce((s, r) => s + f(r), 0) / runs.length
  const asrs = runs.map((r) => `${(100 * r.asr).toFixed(0)}%`).join(" / ")
  return {
    ...runs[0],
    asr: mean((r) => r.asr),
    falseTrigger: mean((r) => r.falseTrigger),
    cleanAcc: mean((r) => r.cleanAcc),
    seconds: mean((r) => r.seconds),
    leaked: runs.reduce((s, r) => s + r.leaked, 0),
    note: `${runs[0].note ?? ""}; mean of ${runs.length} draws, ASR ${asrs}`,
  }
}
