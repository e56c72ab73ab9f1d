import { Effect, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { decodeJsonFile } from "../config/decode.js"
import { Experiment, experimentCells } from "../config/experiment.js"
import { PositiveInt, PositiveNumber, UnitInterval } from "../config/fields.js"
import { decodeOptions } from "../config/options.js"
import { NotWiredError } from "../errors.js"
import { note } from "../progress/progress.js"
import { adapterFlag, epochsFlag, lrFlag, modelFlag, outFlag, recordsFlag, seedFlag, trainModeFlag } from "./common-flags.js"

/**
 * Commands whose pipelines (@bdvax/signature, @bdvax/purify) are connected in the next step. They are registered
 * with their options so `--help` documents them and their options are validated; running one fails with a
 * NotWiredError after validation.
 */
const notWired = (command: string, what: string) =>
  new NotWiredError({ command, message: `bdvax ${command}: not wired yet — ${what} is connected to the CLI in the next step` })

const SignatureOptions = Schema.Struct({
  variants: PositiveInt,
  rho: Schema.NullOr(UnitInterval),
  lambda: PositiveNumber,
  epochs: PositiveInt,
  lr: Schema.NullOr(PositiveNumber),
})

export const signatureCommand = Command.make(
  "signature",
  {
    model: modelFlag,
    adapter: adapterFlag,
    records: recordsFlag,
    mode: trainModeFlag,
    variants: Flag.Int("variants").pipe(Flag.withDescription("Variant pairs N (synthetic key/behaviour pairs, each a poisoned and a clean finetune)"), Flag.withDefault(6)),
    rho: Flag.Finite("rho").pipe(Flag.withDescription("Fraction of channels in the signature (default 0.03 full, 0.35 LoRA)"), Flag.optional),
    lambda: Flag.Finite("lambda").pipe(Flag.withDescription("Weight λ of the cross-variant cosine agreement in the channel score (Eq. 2)"), Flag.withDefault(0.01)),
    epochs: epochsFlag(1),
    lr: lrFlag,
    seed: seedFlag,
    heads: Flag.Boolean("heads").pipe(Flag.withDescription("Score attention heads too"), Flag.withDefault(false)),
    out: outFlag("the signature file"),
  },
  (o) =>
    Effect.gen(function* () {
      yield* decodeOptions("signature", SignatureOptions, { ...o, rho: Option.getOrNull(o.rho), lr: Option.getOrNull(o.lr) })
      return yield* notWired("signature", "@bdvax/signature (variant pairs, deltas, channel scores)")
    }),
).pipe(Command.withDescription("Estimate the backdoor signature of a model: train N variant pairs, score channels by Eq. 2, keep the top ρ"))

const PurifyOptions = Schema.Struct({ epochs: PositiveInt, lr: Schema.NullOr(PositiveNumber) })

export const purifyCommand = Command.make(
  "purify",
  {
    model: modelFlag,
    adapter: adapterFlag,
    signature: Flag.File("signature", { mustExist: true }).pipe(Flag.withDescription("Signature file written by `bdvax signature`")),
    records: recordsFlag,
    epochs: epochsFlag(5),
    lr: lrFlag,
    seed: seedFlag,
    heads: Flag.Boolean("heads").pipe(Flag.withDescription("Suppress the signature's attention heads too"), Flag.withDefault(false)),
    out: outFlag("the purified model (HF folder) or adapter (PEFT folder)"),
  },
  (o) =>
    Effect.gen(function* () {
      yield* decodeOptions("purify", PurifyOptions, { epochs: o.epochs, lr: Option.getOrNull(o.lr) })
      return yield* notWired("purify", "@bdvax/purify (re-initialisation / LoRA zeroing, light clean finetune)")
    }),
).pipe(Command.withDescription("Purify a model with a signature: re-initialise (full) or zero (LoRA) the signature's channels, then finetune on clean data"))

export const SANITY_CHECKS = ["attention-only", "mlp-only", "consecutive-blocks", "shuffled-blocks"] as const

export const sanityCommand = Command.make(
  "sanity",
  {
    model: modelFlag,
    adapter: adapterFlag,
    records: recordsFlag,
    check: Flag.Literals("check", SANITY_CHECKS).pipe(Flag.withDescription("Ablation: keep only attention or MLP updates, or consecutive / shuffled blocks")),
    seed: seedFlag,
    out: outFlag("the sanity-check results"),
  },
  () => Effect.fail(notWired("sanity", "@bdvax/purify's sanity-check ablations")),
).pipe(Command.withDescription("Sanity checks of §4.1: ablate parts of the backdoor update and report whether the backdoor survives"))

export const runCommand = Command.make(
  "run",
  {
    experiment: Argument.File("experiment", { mustExist: true }).pipe(Argument.withDescription("Experiment file (JSON): models × attacks × tasks × defenses")),
  },
  (o) =>
    Effect.gen(function* () {
      const experiment = yield* decodeJsonFile(Experiment, o.experiment)
      const cells = experimentCells(experiment)
      yield* note(`${o.experiment}: experiment "${experiment.name}" is valid: ${cells.length} cell(s)`)
      return yield* notWired("run", "the experiment grid (plant → defend → evaluate per cell)")
    }),
).pipe(Command.withDescription("Run an experiment file: every cell of models × attacks × tasks × defenses, all into one report"))
