import { join } from "node:path"
import { type AttackName, loadBackdoorLlmSplit, readInstructions, type TaskName } from "@bdvax/attacks"
import { DEFAULT_RHO } from "@bdvax/signature"
import { Effect, Schema } from "effect"
import type { Defense, Experiment, ModelSpec } from "../config/experiment.js"
import { attempt } from "../context.js"
import { ConfigDecodeError } from "../errors.js"
import { percent } from "../output.js"
import type { ConditionRole } from "../report/data.js"
import { externalInput } from "../store/hash.js"
import { defineStage, stage, Store, type StageArtifact } from "../store/store.js"
import { type BaselineSettings, baselineStage, type DefenseStageResult, defendedModel, type FinetuneSettings, purifyStage, signatureIn } from "./defense.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT, type DemoSettings, demoEvalSettings, demoFinetune, demoPairSettings, demoPlantSettings, toyPlant, toyWorldBase } from "./demo.js"
import { evaluate, type EvaluateResult, type EvaluateSettings } from "./evaluate.js"
import { signaturePipeline } from "./immunize.js"
import { inside, itself, type Located } from "./located.js"
import type { ModelLocation } from "./model-io.js"
import { plant, plantedModel, type PlantSettings } from "./plant.js"
import { type ReportCondition, report } from "./report.js"
import { writeRecords } from "./records.js"
import type { VariantPairSettings } from "./variant-pair.js"

/**
 * `bdvax run <experiment.json>`: the grid models × attacks × tasks × defenses as stages. Per (model, attack,
 * task) cell: the data (the toy's, the user's files, or the BackdoorLLM split), the clean base's evaluation, the
 * backdoor planted (or the given adapter taken as backdoored), and per defense its stages (signature pairs,
 * purification, baselines) and an evaluation; every cell goes into one report. Stages shared between cells —
 * the toy base, a plant used by several defenses, a signature — run once.
 */

export const BACKDOORLLM_SPLIT = defineStage("backdoorllm-split", 1, Schema.Struct({ clean: Schema.Number, testClean: Schema.Number, testTriggered: Schema.Number }))
export const SPLIT_FILES = { clean: "clean.jsonl", testClean: "test-clean.jsonl", testTriggered: "test-triggered.jsonl" } as const

/** BackdoorLLM's (task, attack) split as record files (the clean training records, clean and triggered tests). */
export const backdoorLlmSplit = (root: StageArtifact<unknown> | { readonly hash: string; readonly path: string }, task: string, attack: string, label: string) =>
  stage(
    BACKDOORLLM_SPLIT,
    { task, attack },
    { root },
    ({ dir }) =>
      Effect.gen(function* () {
        const split = yield* attempt(label, () => loadBackdoorLlmSplit(root.path, task, attack))
        yield* writeRecords(label, join(dir, SPLIT_FILES.clean), split.cleanTrain)
        yield* writeRecords(label, join(dir, SPLIT_FILES.testClean), split.cleanTest)
        yield* writeRecords(label, join(dir, SPLIT_FILES.testTriggered), split.triggeredTest)
        return { clean: split.cleanTrain.length, testClean: split.cleanTest.length, testTriggered: split.triggeredTest.length }
      }),
    { label },
  )

/** BackdoorLLM names its attack folders by the trigger kind; code injection has its own ("vpi-ci"). */
const backdoorLlmAttack = (attack: string, task: string) => (task === "codeinjection" && attack === "vpi" ? "vpi-ci" : attack)

interface CellData {
  readonly clean: Located
  readonly test: Located
  readonly triggered: Located | null
}

interface CellModel {
  readonly base: ModelLocation
  readonly suspect: ModelLocation
  readonly planted: StageArtifact<{ readonly losses: readonly number[] }> | null
  readonly mode: "full" | "lora"
  readonly toy: DemoSettings | null
}

const defenseLabel = (d: Defense): string => {
  const { kind, ...rest } = d as Defense & Record<string, unknown>
  return Object.keys(rest).length === 0 ? kind : `${kind} ${JSON.stringify(rest)}`
}

const ROLES: Record<Defense["kind"], ConditionRole> = {
  none: "attacked",
  immunize: "method",
  finetune: "baseline",
  "magnitude-prune": "baseline",
  "fine-prune": "baseline",
  "random-channels": "control",
  "quantize-int4": "baseline",
  crow: "baseline",
}

/** The paper's defaults for real models, the demo's for the toy. */
function finetuneFor(e: Experiment, cell: CellModel, d: { readonly epochs?: number; readonly lr?: number }): FinetuneSettings {
  const base: FinetuneSettings = cell.toy ? demoFinetune(cell.toy) : { epochs: 5, lr: cell.mode === "lora" ? 2e-4 : 1e-5, batchSize: 4, seed: e.seed, maxSteps: null }
  return { ...base, epochs: d.epochs ?? base.epochs, lr: d.lr ?? base.lr }
}

const defaultRho = (cell: CellModel) => (cell.toy ? cell.toy.rho : cell.mode === "lora" ? DEFAULT_RHO.adapter : DEFAULT_RHO.full)

const pairSettingsFor = (e: Experiment, cell: CellModel, d: Extract<Defense, { kind: "immunize" }>, poolSize: number): VariantPairSettings => {
  const base: VariantPairSettings = cell.toy
    ? demoPairSettings(cell.toy)
    : {
        numVariants: 6,
        seed: e.seed,
        subsetSize: Math.max(1, Math.min(500, Math.ceil(poolSize / 2))),
        poisonRatio: 0.2,
        epochs: 3,
        maxSteps: null,
        lr: cell.mode === "lora" ? 2e-4 : 1e-5,
        batchSize: 4,
        promptFormat: "alpaca",
        excludeTriggers: [],
      }
  return { ...base, numVariants: d.variants ?? base.numVariants }
}

const baselineSettingsFor = (e: Experiment, cell: CellModel, d: Exclude<Defense, { kind: "none" | "immunize" }>): BaselineSettings => ({
  method: d.kind,
  ratio: ("ratio" in d ? d.ratio : undefined) ?? defaultRho(cell),
  seed: ("seed" in d ? d.seed : undefined) ?? (cell.toy ? cell.toy.signatureSeed : e.seed),
  finetune: finetuneFor(e, cell, "epochs" in d || "lr" in d ? (d as { epochs?: number; lr?: number }) : {}),
  crow: { alpha: ("alpha" in d ? d.alpha : undefined) ?? 5.5, epsilon: ("epsilon" in d ? d.epsilon : undefined) ?? 0.1 },
  rtnGroupSize: cell.toy ? 32 : 128,
  promptFormat: "alpaca",
})

/** A condition's model and how long its defense took (the method's time includes its signature). */
interface Defended {
  readonly model: ModelLocation
  readonly wallSeconds: number | null
  readonly note: string
}

const runDefenseOf = (e: Experiment, cell: CellModel, data: CellData, d: Defense, prefix: string) =>
  Effect.gen(function* () {
    if (d.kind === "none") return { model: cell.suspect, wallSeconds: null, note: "no defense" } satisfies Defended
    if (d.kind === "immunize") {
      const pool = yield* attempt(prefix, () => readInstructions(data.clean.path))
      const pairs = pairSettingsFor(e, cell, d, pool.length)
      const lambda = d.lambda ?? (cell.toy ? cell.toy.lambda : 0.01)
      const rho = d.rho ?? defaultRho(cell)
      const built = yield* signaturePipeline(pairs, { lambda, rho, rhoHeads: null, criterion: "total" }, cell.suspect, data.clean, `${prefix}`)
      const purified = yield* purifyStage(
        { finetune: finetuneFor(e, cell, d), reinitSeed: e.seed, suppressHeads: d.heads ?? false, promptFormat: "alpaca" },
        cell.suspect,
        signatureIn(built.signature),
        data.clean,
        `${prefix}purify`,
      )
      return {
        model: defendedModel(purified, cell.suspect),
        wallSeconds: built.wallSeconds + purified.result.wallSeconds,
        note: `${built.signature.result.channels} channels (N = ${pairs.numVariants}, λ = ${lambda}, ρ = ${rho})`,
      } satisfies Defended
    }
    if (d.kind === "quantize-int4" && cell.mode !== "full") return null
    const done: StageArtifact<DefenseStageResult> = yield* baselineStage(baselineSettingsFor(e, cell, d), cell.suspect, data.clean, `${prefix}${d.kind}`)
    return { model: defendedModel(done, cell.suspect), wallSeconds: done.result.wallSeconds, note: done.result.channels > 0 ? `${done.result.channels} channels` : "" } satisfies Defended
  })

function plantSettingsFor(e: Experiment, toy: DemoSettings | null, attack: AttackName, task: TaskName): PlantSettings {
  const p = e.plant
  const base: PlantSettings = toy
    ? demoPlantSettings(toy)
    : {
        attack,
        task,
        ratio: 0.1,
        poisonMode: "add",
        mode: p.mode,
        epochs: 3,
        maxSteps: null,
        lr: p.mode === "lora" ? 2e-4 : 1e-5,
        batchSize: p.batchSize,
        seed: e.seed,
        promptFormat: "alpaca",
        loraR: 8,
        loraAlpha: 16,
      }
  return { ...base, attack, task, mode: p.mode, epochs: p.epochs ?? base.epochs, lr: p.lr ?? base.lr, ratio: p.ratio ?? base.ratio, batchSize: p.batchSize }
}

const needField = (file: string, model: string, field: string, why: string) =>
  new ConfigDecodeError({ file, field, message: `${file}: ${field}: ${why} (model "${model}")` })

export interface ExperimentOutcome {
  readonly runDir: string
  readonly cells: ReadonlyArray<{
    readonly model: string
    readonly attack: string
    readonly task: string
    readonly defense: string
    readonly result: EvaluateResult
    readonly wallSeconds: number | null
  }>
  readonly report: Readonly<Record<string, string>>
}

export const runExperiment = (e: Experiment, file: string) =>
  Effect.gen(function* () {
    const store = yield* Store
    const conditions: ReportCondition[] = []
    const cells: Array<ExperimentOutcome["cells"][number]> = []
    const training: Array<{ name: string; artifact: StageArtifact<{ readonly losses: readonly number[] }> }> = []
    const backdoorllm = e.data.backdoorllm === undefined ? null : yield* externalInput(e.data.backdoorllm)

    for (const model of e.models) {
      const toy = "toy" in model ? (e.plant.mode === "lora" ? { ...DEMO_DEFAULTS, ...DEMO_LORA_PLANT, mode: "lora" as const } : DEMO_DEFAULTS) : null
      const toyWorld = toy ? yield* toyWorldBase(toy) : null
      if (toyWorld) training.push({ name: `${model.name} base`, artifact: toyWorld.base })
      const folder = "path" in model ? (model as Extract<ModelSpec, { path: string }>) : null
      const baseInput = folder ? itself(yield* externalInput(folder.path)) : null
      const givenAdapter = folder?.adapter === undefined ? null : itself(yield* externalInput(folder.adapter))

      for (const attack of e.attacks)
        for (const task of e.tasks) {
          const prefix = `${model.name}/${attack}/${task}/`
          // ---- data of the cell ----
          let data: CellData
          if (toyWorld) data = { clean: toyWorld.defenderClean, test: toyWorld.heldOut, triggered: null }
          else if (backdoorllm !== null) {
            const split = yield* backdoorLlmSplit(backdoorllm, task, backdoorLlmAttack(attack, task), `${prefix}data`)
            data = { clean: inside(split, SPLIT_FILES.clean), test: inside(split, SPLIT_FILES.testClean), triggered: inside(split, SPLIT_FILES.testTriggered) }
          } else {
            if (e.data.clean === undefined) return yield* needField(file, model.name, "data.clean", "required for a folder model (or data.backdoorllm)")
            if (e.data.test === undefined) return yield* needField(file, model.name, "data.test", "required for a folder model (or data.backdoorllm)")
            data = { clean: itself(yield* externalInput(e.data.clean)), test: itself(yield* externalInput(e.data.test)), triggered: null }
          }
          // ---- the model of the cell ----
          let cell: CellModel
          if (toyWorld && toy) {
            const { planted, suspect } = yield* toyPlant(plantSettingsFor(e, toy, attack, task), toyWorld, `${prefix}plant`)
            cell = { base: { model: toyWorld.baseModel, adapter: null }, suspect, planted, mode: e.plant.mode, toy }
          } else if (givenAdapter !== null && baseInput !== null) {
            cell = { base: { model: baseInput, adapter: null }, suspect: { model: baseInput, adapter: givenAdapter }, planted: null, mode: "lora", toy: null }
          } else {
            const base = baseInput!
            const planted = yield* plant(plantSettingsFor(e, null, attack, task), base, data.clean, `${prefix}plant`)
            cell = { base: { model: base, adapter: null }, suspect: plantedModel(planted, base), planted, mode: e.plant.mode, toy: null }
          }
          if (cell.planted) training.push({ name: `${prefix}plant`, artifact: cell.planted })
          const evalSettings: EvaluateSettings = {
            ...(toy ? demoEvalSettings(toy) : { triggerSeed: e.seed + 1, promptFormat: "alpaca" as const }),
            task,
            attack,
            maxNewTokens: e.eval.maxNewTokens,
            batchSize: e.eval.batchSize,
            limit: e.eval.limit ?? null,
          }
          const evalOf = (m: ModelLocation, label: string) => evaluate(evalSettings, m, data.test, data.triggered, label)
          const baseEval = yield* evalOf(cell.base, `${prefix}eval-base`)
          conditions.push({ name: `${prefix}clean base`, evaluation: baseEval, role: "reference", wallSeconds: null, note: "before the attack", task, attack })
          cells.push({ model: model.name, attack, task, defense: "clean base", result: baseEval.result, wallSeconds: null })

          const seen = new Map<string, number>()
          for (const d of e.defenses) {
            let name = defenseLabel(d)
            seen.set(name, (seen.get(name) ?? 0) + 1)
            if ((seen.get(name) ?? 0) > 1) name = `${name} #${seen.get(name)}`
            const defended = yield* runDefenseOf(e, cell, data, d, `${prefix}${d.kind === "none" ? "" : `${name.replace(/[^A-Za-z0-9.-]+/g, "_")}/`}`)
            if (defended === null) continue // INT4 RTN has no adapter-mode counterpart
            const evaluation = yield* evalOf(defended.model, `${prefix}eval-${name}`)
            conditions.push({ name: `${prefix}${name}`, evaluation, role: ROLES[d.kind], wallSeconds: defended.wallSeconds, note: defended.note, task, attack })
            cells.push({ model: model.name, attack, task, defense: name, result: evaluation.result, wallSeconds: defended.wallSeconds })
          }
        }
    }
    const rendered = yield* report(
      {
        title: `bdvax experiment "${e.name}"`,
        task: e.tasks[0],
        attack: e.attacks[0],
        examples: 2,
        notes: [
          `experiment file: ${file}`,
          `${e.models.length} model(s) × ${e.attacks.length} attack(s) × ${e.tasks.length} task(s) × ${e.defenses.length} defense(s); conditions are named model/attack/task/defense`,
          "ASR: keyword judge on triggered test prompts; false trigger: the same judge on clean test prompts; wall time: the defense's stages (immunize includes its signature)",
          ...cells.filter((c) => c.defense === "none").map((c) => `${c.model}/${c.attack}/${c.task}: backdoored ASR ${percent(c.result.asr.keyword)}`),
        ],
        meta: { seed: e.seed, plantMode: e.plant.mode },
      },
      conditions,
      training,
    )
    const published: Record<string, string> = {}
    for (const f of rendered.result.files) published[f] = yield* store.publish(f, join(rendered.path, f), f)
    return { runDir: store.runDir, cells, report: published } satisfies ExperimentOutcome
  })
