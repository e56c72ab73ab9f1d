import { join, resolve } from "node:path"
import { readInstructions } from "@bdvax/attacks"
import { DEFAULT_LR, DEFAULT_NUM_VARIANTS, DEFAULT_POISON_RATIO, DEFAULT_RHO } from "@bdvax/signature"
import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { NonNegativeNumber, PoisonRatio, PositiveInt, PositiveNumber, Seed, UnitInterval } from "../config/fields.js"
import { decodeOptions } from "../config/options.js"
import { attempt, withDevice, withStore } from "../context.js"
import { emit, table } from "../output.js"
import { signaturePipeline } from "../pipeline/immunize.js"
import { SIGNATURE_FILE } from "../pipeline/signature.js"
import type { VariantPairSettings } from "../pipeline/variant-pair.js"
import { formatSeconds } from "../report/summary.js"
import { Store } from "../store/store.js"
import { adapterFlag, outFlag, recordsFlag } from "./common-flags.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT } from "../pipeline/demo.js"
import { checkSuspectFlags, suspectSource, toySettings } from "./suspect.js"

/**
 * `bdvax signature`: the backdoor signature of a suspicious model — N variant pairs (one stage each, so an
 * interrupted run keeps the finished pairs), Eq. 2 scores, the top-ρ channels — written as a signature file.
 * Defaults are the paper's for real models (N 6, λ 0.01, ρ 3% full / 35% LoRA, lr 1e-5 / 2e-4) and the demo's
 * for `--toy` (λ 100, ρ 0.5, lr 1e-3, the demo's signature seed; see the demo for why).
 */
const SignatureOptions = Schema.Struct({
  variants: PositiveInt,
  subset: Schema.NullOr(PositiveInt),
  poisonRatio: PoisonRatio,
  epochs: PositiveInt,
  maxSteps: Schema.NullOr(PositiveInt),
  lr: PositiveNumber,
  batchSize: PositiveInt,
  lambda: NonNegativeNumber,
  rho: UnitInterval,
  rhoHeads: Schema.NullOr(UnitInterval),
  seed: Seed,
})

const optionalInt = (name: string, description: string) => Flag.Int(name).pipe(Flag.withDescription(description), Flag.optional)
const optionalNumber = (name: string, description: string) => Flag.Finite(name).pipe(Flag.withDescription(description), Flag.optional)

export const signatureFlags = {
  model: Flag.Path("model", { mustExist: true }).pipe(Flag.withDescription("The suspicious model: HF folder or GGUF file (the base, with --adapter)"), Flag.optional),
  adapter: adapterFlag,
  records: recordsFlag.pipe(Flag.optional),
  toy: Flag.Boolean("toy").pipe(Flag.withDescription("The demo's backdoored toy model and clean records (its stages run in the run folder, about a minute)"), Flag.withDefault(false)),
  mode: Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("With --toy: the toy backdoor in a full model or in a LoRA adapter (otherwise --adapter decides)"), Flag.withDefault("full" as "full" | "lora")),
  variants: optionalInt("variants", `Variant pairs N: synthetic key/behaviour pairs, each a poisoned and a clean finetune (default ${DEFAULT_NUM_VARIANTS})`),
  subset: optionalInt("subset", "Clean records per variant |D_c^i| (default half the records, at most 500; --toy 40)"),
  poisonRatio: optionalNumber("poison-ratio", `Fraction of a variant's records that get a poisoned copy (default ${DEFAULT_POISON_RATIO}; --toy 0.5)`),
  epochs: optionalInt("epochs", "Epochs of each variant finetune (default 3; --toy 6)"),
  maxSteps: optionalInt("max-steps", "Stop each variant finetune after this many optimizer steps"),
  lr: optionalNumber("lr", `Learning rate of the variant finetunes (default ${DEFAULT_LR.full} full / ${DEFAULT_LR.adapter} adapter; --toy 1e-3 / 1e-2)`),
  batchSize: optionalInt("batch-size", "Examples per batch (default 4; --toy 8)"),
  lambda: optionalNumber("lambda", "Weight λ of the cross-variant cosine agreement in Eq. 2 (default 0.01; --toy 100)"),
  rho: optionalNumber("rho", `Fraction of MLP channels in the signature (default ${DEFAULT_RHO.full} full / ${DEFAULT_RHO.adapter} adapter; --toy ${DEMO_DEFAULTS.rho} / ${DEMO_LORA_PLANT.rho})`),
  rhoHeads: optionalNumber("rho-heads", "Fraction of attention heads to select too (default none; heads are always scored)"),
  seed: optionalInt("seed", "Seed of the variants and their data (default 0; --toy the demo's)"),
  out: outFlag("the signature file (JSON)"),
}

type SignatureFlags = { readonly [K in keyof typeof signatureFlags]: (typeof signatureFlags)[K] extends Flag.Flag<infer A> ? A : never }

/** Resolved variant-pair and scoring settings of the flags (toy defaults with --toy), validated. */
export const signatureSettingsOf = (command: string, o: SignatureFlags) =>
  Effect.gen(function* () {
    const toy = o.toy ? toySettings(o.mode) : null
    const adapterMode = toy ? toy.mode === "lora" : Option.isSome(o.adapter)
    const get = <A>(flag: Option.Option<A>, real: A, toyValue: A) => Option.getOrElse(flag, () => (toy ? toyValue : real))
    const raw = {
      variants: get(o.variants, DEFAULT_NUM_VARIANTS, toy?.variants ?? 0),
      subset: Option.getOrNull(o.subset) ?? (toy ? toy.variantSubset : null),
      poisonRatio: get(o.poisonRatio, DEFAULT_POISON_RATIO, toy?.variantRatio ?? 0),
      epochs: get(o.epochs, 3, toy?.variantEpochs ?? 0),
      maxSteps: Option.getOrNull(o.maxSteps),
      lr: get(o.lr, adapterMode ? DEFAULT_LR.adapter : DEFAULT_LR.full, toy?.variantLr ?? 0),
      batchSize: get(o.batchSize, 4, toy?.batchSize ?? 0),
      lambda: get(o.lambda, 0.01, toy?.lambda ?? 0),
      rho: get(o.rho, adapterMode ? DEFAULT_RHO.adapter : DEFAULT_RHO.full, toy?.rho ?? 0),
      rhoHeads: Option.getOrNull(o.rhoHeads),
      seed: get(o.seed, 0, toy?.signatureSeed ?? 0),
    }
    return yield* decodeOptions(command, SignatureOptions, raw)
  })

export const pairSettingsOf = (s: typeof SignatureOptions.Type, subset: number): VariantPairSettings => ({
  numVariants: s.variants,
  seed: s.seed,
  subsetSize: subset,
  poisonRatio: s.poisonRatio,
  epochs: s.epochs,
  maxSteps: s.maxSteps,
  lr: s.lr,
  batchSize: s.batchSize,
  promptFormat: "alpaca",
  excludeTriggers: [],
})

/** The signature stages for the flags: the pairs and the scoring, inside a store and device. */
export const signatureProgram = (command: string, o: SignatureFlags) =>
  Effect.gen(function* () {
    const s = yield* signatureSettingsOf(command, o)
    const source = yield* suspectSource(o)
    // the library's default subset: half the clean pool (so variants draw different subsets), at most 500
    const pool = yield* attempt(command, () => readInstructions(source.clean.path))
    const subset = s.subset ?? Math.max(1, Math.min(500, Math.ceil(pool.length / 2)))
    const built = yield* signaturePipeline(pairSettingsOf(s, subset), { lambda: s.lambda, rho: s.rho, rhoHeads: s.rhoHeads, criterion: "total" }, source.suspect, source.clean)
    return { settings: s, source, built }
  })

export const signatureCommand = Command.make("signature", signatureFlags, (o) =>
  Effect.gen(function* () {
    yield* checkSuspectFlags("signature", o)
    const settings = yield* signatureSettingsOf("signature", o)
    const program = Effect.gen(function* () {
      const { built } = yield* signatureProgram("signature", o)
      const store = yield* Store
      const dest = yield* store.publish("signature", join(built.signature.path, SIGNATURE_FILE), Option.match(o.out, { onNone: () => SIGNATURE_FILE, onSome: (p) => resolve(p) }))
      const r = built.signature.result
      yield* emit({
        json: { file: dest, ...r, pairs: built.pairs.map((p) => ({ variant: p.result.variant, stage: p.path, reused: p.reused, wallSeconds: p.result.wallSeconds })), wallSeconds: built.wallSeconds },
        text: [
          table(
            ["variant", "key", "behaviour", "poisoned copies", "wall time"],
            built.pairs.map((p) => [
              String(p.result.variant.index),
              JSON.stringify(p.result.variant.trigger),
              JSON.stringify(p.result.variant.behaviour),
              String(p.result.poisonedCopies),
              formatSeconds(p.result.wallSeconds),
            ]),
          ),
          "",
          `signature: ${r.channels} MLP channels${r.heads > 0 ? ` and ${r.heads} heads` : ""} (ρ = ${r.rho}, λ = ${r.lambda}; ${r.perLayer.map((x) => `layer ${x.layer}: ${x.channels}`).join(", ")})`,
          `file: ${dest}`,
        ].join("\n"),
      })
    })
    const model = Option.getOrNull(o.model)
    yield* withStore({ command: "signature", defaultName: "signature", settings: { ...settings, model, adapter: Option.getOrNull(o.adapter), records: Option.getOrNull(o.records), toy: o.toy, mode: o.mode } }, withDevice(program))
  }),
).pipe(Command.withDescription("Estimate the backdoor signature of a model: train N variant pairs (one resumable stage each), score channels by Eq. 2, keep the top ρ"))
