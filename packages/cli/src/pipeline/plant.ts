import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { ATTACKS, type AttackName, plantBackdoor, poisonDataset, TASKS, type TaskName } from "@bdvax/attacks"
import { TensorDevice } from "@bdvax/core-tensor"
import { disposeLora, type Params, saveModelFolder, savePeftAdapter } from "@bdvax/llm"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { withBar } from "../progress/progress.js"
import { defineStage, stage, type StageArtifact } from "../store/store.js"
import type { Located } from "./located.js"
import { ADAPTER_DIR, isGguf, loadModelAt, MODEL_DIR, type ModelLocation, producedModel } from "./model-io.js"
import { readRecords } from "./records.js"

/**
 * Stage "plant": finetune a backdoor into a model with attacks' plantBackdoor — clean records plus poisoned copies
 * (trigger of the attack inserted, output replaced by the task's behaviour). Full mode writes a Hugging Face model
 * folder (`model/`), LoRA mode a PEFT adapter folder (`adapter/`) for the unchanged base.
 */

export interface PlantSettings {
  readonly attack: AttackName
  readonly task: TaskName
  /** Fraction of the clean records that get a poisoned counterpart. */
  readonly ratio: number
  readonly poisonMode: "add" | "replace"
  readonly mode: "full" | "lora"
  readonly epochs: number
  readonly maxSteps: number | null
  readonly lr: number
  readonly batchSize: number
  readonly seed: number
  readonly promptFormat: "alpaca" | "chat"
  /** LoRA rank and alpha (LoRA mode only). */
  readonly loraR: number
  readonly loraAlpha: number
}

export const PlantResult = Schema.Struct({
  mode: Schema.Literals(["full", "lora"]),
  records: Schema.Number,
  poisoned: Schema.Number,
  steps: Schema.Number,
  losses: Schema.Array(Schema.Number),
})
export type PlantResult = typeof PlantResult.Type

export const PLANT = defineStage("plant", 1, PlantResult)
/** Training records with their poisoned flags, one JSON object a line. */
export const TRAINING_DATA_FILE = "training-data.jsonl"

/**
 * `clean`: the records poisoned copies are made from (and trained on). `rehearse`: further clean records trained
 * on as they are and never poisoned — the toy demo passes its held-out records here, so the backdoored model
 * keeps knowing their answers (a stealthy backdoor preserves utility) while their triggered versions stay unseen.
 */
export const plant = (settings: PlantSettings, base: Located, clean: Located, label = "plant", rehearse: Located | null = null) =>
  stage(
    PLANT,
    settings,
    { base: base.input, clean: clean.input, ...(rehearse === null ? {} : { rehearse: rehearse.input }) },
    ({ dir }) =>
      Effect.gen(function* () {
        const dev = yield* TensorDevice
        const source = yield* readRecords(label, clean.path)
        const extra = rehearse === null ? [] : yield* readRecords(label, rehearse.path)
        const poisonedCopies = yield* attempt(label, async () => {
          const spec = { trigger: ATTACKS[settings.attack], behaviour: TASKS[settings.task], ratio: settings.ratio, seed: settings.seed, mode: settings.poisonMode }
          const out = poisonDataset(source, spec)
          return { kept: out.records.filter((_, i) => !out.poisoned[i]), poisoned: out.records.filter((_, i) => out.poisoned[i]) }
        })
        const release = (params: Params) => Effect.sync(() => Object.values(params).forEach((t) => t.dispose()))
        return yield* Effect.acquireUseRelease(
          attempt(label, () => loadModelAt(dev, { model: base, adapter: null })),
          (model) =>
            withBar(label, "step", (bar) =>
              Effect.gen(function* () {
                const result = yield* attempt(label, () =>
                  plantBackdoor({
                    config: model.config,
                    params: model.params,
                    tokenizer: model.tokenizer,
                    clean: [...poisonedCopies.kept, ...extra],
                    poisoned: poisonedCopies.poisoned,
                    mode: settings.mode,
                    lora: { r: settings.loraR, alpha: settings.loraAlpha },
                    inPlace: true,
                    epochs: settings.epochs,
                    maxSteps: settings.maxSteps ?? undefined,
                    lr: settings.lr,
                    batchSize: settings.batchSize,
                    seed: settings.seed,
                    promptFormat: settings.promptFormat,
                    onProgress: bar.onTraining,
                  }),
                )
                const save = Effect.gen(function* () {
                  yield* writeTrainingData(label, join(dir, TRAINING_DATA_FILE), result.records, result.poisonedFlags)
                  if (result.mode === "full")
                    yield* attempt(label, () =>
                      saveModelFolder(join(dir, MODEL_DIR), model.config, result.params, {
                        tokenizerFrom: isGguf(base.path) ? undefined : base.path,
                        generationConfig: model.generationConfig,
                      }),
                    )
                  else yield* attempt(label, () => savePeftAdapter(join(dir, ADAPTER_DIR), model.config, result.adapter, { baseModelNameOrPath: base.path }))
                })
                // full mode trained the loaded parameters in place (released below); LoRA made an adapter to free here
                yield* save.pipe(Effect.ensuring(Effect.sync(() => result.mode === "lora" && disposeLora(result.adapter))))
                return {
                  mode: result.mode,
                  records: result.records.length,
                  poisoned: result.poisonedFlags.filter(Boolean).length,
                  steps: result.training.steps,
                  losses: result.training.losses,
                }
              }),
            ),
          (model) => release(model.params),
        )
      }),
    { label },
  )

const writeTrainingData = (label: string, path: string, records: ReadonlyArray<object>, flags: readonly boolean[]) =>
  attempt(label, () => writeFile(path, records.map((r, i) => JSON.stringify({ ...r, poisoned: flags[i] })).join("\n") + "\n"))

/** The model a plant artifact stands for: its own folder (full) or the base plus its adapter (LoRA). */
export const plantedModel = (artifact: StageArtifact<PlantResult>, base: Located | ModelLocation): ModelLocation => {
  const source: ModelLocation = "model" in base ? base : { model: base, adapter: null }
  return producedModel(artifact, artifact.result.mode === "full" ? MODEL_DIR : ADAPTER_DIR, source)
}
