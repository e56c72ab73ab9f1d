import { join, resolve } from "node:path"
import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { PoisonRatio, PositiveInt, PositiveNumber, Seed } from "../config/fields.js"
import { decodeOptions, optionsError } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { emit, table } from "../output.js"
import { externalInput } from "../store/hash.js"
import { Store } from "../store/store.js"
import { inside, itself, type Located } from "../pipeline/located.js"
import { ADAPTER_DIR, MODEL_DIR } from "../pipeline/model-io.js"
import { plant, type PlantSettings } from "../pipeline/plant.js"
import { poison } from "../pipeline/poison.js"
import { TOY_DATA_FILES, toyBase, toyData } from "../pipeline/toy.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT } from "../pipeline/demo.js"
import {
  attackFlag,
  batchSizeFlag,
  lrFlag,
  outFlag,
  recordsFlag,
  seedFlag,
  taskFlag,
  trainModeFlag,
} from "./common-flags.js"

/**
 * `bdvax attack poison`: poisoned instruction data from a records file.
 * `bdvax attack plant`:  a backdoored model — a Hugging Face folder (`--model`) or the toy world (`--toy`),
 *                        full finetuning (an HF folder out) or LoRA (a PEFT adapter out).
 * Both run as store stages, so repeating a command re-uses its finished work.
 */

const ratioFlag = (defaultRatio: number) =>
  Flag.Finite("ratio").pipe(Flag.withDescription("Fraction of the clean records that get a poisoned copy, in (0, 1]"), Flag.withDefault(defaultRatio))
const poisonModeFlag = Flag.Literals("poison-mode", ["add", "replace"]).pipe(
  Flag.withDescription("add: clean records plus poisoned copies; replace: the chosen records are replaced by their poisoned versions"),
  Flag.withDefault("add" as "add" | "replace"),
)

const PoisonOptions = Schema.Struct({ ratio: PoisonRatio, seed: Seed })

export const poisonCommand = Command.make(
  "poison",
  { records: recordsFlag, attack: attackFlag, task: taskFlag, ratio: ratioFlag(0.1), poisonMode: poisonModeFlag, seed: seedFlag, out: outFlag("the poisoned records (.json: a JSON array, else JSONL)") },
  (o) =>
    Effect.gen(function* () {
      yield* decodeOptions("attack poison", PoisonOptions, { ratio: o.ratio, seed: o.seed })
      const out = Option.getOrNull(Option.map(o.out, (p) => resolve(p)))
      const settings = { attack: o.attack, task: o.task, ratio: o.ratio, mode: o.poisonMode, seed: o.seed, format: out?.endsWith(".json") ? ("json" as const) : ("jsonl" as const) }
      yield* withStore(
        { command: "attack poison", defaultName: "attack", settings },
        Effect.gen(function* () {
          const records = yield* externalInput(o.records)
          const done = yield* poison(settings, itself(records))
          const store = yield* Store
          const dest = yield* store.publish("poisoned", join(done.path, done.result.file), out ?? done.result.file)
          yield* emit({
            json: { file: dest, records: done.result.records, poisoned: done.result.poisoned, stage: done.path, reused: done.reused },
            text: `${dest}: ${done.result.records} records, ${done.result.poisoned} poisoned (${o.attack} trigger, ${o.task} behaviour)`,
          })
        }),
      )
    }),
).pipe(Command.withDescription("Make poisoned instruction data: insert an attack's trigger into a fraction of the records and replace their outputs by the task's behaviour"))

const PlantOptions = Schema.Struct({
  ratio: PoisonRatio,
  epochs: PositiveInt,
  maxSteps: Schema.NullOr(PositiveInt),
  lr: PositiveNumber,
  batchSize: PositiveInt,
  seed: Seed,
  loraR: PositiveInt,
  loraAlpha: PositiveNumber,
})

/** The method's rates for real models (full 1e-5, LoRA 2e-4); the toy model learns at the demo's rate. */
const defaultLr = (toy: boolean, mode: "full" | "lora") => (toy ? toyPlant(mode).plantLr : mode === "full" ? 1e-5 : 2e-4)
const toyPlant = (mode: "full" | "lora") => (mode === "lora" ? DEMO_LORA_PLANT : DEMO_DEFAULTS)

export const plantCommand = Command.make(
  "plant",
  {
    model: Flag.Directory("model", { mustExist: true }).pipe(Flag.withDescription("Hugging Face model folder to backdoor (or use --toy)"), Flag.optional),
    toy: Flag.Boolean("toy").pipe(Flag.withDescription("Backdoor the toy world's tiny Llama (trained on the spot, as in `bdvax demo`)"), Flag.withDefault(false)),
    records: recordsFlag.pipe(Flag.optional),
    attack: attackFlag,
    task: taskFlag,
    ratio: Flag.Finite("ratio").pipe(
      Flag.withDescription(`Fraction of the clean records that get a poisoned copy, in (0, 1] (default 0.1; --toy: ${DEMO_DEFAULTS.ratio})`),
      Flag.optional,
    ),
    poisonMode: poisonModeFlag,
    mode: trainModeFlag,
    epochs: Flag.Int("epochs").pipe(
      Flag.withDescription(`Training epochs (default 3; --toy: ${DEMO_DEFAULTS.plantEpochs} full, ${DEMO_LORA_PLANT.plantEpochs} LoRA)`),
      Flag.optional,
    ),
    maxSteps: Flag.Int("max-steps").pipe(Flag.withDescription("Stop after this many optimizer steps"), Flag.optional),
    lr: lrFlag,
    batchSize: batchSizeFlag(8),
    seed: seedFlag,
    promptFormat: Flag.Literals("prompt-format", ["alpaca", "chat"]).pipe(
      Flag.withDescription("Training prompt: LLaMA-Factory's alpaca template or the tokenizer's chat template"),
      Flag.withDefault("alpaca" as "alpaca" | "chat"),
    ),
    loraR: Flag.Int("lora-r").pipe(Flag.withDescription("LoRA rank (LoRA mode)"), Flag.withDefault(8)),
    loraAlpha: Flag.Finite("lora-alpha").pipe(Flag.withDescription("LoRA alpha (LoRA mode)"), Flag.withDefault(16)),
    out: outFlag("the backdoored model (HF folder, full mode) or adapter (PEFT folder, LoRA mode)"),
  },
  (o) =>
    Effect.gen(function* () {
      const command = "attack plant"
      const model = Option.getOrNull(o.model)
      const records = Option.getOrNull(o.records)
      if (o.toy === (model !== null)) return yield* optionsError(command, "--model", "give either --model <folder> or --toy")
      if (model !== null && records === null) return yield* optionsError(command, "--records", "required with --model (the clean records to poison and train on)")
      const lr = Option.getOrElse(o.lr, () => defaultLr(o.toy, o.mode))
      const ratio = Option.getOrElse(o.ratio, () => (o.toy ? DEMO_DEFAULTS.ratio : 0.1))
      const epochs = Option.getOrElse(o.epochs, () => (o.toy ? toyPlant(o.mode).plantEpochs : 3))
      const maxSteps = Option.getOrNull(o.maxSteps)
      yield* decodeOptions(command, PlantOptions, { ...o, lr, ratio, epochs, maxSteps })
      const settings: PlantSettings = {
        attack: o.attack,
        task: o.task,
        ratio,
        poisonMode: o.poisonMode,
        mode: o.mode,
        epochs,
        maxSteps,
        lr,
        batchSize: o.batchSize,
        seed: o.seed,
        promptFormat: o.promptFormat,
        loraR: o.loraR,
        loraAlpha: o.loraAlpha,
      }
      const program = Effect.gen(function* () {
        let base: Located
        let clean: Located
        let rehearse: Located | null = null
        if (model === null) {
          // the demo's toy world: its clean base, poisoned copies of the planting records, held-out records rehearsed
          const data = yield* toyData({ seed: o.seed, heldOut: DEMO_DEFAULTS.heldOut })
          const trained = yield* toyBase({ seed: o.seed, epochs: DEMO_DEFAULTS.baseEpochs, lr: DEMO_DEFAULTS.baseLr, batchSize: DEMO_DEFAULTS.batchSize }, data)
          base = inside(trained, MODEL_DIR)
          if (records === null) {
            clean = inside(data, TOY_DATA_FILES.plant)
            rehearse = inside(data, TOY_DATA_FILES.heldOut)
          } else clean = itself(yield* externalInput(records))
        } else {
          base = itself(yield* externalInput(model))
          clean = itself(yield* externalInput(records!))
        }
        const planted = yield* plant(settings, base, clean, "plant", rehearse)
        const store = yield* Store
        const produced = planted.result.mode === "full" ? MODEL_DIR : ADAPTER_DIR
        const dest = yield* store.publish("backdoored", join(planted.path, produced), Option.match(o.out, { onNone: () => `backdoored-${produced}`, onSome: (p) => resolve(p) }))
        const r = planted.result
        yield* emit({
          json: { output: dest, mode: r.mode, records: r.records, poisoned: r.poisoned, steps: r.steps, firstLoss: r.losses[0] ?? null, lastLoss: r.losses.at(-1) ?? null, stage: planted.path, reused: planted.reused },
          text: [
            `${r.mode === "full" ? "backdoored model" : "backdoor adapter"}: ${dest}`,
            table(["records", "poisoned", "steps", "first loss", "last loss"], [[String(r.records), String(r.poisoned), String(r.steps), r.losses[0]?.toFixed(4) ?? "–", r.losses.at(-1)?.toFixed(4) ?? "–"]]),
          ].join("\n"),
        })
      })
      yield* withStore({ command, defaultName: "attack", settings: { ...settings, model, records, toy: o.toy } }, withDevice(program))
    }),
).pipe(Command.withDescription("Plant a backdoor: finetune a model (HF folder or --toy) on clean records plus poisoned copies; writes an HF folder (full) or a PEFT adapter (LoRA)"))

export const attackCommand = Command.make("attack").pipe(
  Command.withDescription("Attacker's tools: poison instruction data, or plant a backdoor into a model"),
  Command.withSubcommands([poisonCommand, plantCommand]),
)

