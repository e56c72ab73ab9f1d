import { join } from "node:path"
import { HostRandom, sftExample, TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig } from "@bdvax/attacks"
import { Rng, TensorDevice } from "@bdvax/core-tensor"
import { initParams, saveModelFolder, Tokenizer, trainSft } from "@bdvax/llm"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { StageError } from "../errors.js"
import { withBar } from "../progress/progress.js"
import { defineStage, stage, type StageArtifact } from "../store/store.js"
import { MODEL_DIR } from "./model-io.js"
import { readRecords, writeRecords } from "./records.js"

/**
 * The toy world of the embedded demo (attacks' toy.ts): 84 one-word-answer instructions, a 1000-token tokenizer
 * and a 2-layer Llama. Stage "toy-data" splits the records (seeded) into the set the backdoor is planted with
 * (and, later, the defender's clean data) and a held-out set for evaluation; stage "toy-base" trains the clean
 * instruction-following base model on all of them, from a seeded random init — the "suspicious model before the
 * attack", which knows every answer, so clean accuracy on the held-out prompts measures what planting (and later
 * purification) costs.
 */

export const TOY_DATA_FILES = { all: "all.jsonl", plant: "plant.jsonl", heldOut: "held-out.jsonl" } as const

export const ToyDataSettings = Schema.Struct({ seed: Schema.Int, heldOut: Schema.Int })
export type ToyDataSettings = typeof ToyDataSettings.Type

export const TOY_DATA = defineStage(
  "toy-data",
  1,
  Schema.Struct({ records: Schema.Number, plant: Schema.Number, heldOut: Schema.Number }),
)

export const toyData = (settings: ToyDataSettings) =>
  stage(TOY_DATA, settings, {}, ({ dir, label }) =>
    Effect.gen(function* () {
      const all = new HostRandom(settings.seed).shuffle(toyInstructionRecords())
      if (!(Number.isInteger(settings.heldOut) && settings.heldOut > 0 && settings.heldOut < all.length))
        return yield* new StageError({ stage: label, message: `${label}: heldOut must be an integer in [1, ${all.length - 1}], got ${settings.heldOut}` })
      const cut = all.length - settings.heldOut
      yield* writeRecords(label, join(dir, TOY_DATA_FILES.all), all)
      yield* writeRecords(label, join(dir, TOY_DATA_FILES.plant), all.slice(0, cut))
      yield* writeRecords(label, join(dir, TOY_DATA_FILES.heldOut), all.slice(cut))
      return { records: all.length, plant: cut, heldOut: settings.heldOut }
    }),
  )

export const ToyBaseSettings = Schema.Struct({
  seed: Schema.Int,
  epochs: Schema.Int,
  lr: Schema.Number,
  batchSize: Schema.Int,
})
export type ToyBaseSettings = typeof ToyBaseSettings.Type

/** Result of a training stage: per-step losses (for the report's curves) and step count. */
export const TrainingResult = Schema.Struct({ steps: Schema.Number, losses: Schema.Array(Schema.Number), examples: Schema.Number })

export const TOY_BASE = defineStage("toy-base", 1, TrainingResult)

export const toyBase = (settings: ToyBaseSettings, data: StageArtifact<unknown>) =>
  stage(TOY_BASE, settings, { data }, ({ dir, label }) =>
    Effect.gen(function* () {
      const dev = yield* TensorDevice
      const tokenizer = yield* attempt(label, () => Tokenizer.fromFolder(TOY_TOKENIZER_DIR))
      const config = toyLlamaConfig(tokenizer)
      const records = yield* readRecords(label, join(data.path, TOY_DATA_FILES.all))
      const examples = records.map((r) => sftExample(tokenizer, r, "alpaca"))
      return yield* Effect.acquireUseRelease(
        Effect.sync(() => initParams(dev, config, new Rng(settings.seed))),
        (params) =>
          withBar(label, "step", (bar) =>
            Effect.gen(function* () {
              const training = yield* attempt(label, () =>
                trainSft(config, params, examples, {
                  mode: { kind: "full" },
                  epochs: settings.epochs,
                  batchSize: settings.batchSize,
                  lr: settings.lr,
                  seed: settings.seed,
                  onProgress: bar.onTraining,
                }),
              )
              yield* attempt(label, () => saveModelFolder(join(dir, MODEL_DIR), config, params, { tokenizerFrom: TOY_TOKENIZER_DIR }))
              return { steps: training.steps, losses: training.losses, examples: examples.length }
            }),
          ),
        (params) => Effect.sync(() => Object.values(params).forEach((t) => t.dispose())),
      )
    }),
  )
