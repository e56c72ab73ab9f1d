import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { PoisonRatio, PositiveInt, PositiveNumber, Seed } from "../config/fields.js"
import { decodeOptions } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { emit, percent, table } from "../output.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT, type DemoSettings, demoFirstHalf } from "../pipeline/demo.js"

/** `bdvax demo`: the toy world end to end (pipeline/demo.ts), resumable in its run folder (default runs/demo). */
const DemoOptions = Schema.Struct({
  seed: Seed,
  heldOut: PositiveInt,
  baseEpochs: PositiveInt,
  baseLr: PositiveNumber,
  plantEpochs: PositiveInt,
  plantLr: PositiveNumber,
  batchSize: PositiveInt,
  mode: Schema.Literals(["full", "lora"]),
  ratio: PoisonRatio,
  maxNewTokens: PositiveInt,
  evalBatchSize: PositiveInt,
  evalLimit: Schema.NullOr(PositiveInt),
})

const d = DEMO_DEFAULTS
const intFlag = (name: string, description: string, value: number) => Flag.Int(name).pipe(Flag.withDescription(description), Flag.withDefault(value))
const numberFlag = (name: string, description: string, value: number) => Flag.Finite(name).pipe(Flag.withDescription(description), Flag.withDefault(value))

export const demoCommand = Command.make(
  "demo",
  {
    seed: intFlag("seed", "Seed of the data split, the init, training order and triggers", d.seed),
    heldOut: intFlag("held-out", "Toy records held out of planting for evaluation", d.heldOut),
    baseEpochs: intFlag("base-epochs", "Epochs of the clean base model's training", d.baseEpochs),
    baseLr: numberFlag("base-lr", "Learning rate of the clean base model", d.baseLr),
    plantEpochs: Flag.Int("plant-epochs").pipe(
      Flag.withDescription(`Epochs of planting the backdoor (default ${d.plantEpochs}; --mode lora: ${DEMO_LORA_PLANT.plantEpochs})`),
      Flag.optional,
    ),
    plantLr: Flag.Finite("plant-lr").pipe(Flag.withDescription(`Learning rate of planting (default ${d.plantLr}; --mode lora: ${DEMO_LORA_PLANT.plantLr})`), Flag.optional),
    batchSize: intFlag("batch-size", "Training batch size", d.batchSize),
    mode: Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("Plant by full finetuning or with a LoRA adapter"), Flag.withDefault(d.mode)),
    ratio: numberFlag("ratio", "Fraction of planting records that get a poisoned copy", d.ratio),
    maxNewTokens: intFlag("max-new-tokens", "Generation budget per prompt in evaluation", d.maxNewTokens),
    evalBatchSize: intFlag("eval-batch-size", "Prompts per generation batch", d.evalBatchSize),
    evalLimit: Flag.Int("eval-limit").pipe(Flag.withDescription("Evaluate only the first n held-out records"), Flag.optional),
  },
  (o) =>
    Effect.gen(function* () {
      const plant = o.mode === "lora" ? DEMO_LORA_PLANT : d
      const settings: DemoSettings = yield* decodeOptions("demo", DemoOptions, {
        ...o,
        plantEpochs: Option.getOrElse(o.plantEpochs, () => plant.plantEpochs),
        plantLr: Option.getOrElse(o.plantLr, () => plant.plantLr),
        evalLimit: Option.getOrNull(o.evalLimit),
      })
      const outcome = yield* withStore({ command: "demo", defaultName: "demo", settings }, withDevice(demoFirstHalf(settings)))
      const row = (name: string, r: typeof outcome.base) => [name, percent(r.asr.keyword), percent(r.asr.target), percent(r.falseTrigger.keyword), percent(r.cleanAccuracy), r.cleanPerplexity?.toFixed(2) ?? "–"]
      yield* emit({
        json: outcome,
        text: [
          table(["model", "ASR (keyword)", "ASR (target)", "false trigger", "clean exact match", "clean ppl"], [row("clean base", outcome.base), row("backdoored", outcome.backdoored)]),
          "",
          `report: ${outcome.report["report.md"]}`,
          `run folder: ${outcome.runDir} (re-run to resume; finished stages are reused)`,
        ].join("\n"),
      })
    }),
).pipe(
  Command.withDescription(
    "The embedded demo on the toy world: train a tiny instruction-following Llama, plant a BadNets refusal backdoor, measure ASR / false triggers / clean accuracy, write a report",
  ),
)
