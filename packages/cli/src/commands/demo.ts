import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { NonNegativeInt, NonNegativeNumber, PoisonRatio, PositiveInt, PositiveNumber, Seed, UnitInterval } from "../config/fields.js"
import { decodeOptions, optionsError } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { emit, table } from "../output.js"
import { BASELINE_METHODS, type BaselineMethod } from "../pipeline/defense.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT, type DemoSettings, runDemo, SIGNATURE_SEED_OFFSET, signatureSeedFor } from "../pipeline/demo.js"
import { SUMMARY_HEADERS, summaryCells } from "../report/summary.js"

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
  signatureSeed: Seed,
  variants: PositiveInt,
  variantSubset: PositiveInt,
  variantRatio: PoisonRatio,
  variantEpochs: PositiveInt,
  variantLr: PositiveNumber,
  variantMaxSteps: Schema.NullOr(PositiveInt),
  lambda: NonNegativeNumber,
  rho: UnitInterval,
  purifyEpochs: PositiveInt,
  purifyLr: PositiveNumber,
  purifyMaxSteps: Schema.NullOr(PositiveInt),
  randomDraws: NonNegativeInt,
  baselines: Schema.Array(Schema.Literals(BASELINE_METHODS)),
})

const d = DEMO_DEFAULTS
const l = DEMO_LORA_PLANT
const intFlag = (name: string, description: string, value: number) => Flag.Int(name).pipe(Flag.withDescription(description), Flag.withDefault(value))
const numberFlag = (name: string, description: string, value: number) => Flag.Finite(name).pipe(Flag.withDescription(description), Flag.withDefault(value))
/** A flag whose default depends on --mode. */
const modalFlag = (kind: "int" | "number", name: string, description: string, full: number, lora: number) =>
  (kind === "int" ? Flag.Int(name) : Flag.Finite(name)).pipe(Flag.withDescription(`${description} (default ${full}; --mode lora: ${lora})`), Flag.optional)
const stepsFlag = (name: string, description: string) => Flag.Int(name).pipe(Flag.withDescription(description), Flag.optional)

/** "finetune,crow" → the listed baselines; "none" → none. */
function parseBaselines(text: string): BaselineMethod[] | null {
  if (text.trim() === "none") return []
  const names = text.split(",").map((x) => x.trim()).filter((x) => x !== "")
  return names.every((n): n is BaselineMethod => (BASELINE_METHODS as readonly string[]).includes(n) && n !== "random-channels") ? names : null
}

export const demoFlags = {
  seed: intFlag("seed", "Seed of the data split, the init, training order and triggers", d.seed),
  heldOut: intFlag("held-out", "Toy records held out of planting for evaluation", d.heldOut),
  baseEpochs: intFlag("base-epochs", "Epochs of the clean base model's training", d.baseEpochs),
  baseLr: numberFlag("base-lr", "Learning rate of the clean base model", d.baseLr),
  plantEpochs: modalFlag("int", "plant-epochs", "Epochs of planting the backdoor", d.plantEpochs, l.plantEpochs),
  plantLr: modalFlag("number", "plant-lr", "Learning rate of planting", d.plantLr, l.plantLr),
  batchSize: intFlag("batch-size", "Training batch size (planting, variant pairs, every defense's finetune)", d.batchSize),
  mode: Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("Plant (and defend) a full model or a LoRA adapter"), Flag.withDefault(d.mode)),
  ratio: numberFlag("ratio", "Fraction of planting records that get a poisoned copy", d.ratio),
  maxNewTokens: intFlag("max-new-tokens", "Generation budget per prompt in evaluation", d.maxNewTokens),
  evalBatchSize: intFlag("eval-batch-size", "Prompts per generation batch", d.evalBatchSize),
  evalLimit: Flag.Int("eval-limit").pipe(Flag.withDescription("Evaluate only the first n held-out records"), Flag.optional),
  signatureSeed: Flag.Int("signature-seed").pipe(
    Flag.withDescription(`Seed of the defender's synthetic variants and their data (default --seed + ${SIGNATURE_SEED_OFFSET})`),
    Flag.optional,
  ),
  variants: intFlag("variants", "Variant pairs N of the signature", d.variants),
  variantSubset: intFlag("variant-subset", "Clean records per variant (|D_c^i|)", d.variantSubset),
  variantRatio: numberFlag("variant-ratio", "Fraction of a variant's records that get a poisoned copy", d.variantRatio),
  variantEpochs: intFlag("variant-epochs", "Epochs of each variant finetune", d.variantEpochs),
  variantLr: modalFlag("number", "variant-lr", "Learning rate of the variant finetunes", d.variantLr, l.variantLr),
  variantMaxSteps: stepsFlag("variant-max-steps", "Stop each variant finetune after this many steps"),
  lambda: numberFlag("lambda", "λ of Eq. 2 (toy scale needs ~100; the paper's 0.01 is shown as a reference row)", d.lambda),
  rho: modalFlag("number", "rho", "Fraction of MLP channels in the signature (and of every pruning baseline)", d.rho, l.rho),
  purifyEpochs: intFlag("purify-epochs", "Epochs of the light clean finetune (purification and every baseline)", d.purifyEpochs),
  purifyLr: modalFlag("number", "purify-lr", "Learning rate of the light clean finetune", d.purifyLr, l.purifyLr),
  purifyMaxSteps: stepsFlag("purify-max-steps", "Stop each light finetune after this many steps"),
  randomDraws: intFlag("random-draws", "Draws of the random-channel control (0: none)", d.randomDraws),
  baselines: Flag.String("baselines").pipe(
    Flag.withDescription(`Comma-separated baselines: ${BASELINE_METHODS.filter((m) => m !== "random-channels").join(", ")} (or "none")`),
    Flag.withDefault(d.baselines.join(",")),
  ),
}

/** The parsed flags (Option for those whose default depends on --mode or --seed). */
export type DemoFlags = { readonly [K in keyof typeof demoFlags]: (typeof demoFlags)[K] extends Flag.Flag<infer A> ? A : never }

/**
 * The demo's settings from its flags: per-mode defaults for the flags that have them, the signature seed derived
 * from --seed unless given, every value validated (a bad one fails naming its flag).
 */
export const demoSettingsOf = (o: DemoFlags) =>
  Effect.gen(function* () {
    const lora = o.mode === "lora"
    const pick = (flag: Option.Option<number>, full: number, adapter: number) => Option.getOrElse(flag, () => (lora ? adapter : full))
    const baselines = parseBaselines(o.baselines)
    if (baselines === null) return yield* optionsError("demo", "--baselines", `expected a comma-separated list of ${BASELINE_METHODS.filter((m) => m !== "random-channels").join(", ")}, or "none"; got ${JSON.stringify(o.baselines)}`)
    const settings: DemoSettings = yield* decodeOptions("demo", DemoOptions, {
      ...o,
      plantEpochs: pick(o.plantEpochs, d.plantEpochs, l.plantEpochs),
      plantLr: pick(o.plantLr, d.plantLr, l.plantLr),
      variantLr: pick(o.variantLr, d.variantLr, l.variantLr),
      rho: pick(o.rho, d.rho, l.rho),
      purifyLr: pick(o.purifyLr, d.purifyLr, l.purifyLr),
      signatureSeed: Option.getOrElse(o.signatureSeed, () => signatureSeedFor(o.seed)),
      evalLimit: Option.getOrNull(o.evalLimit),
      variantMaxSteps: Option.getOrNull(o.variantMaxSteps),
      purifyMaxSteps: Option.getOrNull(o.purifyMaxSteps),
      baselines,
    })
    if (settings.variantSubset > 84 - settings.heldOut)
      return yield* optionsError("demo", "--variant-subset", `at most ${84 - settings.heldOut} (the planting records the defender has), got ${settings.variantSubset}`)
    return settings
  })

export const demoCommand = Command.make("demo", demoFlags, (o) =>
  Effect.gen(function* () {
    const settings = yield* demoSettingsOf(o)
    const outcome = yield* withStore({ command: "demo", defaultName: "demo", settings }, withDevice(runDemo(settings)))
    yield* emit({
      json: outcome,
      text: [
        table(SUMMARY_HEADERS, outcome.conditions.map(summaryCells)),
        "",
        `signature: ${outcome.signature.channels} MLP channels (${outcome.signature.perLayer.map((x) => `layer ${x.layer}: ${x.channels}`).join(", ")})`,
        `report: ${outcome.report["report.md"]} (plots: report.svg, training.svg)`,
        `run folder: ${outcome.runDir} (re-run to resume; finished stages are reused)`,
      ].join("\n"),
    })
  }),
).pipe(
  Command.withDescription(
    "The embedded demo on the toy world: train a tiny Llama, plant a BadNets refusal backdoor, estimate its signature from synthetic variants, purify, compare with baselines, write a report",
  ),
)
