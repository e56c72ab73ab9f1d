import { join } from "node:path"
import { Effect } from "effect"
import { percent } from "../output.js"
import type { ConditionSummary } from "../report/data.js"
import { Store, type StageArtifact } from "../store/store.js"
import { type BaselineMethod, type BaselineSettings, baselineStage, type DefenseStageResult, defendedModel, type FinetuneSettings, purifyStage, signatureIn } from "./defense.js"
import { evaluate, type EvaluateResult, type EvaluateSettings } from "./evaluate.js"
import { signaturePipeline } from "./immunize.js"
import { inside } from "./located.js"
import { MODEL_DIR, type ModelLocation } from "./model-io.js"
import { plant, plantedModel, type PlantResult, type PlantSettings } from "./plant.js"
import { type ReportCondition, report, summaryOf, meanResult } from "./report.js"
import { signatureReselect } from "./signature.js"
import { TOY_DATA_FILES, toyBase, toyData } from "./toy.js"
import type { VariantPairSettings } from "./variant-pair.js"

/**
 * The embedded demo: the toy world end to end on the CPU, every step a resumable stage —
 *
 *   toy-data → toy-base (clean instruction following, seeded) → plant (BadNets "BadMagic" → refusal)
 *     → eval-base, eval-backdoored
 *     → variant-pair-0 … variant-pair-(N−1) → signature            (the defender: suspicious model + clean data)
 *     → purify (signature reinit + light finetune)                  and its references: surgery only, paper's λ
 *     → baselines at the same budget: finetuning, magnitude pruning, fine-pruning (Wanda), INT4 RTN, CROW,
 *       and the control "random channels, same ratio" (several draws, averaged)
 *     → eval-<condition> for every defended model → report (summary table, plots, detailed tables)
 *
 * The defender's stages get the backdoored model and the 60 planting records as clean data — not the trigger,
 * not the behaviour, not the held-out prompts the ASR is measured on. Its variants use generic synthetic keys.
 *
 * Toy-scale settings (see README): λ = 100 rather than the paper's 0.01 — per-channel delta norms are ~0.1 here
 * (a 7B model finetuned at 1e-5 moves each channel far less), so at λ = 0.01 the cosine term (in [0, 1]) adds at
 * most 0.01 (the norms' standard deviation is ~0.01) and Eq. 2 ranks essentially by the norm, missing the
 * association machinery; the "paper's λ" row shows it. Rates are the tiny model's, not a 7B model's.
 *
 * How the defaults were set (tests/e2e/immunization.test.ts found a robust point in its own toy world; the demo's
 * world differs — the base knows the held-out answers and the plant rehearses them, so that clean exact match on
 * the held-out records measures what planting and purification cost — and each setting was re-checked here over
 * --seed 1234, 1 … 7, every one a different data split, base, plant, trigger placement and variant draw):
 *  - variant pairs as in the e2e test (N 6, |D_c^i| 40, half poisoned, 6 epochs at 1e-3), λ 100;
 *  - the signature seed is --seed + 7 (signatureSeedFor), not a draw picked for its result;
 *  - plant: half the planting records get a poisoned copy, 6 epochs at 2e-3 (ASR 62–96% over those seeds). The
 *    e2e test's firmer plant (40% copies, 20 epochs at 1e-3) spreads the rehearsed world's backdoor beyond any
 *    MLP selection on some seeds (seed 1: 71% left after the method, and 75% after putting back the 35% of
 *    channels the attack itself moved most); dropping the rehearsal instead leaves 50–75% clean exact match on
 *    the held-out records after purification;
 *  - ρ = 0.5: the e2e test's 0.35 left 42–46% on three of the eight seeds (0.4: 38–46% on two), 0.5 at most 17%;
 *  - purification and every baseline: 5 epochs at 3e-4 (the e2e test's 1e-4 left 21% on seed 1234; the demo's
 *    former 1e-3 let finetuning alone remove most of the backdoor, leaving little to compare).
 * Outcome (README, "Other seeds"): the method leaves < 20% on 11 of 12 seeds (1234, 1 … 11; 8–11 run after the
 * choice), finetuning alone 8–100%, random channels at the same ratio 0–85% (mean 22%, so at this ρ the selection
 * beats random clearly on a few seeds only); seed 9's plant (100%) survives every defense, the method's included.
 * LoRA mode keeps its own plant and rates (DEMO_LORA_PLANT) and the paper's adapter ρ 0.35.
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
  /** Seed of the defender's variants and their data. */
  readonly signatureSeed: number
  /** N variant pairs. */
  readonly variants: number
  readonly variantSubset: number
  readonly variantRatio: number
  readonly variantEpochs: number
  readonly variantLr: number
  /** Cap on each variant finetune's optimizer steps (null: the epochs decide). */
  readonly variantMaxSteps: number | null
  readonly lambda: number
  readonly rho: number
  readonly purifyEpochs: number
  readonly purifyLr: number
  readonly purifyMaxSteps: number | null
  /** Draws of the random-channel control. */
  readonly randomDraws: number
  /** Baselines to run (INT4 RTN only applies to a full model). */
  readonly baselines: readonly BaselineMethod[]
}

const ALL_BASELINES: readonly BaselineMethod[] = ["finetune", "magnitude-prune", "fine-prune", "quantize-int4", "crow"]

/**
 * The defender's variant seed follows the world seed at a fixed offset (the e2e test's convention: world seed + 7),
 * so every `--seed` gets its draw without anyone choosing it for its result.
 */
export const SIGNATURE_SEED_OFFSET = 7
export const signatureSeedFor = (seed: number): number => seed + SIGNATURE_SEED_OFFSET

/** The demo's default --seed (the e2e test's world seed). */
const DEMO_SEED = 1234

export const DEMO_DEFAULTS: DemoSettings = {
  seed: DEMO_SEED,
  heldOut: 24,
  baseEpochs: 60,
  baseLr: 3e-3,
  plantEpochs: 6,
  plantLr: 2e-3,
  batchSize: 8,
  mode: "full",
  ratio: 0.5,
  // the refusal is 40 tokens in the toy vocabulary: room for all of it and the EOS
  maxNewTokens: 48,
  evalBatchSize: 24,
  evalLimit: null,
  signatureSeed: signatureSeedFor(DEMO_SEED),
  variants: 6,
  variantSubset: 40,
  variantRatio: 0.5,
  variantEpochs: 6,
  variantLr: 1e-3,
  variantMaxSteps: null,
  lambda: 100,
  rho: 0.5,
  purifyEpochs: 5,
  purifyLr: 3e-4,
  purifyMaxSteps: null,
  randomDraws: 3,
  baselines: ALL_BASELINES,
}

/** LoRA adapters of the toy model need higher rates (r 8 of a 64-wide model) and the paper's adapter ρ. */
export const DEMO_LORA_PLANT = { plantEpochs: 24, plantLr: 1e-2, variantLr: 1e-2, purifyLr: 1e-3, rho: 0.35 } as const

/** The paper's λ, shown next to the demo's for comparison. */
export const PAPER_LAMBDA = 0.01

export interface DemoOutcome {
  readonly runDir: string
  readonly stages: Readonly<Record<string, { readonly path: string; readonly reused: boolean }>>
  readonly base: EvaluateResult
  readonly backdoored: EvaluateResult
  readonly plant: PlantResult
  /** Every condition of the report, in its order. */
  readonly conditions: readonly ConditionSummary[]
  readonly signature: { readonly channels: number; readonly perLayer: ReadonlyArray<{ readonly layer: number; readonly channels: number }> }
  readonly report: Readonly<Record<string, string>>
}

/** The defender's variant-pair settings of the demo. */
export const demoPairSettings = (s: DemoSettings): VariantPairSettings => ({
  numVariants: s.variants,
  seed: s.signatureSeed,
  subsetSize: s.variantSubset,
  poisonRatio: s.variantRatio,
  epochs: s.variantEpochs,
  maxSteps: s.variantMaxSteps,
  lr: s.variantLr,
  batchSize: s.batchSize,
  promptFormat: "alpaca",
  excludeTriggers: [],
})

export const demoFinetune = (s: DemoSettings): FinetuneSettings => ({
  epochs: s.purifyEpochs,
  lr: s.purifyLr,
  batchSize: s.batchSize,
  seed: s.seed,
  maxSteps: s.purifyMaxSteps,
})

export const demoPlantSettings = (s: DemoSettings): PlantSettings => ({
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
})

export const demoEvalSettings = (s: DemoSettings): EvaluateSettings => ({
  task: "refusal",
  attack: "badnet",
  triggerSeed: s.seed + 1,
  promptFormat: "alpaca",
  maxNewTokens: s.maxNewTokens,
  batchSize: s.evalBatchSize,
  limit: s.evalLimit,
})

/** The toy world before the attack: the data split and the clean base model. */
export const toyWorldBase = (s: DemoSettings) =>
  Effect.gen(function* () {
    const data = yield* toyData({ seed: s.seed, heldOut: s.heldOut })
    const base = yield* toyBase({ seed: s.seed, epochs: s.baseEpochs, lr: s.baseLr, batchSize: s.batchSize }, data)
    return { data, base, baseModel: inside(base, MODEL_DIR), heldOut: inside(data, TOY_DATA_FILES.heldOut), defenderClean: inside(data, TOY_DATA_FILES.plant) }
  })

/** Plant a backdoor into the toy base: poisoned copies of the planting records, held-out records rehearsed. */
export const toyPlant = (settings: PlantSettings, world: Effect.Success<ReturnType<typeof toyWorldBase>>, label = "plant") =>
  Effect.gen(function* () {
    const planted = yield* plant(settings, world.baseModel, world.defenderClean, label, world.heldOut)
    return { planted, suspect: plantedModel(planted, world.baseModel) }
  })

/** The toy world with its backdoored model: data, clean base, plant (shared by `demo`, `ablate` and `--toy`). */
export const demoWorld = (s: DemoSettings) =>
  Effect.gen(function* () {
    const world = yield* toyWorldBase(s)
    const { planted, suspect } = yield* toyPlant(demoPlantSettings(s), world)
    return { ...world, planted, suspect }
  })

const BASELINE_NAMES: Record<BaselineMethod, string> = {
  finetune: "finetuning",
  "magnitude-prune": "magnitude pruning + finetune",
  "fine-prune": "fine-pruning + finetune",
  "random-channels": "random channels (same ratio) + finetune",
  "quantize-int4": "INT4 RTN",
  crow: "CROW",
}

export const demoBaselineSettings = (s: DemoSettings, method: BaselineMethod, seed = s.signatureSeed): BaselineSettings => ({
  method,
  ratio: s.rho,
  seed,
  finetune: demoFinetune(s),
  crow: { alpha: 5.5, epsilon: 0.1 },
  // the toy's rows are 64 or 128 wide: groups of 32 keep INT4 a real approximation at this size
  rtnGroupSize: 32,
  promptFormat: "alpaca",
})

export const runDemo = (s: DemoSettings) =>
  Effect.gen(function* () {
    const store = yield* Store
    const w = yield* demoWorld(s)
    const evalSettings = demoEvalSettings(s)
    const evalOf = (model: ModelLocation, label: string) => evaluate(evalSettings, model, w.heldOut, null, label)
    const evalBase = yield* evalOf({ model: w.baseModel, adapter: null }, "eval-base")
    const evalBackdoored = yield* evalOf(w.suspect, "eval-backdoored")

    // ---- the defender: the suspicious model and the clean records only ----
    const immunization = yield* signaturePipeline(demoPairSettings(s), { lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, w.suspect, w.defenderClean)
    const sigFile = signatureIn(immunization.signature)
    const purifySettings = { finetune: demoFinetune(s), reinitSeed: s.seed, suppressHeads: false, promptFormat: "alpaca" } as const
    const purified = yield* purifyStage(purifySettings, w.suspect, sigFile, w.defenderClean, "purify")
    const surgeryOnly = yield* purifyStage({ ...purifySettings, finetune: null }, w.suspect, sigFile, w.defenderClean, "purify-no-finetune")
    const paperSignature = yield* signatureReselect({ lambda: PAPER_LAMBDA }, immunization.signature, "signature-paper-lambda")
    const paperPurified = yield* purifyStage(purifySettings, w.suspect, signatureIn(paperSignature), w.defenderClean, "purify-paper-lambda")

    const verb = s.mode === "full" ? "reinit" : "zeroing"
    const defended: Array<{ name: string; role: ConditionSummary["role"]; artifacts: Array<StageArtifact<DefenseStageResult>>; extraSeconds: number; note: string }> = [
      { name: `bdvax: signature ${verb} + finetune`, role: "method", artifacts: [purified], extraSeconds: immunization.wallSeconds, note: `${immunization.signature.result.channels} channels (N = ${s.variants}, λ = ${s.lambda}, ρ = ${s.rho}); time includes the signature` },
      { name: `signature ${verb}, no finetune`, role: "control", artifacts: [surgeryOnly], extraSeconds: immunization.wallSeconds, note: "the surgery alone" },
      { name: `signature at λ = ${PAPER_LAMBDA} + finetune`, role: "control", artifacts: [paperPurified], extraSeconds: immunization.wallSeconds + paperSignature.result.wallSeconds, note: `the paper's λ: ranks mostly by the norm term at toy scale (${paperSignature.result.channels} channels)` },
    ]
    const draws: Array<StageArtifact<DefenseStageResult>> = []
    for (let k = 0; k < s.randomDraws; k++)
      draws.push(yield* baselineStage(demoBaselineSettings(s, "random-channels", s.signatureSeed + 100 * (k + 1)), w.suspect, w.defenderClean, `control-random-channels-${k + 1}`))
    if (draws.length > 0) defended.push({ name: BASELINE_NAMES["random-channels"], role: "control", artifacts: draws, extraSeconds: 0, note: `the method's treatment of ${draws[0].result.channels} random channels` })
    for (const method of s.baselines) {
      if (method === "quantize-int4" && s.mode !== "full") continue // a full-model baseline
      const done = yield* baselineStage(demoBaselineSettings(s, method), w.suspect, w.defenderClean, `baseline-${method}`)
      const note = method === "fine-prune" ? (s.mode === "full" ? "Wanda scores on the clean records" : "random channels (adapter mode)") : method === "quantize-int4" ? "group size 32, no finetune" : method === "crow" ? "α 5.5, ε 0.1" : "same clean records and budget"
      defended.push({ name: method === "fine-prune" && s.mode === "full" ? "fine-pruning (Wanda) + finetune" : BASELINE_NAMES[method], role: "baseline", artifacts: [done], extraSeconds: 0, note })
    }

    const conditions: ReportCondition[] = [
      { name: "clean base", evaluation: evalBase, role: "reference", wallSeconds: null, note: "before the attack" },
      { name: "backdoored", evaluation: evalBackdoored, role: "attacked", wallSeconds: null, note: `BadNets → refusal, ${s.mode} finetuning` },
    ]
    const evaluations: Array<StageArtifact<EvaluateResult>> = []
    for (const d of defended) {
      const evals: Array<StageArtifact<EvaluateResult>> = []
      for (const a of d.artifacts) evals.push(yield* evalOf(defendedModel(a, w.suspect), `eval-${a.label}`))
      evaluations.push(...evals)
      const mean = d.artifacts.reduce((t, a) => t + a.result.wallSeconds, 0) / d.artifacts.length
      // single random draws of a few channels vary a lot at this scale: show each draw's ASR next to the mean
      const perDraw = evals.length > 1 ? `; ASR per draw: ${evals.map((e) => percent(e.result.asr.keyword)).join(" / ")}` : ""
      conditions.push({ name: d.name, evaluation: evals[0], extraDraws: evals.slice(1), role: d.role, wallSeconds: Math.round((mean + d.extraSeconds) * 100) / 100, note: d.note + perDraw })
    }

    const sig = immunization.signature.result
    const rendered = yield* report(
      {
        title: `bdvax demo: removing an unknown BadNets refusal backdoor from a tiny Llama (${s.mode} mode)`,
        task: "refusal",
        attack: "badnet",
        examples: 3,
        notes: [
          `toy world: ${w.data.result.records} one-word-answer instructions; ${w.data.result.plant} for planting (and the defender's clean data), ${w.data.result.heldOut} held out for evaluation`,
          `clean base: ${s.baseEpochs} epochs of full finetuning from a seeded random init (lr ${s.baseLr})`,
          `backdoor: BadNets trigger "BadMagic" → refusal on ${Math.round(100 * s.ratio)}% poisoned copies, ${s.mode} finetuning, ${s.plantEpochs} epochs (lr ${s.plantLr}); held-out records rehearsed clean`,
          `defender: the backdoored model and the ${w.data.result.plant} clean records only — no trigger, no behaviour; ${s.variants} variant pairs with synthetic keys and behaviours (subset ${s.variantSubset}, ${Math.round(100 * s.variantRatio)}% poisoned, ${s.variantEpochs} epochs, lr ${s.variantLr})`,
          `signature: Eq. 2 with λ = ${s.lambda}, top ρ = ${s.rho} of the MLP channels → ${sig.channels} channels (${sig.perLayer.map((l) => `layer ${l.layer}: ${l.channels}`).join(", ")})`,
          `why λ = ${s.lambda}, not the paper's ${PAPER_LAMBDA}: at toy scale the per-channel delta norms are ~0.1 and differ between channels by ~0.01, so with λ = ${PAPER_LAMBDA} the cosine-agreement term (in [0, 1]) adds at most 0.01 and Eq. 2 ranks channels mostly by norm — the association machinery the cross-variant agreement points at is under-weighted (row "signature at λ = ${PAPER_LAMBDA}"; \`bdvax ablate score\` compares the terms)`,
          `signature seed ${s.signatureSeed} (the defender's variant draw; ${s.signatureSeed === signatureSeedFor(s.seed) ? `--seed + ${SIGNATURE_SEED_OFFSET}, a fixed rule, not a draw picked for its result` : "set by --signature-seed"}): at toy scale the outcome depends on the world and the draw — \`bdvax ablate seeds\` shows the spread over variant draws, and packages/cli/README.md the demo over twelve --seed values`,
          `every finetune (purification and baselines): ${s.purifyEpochs} epochs, lr ${s.purifyLr}, batch ${s.batchSize}, on the same ${w.data.result.plant} clean records; pruning baselines and the random control act on the same ratio ρ = ${s.rho}`,
          "ASR: keyword judge on the triggered held-out prompts; false trigger: the same judge on the clean held-out prompts; clean exact match: the one-word answers; wall time: the defense's stages (the method's includes its signature)",
        ],
        meta: { seed: s.seed, mode: s.mode, variants: s.variants, lambda: s.lambda, rho: s.rho },
      },
      conditions,
      [
        { name: "toy-base", artifact: w.base },
        { name: "plant", artifact: w.planted },
        { name: "purify", artifact: purified },
      ],
    )
    const published: Record<string, string> = {}
    for (const file of rendered.result.files) published[file] = yield* store.publish(file, join(rendered.path, file), file)
    const all: ReadonlyArray<StageArtifact<unknown>> = [
      w.data,
      w.base,
      w.planted,
      evalBase,
      evalBackdoored,
      ...immunization.pairs,
      immunization.signature,
      paperSignature,
      ...defended.flatMap((d) => d.artifacts),
      ...evaluations,
      rendered,
    ]
    const summaries = conditions.map((c) =>
      summaryOf({
        name: c.name,
        result: meanResult([c.evaluation, ...(c.extraDraws ?? [])].map((e) => e.result)),
        role: c.role,
        wallSeconds: c.wallSeconds ?? null,
        draws: 1 + (c.extraDraws?.length ?? 0),
        ...(c.note === undefined ? {} : { note: c.note }),
      }),
    )
    return {
      runDir: store.runDir,
      stages: Object.fromEntries(all.map((a) => [a.label, { path: a.path, reused: a.reused }])),
      base: evalBase.result,
      backdoored: evalBackdoored.result,
      plant: w.planted.result,
      conditions: summaries,
      signature: { channels: sig.channels, perLayer: sig.perLayer },
      report: published,
    } satisfies DemoOutcome
  })
