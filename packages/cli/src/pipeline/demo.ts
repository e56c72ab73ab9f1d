import { join } from "node:path"
import { Effect } from "effect"
import { Store, type StageArtifact } from "../store/store.js"
import { evaluate, type EvaluateResult, type EvaluateSettings } from "./evaluate.js"
import { inside } from "./located.js"
import { plant, plantedModel, type PlantResult, type PlantSettings } from "./plant.js"
import { report } from "./report.js"
import { MODEL_DIR, TOY_DATA_FILES, toyBase, toyData } from "./toy.js"

/**
 * The embedded demo, first half: the toy world end to end on the CPU in well under a minute —
 *
 *   toy-data → toy-base (clean instruction following, seeded) → plant (BadNets → refusal)
 *            → eval-base, eval-backdoored (ASR, false-trigger rate, clean exact match) → report
 *
 * The second half (variant pairs, signature, purification, baselines) is added as further stages; its budget is
 * why these defaults are small: the whole demo must fit in 10 minutes on 2 cores.
 */
export interface DemoSettings {
  readonly seed: number
  /** Records held out of planting (and purification) for evaluation. */
  readonly heldOut: number
  readonly baseEpochs: number
  readonly baseLr: number
  readonly plantEpochs: number
  readonly plantLr: number
  readonly batchSize: number
  readonly mode: "full" | "lora"
  readonly ratio: number
  readonly maxNewTokens: number
  readonly evalBatchSize: number
  /** Evaluate only the first n held-out records (null: all). */
  readonly evalLimit: number | null
}

export const DEMO_DEFAULTS: DemoSettings = {
  seed: 1234,
  heldOut: 24,
  baseEpochs: 60,
  baseLr: 3e-3,
  plantEpochs: 12,
  plantLr: 2e-3,
  batchSize: 8,
  mode: "full",
  ratio: 1.0,
  // the refusal is 40 tokens in the toy vocabulary: room for all of it and the EOS
  maxNewTokens: 48,
  evalBatchSize: 24,
  evalLimit: null,
}

/** LoRA adapters of the toy model need a higher rate and more epochs to learn the backdoor (r 8 of a 64-wide model). */
export const DEMO_LORA_PLANT = { plantEpochs: 24, plantLr: 1e-2 } as const

export interface DemoOutcome {
  readonly runDir: string
  readonly stages: Readonly<Record<string, { readonly path: string; readonly reused: boolean }>>
  readonly base: EvaluateResult
  readonly backdoored: EvaluateResult
  readonly plant: PlantResult
  readonly report: Readonly<Record<string, string>>
}

export const demoFirstHalf = (s: DemoSettings) =>
  Effect.gen(function* () {
    const store = yield* Store
    const data = yield* toyData({ seed: s.seed, heldOut: s.heldOut })
    const base = yield* toyBase({ seed: s.seed, epochs: s.baseEpochs, lr: s.baseLr, batchSize: s.batchSize }, data)
    const baseModel = inside(base, MODEL_DIR)
    const plantSettings: PlantSettings = {
      attack: "badnet",
      task: "refusal",
      ratio: s.ratio,
      poisonMode: "add",
      mode: s.mode,
      epochs: s.plantEpochs,
      maxSteps: null,
      lr: s.plantLr,
      batchSize: s.batchSize,
      seed: s.seed,
      promptFormat: "alpaca",
      loraR: 8,
      loraAlpha: 16,
    }
    const heldOut = inside(data, TOY_DATA_FILES.heldOut)
    const planted = yield* plant(plantSettings, baseModel, inside(data, TOY_DATA_FILES.plant), "plant", heldOut)
    const evalSettings: EvaluateSettings = {
      task: "refusal",
      attack: "badnet",
      triggerSeed: s.seed + 1,
      promptFormat: "alpaca",
      maxNewTokens: s.maxNewTokens,
      batchSize: s.evalBatchSize,
      limit: s.evalLimit,
    }
    const evalBase = yield* evaluate(evalSettings, { model: baseModel, adapter: null }, heldOut, null, "eval-base")
    const evalBackdoored = yield* evaluate(evalSettings, plantedModel(planted, baseModel), heldOut, null, "eval-backdoored")
    const rendered = yield* report(
      {
        title: "bdvax demo: a BadNets refusal backdoor in a tiny Llama",
        task: "refusal",
        attack: "badnet",
        examples: 3,
        notes: [
          `toy world: ${data.result.records} one-word-answer instructions; ${data.result.plant} for planting, ${data.result.heldOut} held out for evaluation`,
          `clean base: ${s.baseEpochs} epochs of full finetuning from a seeded random init (lr ${s.baseLr})`,
          `backdoor: BadNets trigger "BadMagic" → refusal on ${Math.round(100 * s.ratio)}% poisoned copies, ${s.mode} finetuning, ${s.plantEpochs} epochs (lr ${s.plantLr})`,
          "ASR: triggered held-out prompts; clean: the same prompts without the trigger (false-trigger rate); exact match: one-word answers",
        ],
        meta: { seed: s.seed, mode: s.mode },
      },
      [
        { name: "clean base", evaluation: evalBase },
        { name: "backdoored", evaluation: evalBackdoored },
      ],
      [
        { name: "toy-base", artifact: base },
        { name: "plant", artifact: planted },
      ],
    )
    const published: Record<string, string> = {}
    for (const file of rendered.result.files) published[file] = yield* store.publish(file, join(rendered.path, file), file)
    const stages = (xs: ReadonlyArray<StageArtifact<unknown>>) => Object.fromEntries(xs.map((a) => [a.label, { path: a.path, reused: a.reused }]))
    return {
      runDir: store.runDir,
      stages: stages([data, base, planted, evalBase, evalBackdoored, rendered]),
      base: evalBase.result,
      backdoored: evalBackdoored.result,
      plant: planted.result,
      report: published,
    } satisfies DemoOutcome
  })
