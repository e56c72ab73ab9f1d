import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { PositiveInt, Seed } from "../config/fields.js"
import { decodeOptions } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { emit, percent, table } from "../output.js"
import { ASR_FILE, CLEAN_ACCURACY_FILE, evaluate, type EvaluateSettings, PROMPT_FORMATS } from "../pipeline/evaluate.js"
import { itself } from "../pipeline/located.js"
import { externalInput } from "../store/hash.js"
import { adapterFlag, attackFlag, batchSizeFlag, modelFlag, seedFlag, taskFlag } from "./common-flags.js"

/**
 * `bdvax eval`: ASR (eval's evaluateAsr, keyword and target judges) on triggered prompts, the false-trigger rate
 * and clean quality (exact match, reference perplexity) on clean prompts, for a model folder and optional adapter.
 */
const EvalOptions = Schema.Struct({ maxNewTokens: PositiveInt, batchSize: PositiveInt, limit: Schema.NullOr(PositiveInt), seed: Seed })

export const evalCommand = Command.make(
  "eval",
  {
    model: modelFlag,
    adapter: adapterFlag,
    clean: Flag.File("clean", { mustExist: true }).pipe(Flag.withDescription("Clean test records (JSON/JSONL); their outputs are the references of clean accuracy")),
    triggered: Flag.File("triggered", { mustExist: true }).pipe(
      Flag.withDescription("Triggered test records (default: the clean ones with --attack's trigger inserted, seeded)"),
      Flag.optional,
    ),
    attack: attackFlag,
    task: taskFlag,
    promptFormat: Flag.Literals("prompt-format", PROMPT_FORMATS).pipe(
      Flag.withDescription("alpaca: LLaMA-Factory's template (bdvax's training format); chat: the tokenizer's chat template; backdoorllm: the raw instruction"),
      Flag.withDefault("alpaca" as (typeof PROMPT_FORMATS)[number]),
    ),
    maxNewTokens: Flag.Int("max-new-tokens").pipe(Flag.withDescription("Generation budget per prompt"), Flag.withDefault(64)),
    batchSize: batchSizeFlag(16),
    limit: Flag.Int("limit").pipe(Flag.withDescription("Evaluate only the first n records of each file"), Flag.optional),
    seed: seedFlag,
  },
  (o) =>
    Effect.gen(function* () {
      const limit = Option.getOrNull(o.limit)
      yield* decodeOptions("eval", EvalOptions, { maxNewTokens: o.maxNewTokens, batchSize: o.batchSize, limit, seed: o.seed })
      const settings: EvaluateSettings = {
        task: o.task,
        attack: o.attack,
        triggerSeed: o.seed,
        promptFormat: o.promptFormat,
        maxNewTokens: o.maxNewTokens,
        batchSize: o.batchSize,
        limit,
      }
      const adapter = Option.getOrNull(o.adapter)
      const triggeredFile = Option.getOrNull(o.triggered)
      const program = Effect.gen(function* () {
        const model = itself(yield* externalInput(o.model))
        const adapterInput = adapter === null ? null : itself(yield* externalInput(adapter))
        const clean = itself(yield* externalInput(o.clean))
        const triggered = triggeredFile === null ? null : itself(yield* externalInput(triggeredFile))
        return yield* evaluate(settings, { model, adapter: adapterInput }, clean, triggered)
      })
      const done = yield* withStore({ command: "eval", defaultName: "eval", settings: { ...settings, model: o.model, adapter, clean: o.clean, triggered: triggeredFile } }, withDevice(program))
      const r = done.result
      yield* emit({
        json: { ...r, files: { asr: `${done.path}/${ASR_FILE}`, cleanAccuracy: `${done.path}/${CLEAN_ACCURACY_FILE}` }, reused: done.reused },
        text: [
          table(
            ["metric", "judge", "value", "n"],
            [
              ["ASR (triggered)", "keyword", percent(r.asr.keyword), String(r.n.triggered)],
              ["ASR (triggered)", "target", percent(r.asr.target), String(r.n.triggered)],
              ["false trigger (clean)", "keyword", percent(r.falseTrigger.keyword), String(r.n.clean)],
              ["false trigger (clean)", "target", percent(r.falseTrigger.target), String(r.n.clean)],
              ["clean accuracy", "exact match", percent(r.cleanAccuracy), String(r.cleanScored)],
              ["clean perplexity", "reference answers", r.cleanPerplexity?.toFixed(3) ?? "–", String(r.cleanScored)],
            ],
          ),
          "",
          `generations: ${done.path}/${ASR_FILE}`,
        ].join("\n"),
      })
    }),
).pipe(Command.withDescription("Evaluate a model (HF folder + optional PEFT adapter): ASR and false-trigger rate (keyword and target judges), clean exact match and perplexity"))
