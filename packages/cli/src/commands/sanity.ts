import { join, resolve } from "node:path"
import { TensorDevice } from "@bdvax/core-tensor"
import { type NamedAblation, standardAblations } from "@bdvax/purify"
import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { PositiveInt, Seed } from "../config/fields.js"
import { decodeOptions, optionsError } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { storeError } from "../errors.js"
import { emit, percent, table, toJson } from "../output.js"
import { demoEvalSettings, demoWorld } from "../pipeline/demo.js"
import { evaluate, type EvaluateSettings, PROMPT_FORMATS } from "../pipeline/evaluate.js"
import { itself, type Located } from "../pipeline/located.js"
import { modelConfigAt, type ModelLocation } from "../pipeline/model-io.js"
import { ablationStage, sanityModels } from "../pipeline/sanity.js"
import { writeFileAtomic } from "../store/atomic.js"
import { externalInput } from "../store/hash.js"
import { Store } from "../store/store.js"
import { adapterFlag, attackFlag, outFlag, taskFlag } from "./common-flags.js"
import { toySettings } from "./suspect.js"

/**
 * `bdvax sanity`: the sanity checks of §4.1 (the paper's Table 1). Given the base θ_0 and the backdoored θ_b (a
 * full model, or the base plus the backdoor's LoRA adapter), evaluate θ_0 + mask ⊙ (θ_b − θ_0) for every
 * standard ablation — all blocks, attention only, MLP only, consecutive block spans, shuffled blocks — and print
 * whether the backdoor survives each. One resumable stage per ablation.
 */
const SanityOptions = Schema.Struct({ maxNewTokens: PositiveInt, batchSize: PositiveInt, limit: Schema.NullOr(PositiveInt), seed: Seed })

export const SANITY_FILE = "sanity.json"

export const sanityCommand = Command.make(
  "sanity",
  {
    base: Flag.Path("base", { mustExist: true }).pipe(Flag.withDescription("θ_0: the model before the backdoor (HF folder or GGUF); with --adapter, the adapter's base"), Flag.optional),
    model: Flag.Path("model", { mustExist: true }).pipe(Flag.withDescription("θ_b: the backdoored model (HF folder or GGUF), same architecture as --base"), Flag.optional),
    adapter: adapterFlag,
    records: Flag.File("records", { mustExist: true }).pipe(Flag.withDescription("Clean test records (JSON/JSONL); their outputs are the references of clean accuracy"), Flag.optional),
    triggered: Flag.File("triggered", { mustExist: true }).pipe(Flag.withDescription("Triggered test records (default: --records with --attack's trigger inserted, seeded)"), Flag.optional),
    attack: attackFlag,
    task: taskFlag,
    check: Flag.String("check").pipe(Flag.withDescription("Comma-separated ablations to run (default all): all-blocks, attention-only, mlp-only, blocks-<from>-<to>, shuffled-s<seed>"), Flag.optional),
    blockUpdatesOnly: Flag.Boolean("block-updates-only").pipe(Flag.withDescription("Full mode: take embeddings, final norm and lm_head from θ_0 in every ablation (default: from θ_b)"), Flag.withDefault(false)),
    toy: Flag.Boolean("toy").pipe(Flag.withDescription("The demo's toy world: its clean base, its backdoored model and held-out prompts"), Flag.withDefault(false)),
    mode: Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("With --toy: the toy backdoor in a full model or a LoRA adapter"), Flag.withDefault("full" as "full" | "lora")),
    promptFormat: Flag.Literals("prompt-format", PROMPT_FORMATS).pipe(Flag.withDescription("alpaca (bdvax's training format), chat (the tokenizer's template) or backdoorllm (raw)"), Flag.withDefault("alpaca" as (typeof PROMPT_FORMATS)[number])),
    maxNewTokens: Flag.Int("max-new-tokens").pipe(Flag.withDescription("Generation budget per prompt"), Flag.withDefault(48)),
    batchSize: Flag.Int("batch-size").pipe(Flag.withDescription("Prompts per generation batch"), Flag.withDefault(16)),
    limit: Flag.Int("limit").pipe(Flag.withDescription("Evaluate only the first n records"), Flag.optional),
    seed: Flag.Int("seed").pipe(Flag.withDescription("Seed of the inserted triggers' positions"), Flag.withDefault(0)),
    out: outFlag("the results (JSON)"),
  },
  (o) =>
    Effect.gen(function* () {
      const command = "sanity"
      const limit = Option.getOrNull(o.limit)
      const opts = yield* decodeOptions(command, SanityOptions, { maxNewTokens: o.maxNewTokens, batchSize: o.batchSize, limit, seed: o.seed })
      if (o.toy) {
        for (const [flag, v] of [["--base", o.base], ["--model", o.model], ["--adapter", o.adapter], ["--records", o.records], ["--triggered", o.triggered]] as const)
          if (Option.isSome(v)) return yield* optionsError(command, flag, "not with --toy (the toy world brings its own models and prompts)")
      } else {
        if (Option.isNone(o.base)) return yield* optionsError(command, "--base", "required (θ_0, the model before the backdoor), or --toy")
        if (Option.isSome(o.model) === Option.isSome(o.adapter)) return yield* optionsError(command, "--model", "give the backdoored model as --model <folder> or as --adapter <PEFT folder> on --base")
        if (Option.isNone(o.records)) return yield* optionsError(command, "--records", "required: the clean test records")
      }
      const checks = Option.map(o.check, (c) => c.split(",").map((x) => x.trim()).filter((x) => x !== ""))

      const program = Effect.gen(function* () {
        let base: ModelLocation
        let backdoored: ModelLocation
        let clean: Located
        let triggered: Located | null = null
        let evaluation: EvaluateSettings = { task: o.task, attack: o.attack, triggerSeed: opts.seed, promptFormat: o.promptFormat, maxNewTokens: opts.maxNewTokens, batchSize: opts.batchSize, limit }
        if (o.toy) {
          const settings = toySettings(o.mode)
          const w = yield* demoWorld(settings)
          base = { model: w.baseModel, adapter: null }
          backdoored = w.suspect
          clean = w.heldOut
          evaluation = { ...demoEvalSettings(settings), limit }
        } else {
          const baseInput = itself(yield* externalInput(Option.getOrThrow(o.base)))
          base = { model: baseInput, adapter: null }
          backdoored = Option.isSome(o.adapter) ? { model: baseInput, adapter: itself(yield* externalInput(o.adapter.value)) } : { model: itself(yield* externalInput(Option.getOrThrow(o.model))), adapter: null }
          clean = itself(yield* externalInput(Option.getOrThrow(o.records)))
          if (Option.isSome(o.triggered)) triggered = itself(yield* externalInput(o.triggered.value))
        }
        const config = yield* modelConfigAt(command, base)
        const all = standardAblations(config)
        let chosen: NamedAblation[] = all
        if (Option.isSome(checks)) {
          const unknown = checks.value.filter((c) => !all.some((a) => a.name === c))
          if (unknown.length > 0) return yield* optionsError(command, "--check", `unknown ablation(s) ${unknown.join(", ")}; this ${config.numHiddenLayers}-layer model has ${all.map((a) => a.name).join(", ")}`)
          chosen = all.filter((a) => checks.value.includes(a.name))
        }
        const refBase = yield* evaluate(evaluation, base, clean, triggered, "eval-base")
        const refBackdoored = yield* evaluate(evaluation, backdoored, clean, triggered, "eval-backdoored")
        const dev = yield* TensorDevice
        const models = sanityModels(dev, base, backdoored)
        const rows = yield* Effect.gen(function* () {
          const out = []
          for (const ablation of chosen) out.push(yield* ablationStage({ ablation, includeNonBlock: !o.blockUpdatesOnly, evaluation }, base, backdoored, clean, triggered, models))
          return out
        }).pipe(Effect.ensuring(Effect.promise(models.release)))
        const results = [
          { name: "θ_0 (base)", kept: "no update", evaluation: refBase.result, stage: refBase.path },
          { name: "θ_b (backdoored)", kept: "the whole update", evaluation: refBackdoored.result, stage: refBackdoored.path },
          ...rows.map((r) => ({ ...r.result, stage: r.path })),
        ]
        const store = yield* Store
        const file = Option.match(o.out, { onNone: () => join(store.runDir, SANITY_FILE), onSome: (p) => resolve(p) })
        yield* Effect.tryPromise({ try: () => writeFileAtomic(file, `${toJson({ mode: backdoored.adapter === null ? "full" : "adapter", results })}\n`), catch: (e) => storeError(file, "cannot write the results", e) })
        yield* emit({
          json: { file, mode: backdoored.adapter === null ? "full" : "adapter", results },
          text: [
            table(
              ["ablation", "updates kept (θ_0 + mask ⊙ (θ_b − θ_0))", "ASR", "false trigger", "clean exact match"],
              results.map((r) => [r.name, r.kept, percent(r.evaluation.asr.keyword), percent(r.evaluation.falseTrigger.keyword), percent(r.evaluation.cleanAccuracy)]),
            ),
            "",
            `results: ${file}`,
          ].join("\n"),
        })
      })
      yield* withStore(
        { command, defaultName: "sanity", settings: { base: Option.getOrNull(o.base), model: Option.getOrNull(o.model), adapter: Option.getOrNull(o.adapter), records: Option.getOrNull(o.records), toy: o.toy, mode: o.mode, ...opts } },
        withDevice(program),
      )
    }),
).pipe(Command.withDescription("Sanity checks of §4.1 (Table 1): ablate parts of the backdoor update (attention/MLP only, block spans, shuffled blocks) and report whether the backdoor survives"))
