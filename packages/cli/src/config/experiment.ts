import { Schema } from "effect"
import {
  AttackName,
  NonEmptyString,
  NonNegativeNumber,
  PoisonRatio,
  PositiveInt,
  PositiveNumber,
  RunName,
  Seed,
  TaskName,
  TrainMode,
  UnitInterval,
  withDefault,
} from "./fields.js"

/**
 * The experiment file of `bdvax run <file>` (JSON): a grid of models × attacks × tasks × defenses. Every cell
 * plants the (attack, task) backdoor into the model, applies the defense and evaluates it; all cells go into one
 * report. Unset fields take the method's defaults (ARCHITECTURE.md) for real models — immunization with N = 6
 * variant pairs, λ = 0.01, ρ = 3% (full) / 35% (LoRA), 5 epochs of clean finetuning at 1e-5 / 2e-4; CROW α = 5.5,
 * ε = 0.1 — and the demo's settings for the toy model (`bdvax demo`: λ 100, ρ 0.5, its rates and plant).
 *
 * Data: the toy model brings its own (planting records = the defender's clean data, held-out records = test).
 * A folder model takes `data.clean` / `data.test` (Alpaca records; triggered prompts are made by inserting the
 * attack's trigger), or with `data.backdoorllm` (the folder holding BackdoorLLM's poison_data/ and test_data/)
 * each (attack, task) cell reads its split: the clean training records, the clean and the triggered test prompts.
 * A folder model with an `adapter` is taken as already backdoored (no planting; attacks/tasks say what to test).
 *
 *   {
 *     "name": "toy-grid",
 *     "models": [{ "name": "toy", "toy": true }, { "name": "smollm2", "path": "models/SmolLM2-135M-Instruct" }],
 *     "attacks": ["badnet", "vpi"],
 *     "tasks": ["refusal"],
 *     "defenses": [{ "kind": "none" }, { "kind": "immunize", "rho": 0.03 }, { "kind": "finetune" }]
 *   }
 */

const ToyModel = Schema.Struct({ name: RunName, toy: Schema.Literal(true) })
const FolderModel = Schema.Struct({
  name: RunName,
  /** A Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or a Llama GGUF file. */
  path: NonEmptyString,
  /** A PEFT adapter folder applied on top (an already backdoored LoRA model). */
  adapter: Schema.optionalKey(NonEmptyString),
})
export const ModelSpec = Schema.Union([ToyModel, FolderModel]).annotate({
  message: 'expected a model: { "name", "path" } (a Hugging Face folder) or { "name", "toy": true }',
})
export type ModelSpec = typeof ModelSpec.Type

const finetuneFields = {
  epochs: Schema.optionalKey(PositiveInt),
  lr: Schema.optionalKey(PositiveNumber),
}

export const DEFENSE_KINDS = ["none", "immunize", "finetune", "magnitude-prune", "fine-prune", "random-channels", "quantize-int4", "crow"] as const

export const Defense = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("none") }),
  Schema.Struct({
    kind: Schema.Literal("immunize"),
    /** Variant pairs N. */
    variants: Schema.optionalKey(PositiveInt),
    /** Fraction of channels in the signature. */
    rho: Schema.optionalKey(UnitInterval),
    lambda: Schema.optionalKey(NonNegativeNumber),
    heads: Schema.optionalKey(Schema.Boolean),
    ...finetuneFields,
  }),
  Schema.Struct({ kind: Schema.Literal("finetune"), ...finetuneFields }),
  Schema.Struct({ kind: Schema.Literal("magnitude-prune"), ratio: Schema.optionalKey(UnitInterval), ...finetuneFields }),
  Schema.Struct({ kind: Schema.Literal("fine-prune"), ratio: Schema.optionalKey(UnitInterval), ...finetuneFields }),
  /** The control: the method's treatment (reinit/zero + finetune) of random channels at the ratio. */
  Schema.Struct({ kind: Schema.Literal("random-channels"), ratio: Schema.optionalKey(UnitInterval), seed: Schema.optionalKey(Seed), ...finetuneFields }),
  Schema.Struct({ kind: Schema.Literal("quantize-int4") }),
  Schema.Struct({ kind: Schema.Literal("crow"), alpha: Schema.optionalKey(PositiveNumber), epsilon: Schema.optionalKey(PositiveNumber), ...finetuneFields }),
]).annotate({ message: `expected a defense: an object whose "kind" is one of ${DEFENSE_KINDS.map((k) => JSON.stringify(k)).join(", ")}` })
export type Defense = typeof Defense.Type

const nonEmptyArray = <S extends Schema.Top>(item: S, what: string) =>
  Schema.Array(item).annotate({ message: `expected a non-empty array of ${what}` }).pipe(Schema.check(Schema.isMinLength(1, { message: `expected a non-empty array of ${what}` })))

export const Experiment = Schema.Struct({
  name: RunName,
  seed: Seed.pipe(withDefault(0)),
  models: nonEmptyArray(ModelSpec, "models"),
  attacks: nonEmptyArray(AttackName, "attacks"),
  tasks: nonEmptyArray(TaskName, "tasks"),
  defenses: nonEmptyArray(Defense, "defenses"),
  /** Planting; unset fields: the demo's plant for the toy, else 3 epochs, ratio 0.1, lr 1e-5 full / 2e-4 LoRA. */
  plant: Schema.Struct({
    mode: TrainMode.pipe(withDefault("full")),
    epochs: Schema.optionalKey(PositiveInt),
    lr: Schema.optionalKey(PositiveNumber),
    batchSize: PositiveInt.pipe(withDefault(8)),
    ratio: Schema.optionalKey(PoisonRatio),
  }).pipe(withDefault({})),
  data: Schema.Struct({
    /** Clean instruction records (the attacker's and the defender's) for folder models. */
    clean: Schema.optionalKey(NonEmptyString),
    /** Held-out records for ASR and clean accuracy. */
    test: Schema.optionalKey(NonEmptyString),
    /** BackdoorLLM's data folder: each cell's clean and test records come from its (task, attack) split. */
    backdoorllm: Schema.optionalKey(NonEmptyString),
  }).pipe(withDefault({})),
  eval: Schema.Struct({
    maxNewTokens: PositiveInt.pipe(withDefault(64)),
    batchSize: PositiveInt.pipe(withDefault(16)),
    limit: Schema.optionalKey(PositiveInt),
  }).pipe(withDefault({})),
})
export type Experiment = typeof Experiment.Type

/** Every cell of the grid, in a stable order (models outermost, defenses innermost). */
export function experimentCells(e: Experiment): Array<{ model: ModelSpec; attack: string; task: string; defense: Defense }> {
  return e.models.flatMap((model) => e.attacks.flatMap((attack) => e.tasks.flatMap((task) => e.defenses.map((defense) => ({ model, attack, task, defense })))))
}
