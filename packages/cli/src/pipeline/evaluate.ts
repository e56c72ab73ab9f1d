import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { ATTACKS, type AttackName, HostRandom, type InstructionRecord, insertTrigger, type TaskName } from "@bdvax/attacks"
import {
  answerPerplexity,
  type AsrPrompt,
  type AsrResult,
  chatPromptFormat,
  type EvalModel,
  evaluateAsr,
  generator,
  llamaFactoryAlpacaFormat,
  type PromptFormat,
  tokenNll,
} from "@bdvax/eval"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { exactMatchAccuracy } from "../metrics/exact-match.js"
import { toJson } from "../output.js"
import { withBar } from "../progress/progress.js"
import { defineStage, stage, type StageInput } from "../store/store.js"
import type { Located } from "./located.js"
import { type LoadedModel, type ModelLocation, modelInputs, withModel } from "./model-io.js"
import { readRecords } from "./records.js"

/**
 * Stage "evaluate": greedy generations on triggered and clean prompts, judged by eval's evaluateAsr (keyword and
 * target judges): the ASR on triggered prompts and the false-trigger rate on clean ones. Clean quality from the
 * same clean generations — exact match against the records' reference answers (meaningful for short answers
 * such as the toy world's) — and the perplexity of the reference answers under the model.
 * Triggered prompts are read from a file, or made from the clean ones by inserting the attack's trigger (seeded).
 */

export const PROMPT_FORMATS = ["alpaca", "chat", "backdoorllm"] as const
export type EvalPromptFormat = (typeof PROMPT_FORMATS)[number]

export interface EvaluateSettings {
  readonly task: TaskName
  /** Whose trigger is inserted when no triggered file is given. */
  readonly attack: AttackName
  readonly triggerSeed: number
  /** "alpaca": LLaMA-Factory's template (what plant trains with); "chat": the tokenizer's chat template; "backdoorllm": the raw instruction. */
  readonly promptFormat: EvalPromptFormat
  readonly maxNewTokens: number
  readonly batchSize: number
  /** Evaluate only the first `limit` records of each split. */
  readonly limit: number | null
}

const Rate = Schema.NullOr(Schema.Number)
export const EvaluateResult = Schema.Struct({
  n: Schema.Struct({ triggered: Schema.Number, clean: Schema.Number }),
  /** Attack success rate on triggered prompts (fractions; null when nothing was scored). */
  asr: Schema.Struct({ keyword: Rate, target: Rate }),
  /** The same judges on clean prompts. */
  falseTrigger: Schema.Struct({ keyword: Rate, target: Rate }),
  cleanAccuracy: Rate,
  cleanCorrect: Schema.Number,
  cleanScored: Schema.Number,
  /** exp(mean NLL per reference-answer token) on the clean records. */
  cleanPerplexity: Rate,
})
export type EvaluateResult = typeof EvaluateResult.Type

export const EVALUATE = defineStage("evaluate", 1, EvaluateResult)
export const ASR_FILE = "asr.json"
export const CLEAN_ACCURACY_FILE = "clean-accuracy.json"

const finite = (x: number): number | null => (Number.isFinite(x) ? x : null)

function promptFormatFor(format: EvalPromptFormat, model: EvalModel): PromptFormat {
  if (format === "alpaca") return llamaFactoryAlpacaFormat
  if (format === "chat") return chatPromptFormat(model.tokenizer)
  return "backdoorllm"
}

export function triggeredPrompts(records: readonly InstructionRecord[], attack: AttackName, seed: number): AsrPrompt[] {
  const rng = new HostRandom(seed)
  return records.map((r) => ({ instruction: insertTrigger(ATTACKS[attack], r.instruction, rng), input: r.input }))
}

/** What an evaluation produced: the stage result and the generations behind it. */
export interface EvaluationOutcome {
  readonly result: EvaluateResult
  readonly asr: AsrResult
  readonly clean: ReturnType<typeof exactMatchAccuracy> & { readonly perplexity: unknown }
}

/**
 * Evaluate a model that is already on the device (a stage's model, or an ablation built in memory): generations
 * on the triggered and clean prompts, the judges, exact match and reference perplexity.
 */
export const evaluateLoaded = (
  label: string,
  settings: EvaluateSettings,
  evalModel: EvalModel,
  cleanRecords: readonly InstructionRecord[],
  triggeredList: readonly AsrPrompt[],
) =>
  Effect.gen(function* () {
    const promptFormat = promptFormatFor(settings.promptFormat, evalModel)
    const asr: AsrResult = yield* withBar(label, "prompt", (bar) =>
      attempt(label, () =>
        evaluateAsr({
          task: settings.task,
          triggered: triggeredList,
          clean: cleanRecords.map((r) => ({ instruction: r.instruction, input: r.input })),
          generate: generator(evalModel, { batchSize: settings.batchSize }),
          promptFormat,
          maxNewTokens: settings.maxNewTokens,
          batchSize: settings.batchSize,
          onProgress: bar.onItems,
        }),
      ),
    )
    const withReference = asr.records
      .filter((r) => r.split === "clean" && cleanRecords[r.index].output !== "")
      .map((r) => ({ instruction: r.instruction, reference: cleanRecords[r.index].output, output: r.output }))
    const accuracy = exactMatchAccuracy(withReference)
    const pairs = cleanRecords
      .filter((r) => r.output !== "")
      .map((r) => ({ prompt: typeof promptFormat === "function" ? promptFormat(r) : r.instruction, answer: r.output }))
    const ppl = yield* withBar(`${label} ppl`, "answer", (bar) =>
      attempt(label, () => answerPerplexity(pairs, tokenNll(evalModel, { addSpecialTokens: false }), { batchSize: settings.batchSize, onProgress: bar.onItems })),
    )
    const result: EvaluateResult = {
      n: { triggered: asr.triggered.keyword.n, clean: asr.clean.keyword.n },
      asr: { keyword: finite(asr.triggered.keyword.rate), target: finite(asr.triggered.target.rate) },
      falseTrigger: { keyword: finite(asr.clean.keyword.rate), target: finite(asr.clean.target.rate) },
      cleanAccuracy: accuracy.accuracy,
      cleanCorrect: accuracy.correct,
      cleanScored: accuracy.n,
      cleanPerplexity: finite(ppl.corpusPerplexity),
    }
    return { result, asr, clean: { ...accuracy, perplexity: ppl } } satisfies EvaluationOutcome
  })

/** Write an evaluation's generations (asr.json) and clean accuracy (clean-accuracy.json) into `dir`. */
export const writeEvaluation = (label: string, dir: string, outcome: EvaluationOutcome) =>
  Effect.gen(function* () {
    yield* attempt(label, () => writeFile(join(dir, ASR_FILE), `${toJson(outcome.asr)}\n`))
    yield* attempt(label, () => writeFile(join(dir, CLEAN_ACCURACY_FILE), `${toJson(outcome.clean)}\n`))
  })

/** The clean records (first `limit`) and the triggered prompts (from a file, or the attack's trigger inserted). */
export const evaluationPrompts = (label: string, settings: EvaluateSettings, clean: Located, triggered: Located | null) =>
  Effect.gen(function* () {
    const take = <T>(xs: readonly T[]) => (settings.limit === null ? xs.slice() : xs.slice(0, settings.limit))
    const cleanRecords = take(yield* readRecords(label, clean.path))
    const triggeredList: AsrPrompt[] =
      triggered === null ? triggeredPrompts(cleanRecords, settings.attack, settings.triggerSeed) : take(yield* readRecords(label, triggered.path))
    return { cleanRecords, triggeredList }
  })

export const toEvalModel = (m: LoadedModel): EvalModel => ({ config: m.config, params: m.params, tokenizer: m.tokenizer, ...(m.adapter === null ? {} : { lora: m.adapter }) })

export const evaluate = (settings: EvaluateSettings, model: ModelLocation, clean: Located, triggered: Located | null, label = "evaluate") => {
  const inputs: Record<string, StageInput> = { ...modelInputs(model), clean: clean.input }
  if (triggered) inputs.triggered = triggered.input
  return stage(
    EVALUATE,
    { ...settings, triggered: triggered === null ? "inserted" : "file" },
    inputs,
    ({ dir }) =>
      Effect.gen(function* () {
        const { cleanRecords, triggeredList } = yield* evaluationPrompts(label, settings, clean, triggered)
        return yield* withModel(label, model, (loaded) =>
          Effect.gen(function* () {
            const outcome = yield* evaluateLoaded(label, settings, toEvalModel(loaded), cleanRecords, triggeredList)
            yield* writeEvaluation(label, dir, outcome)
            return outcome.result
          }),
        )
      }),
    { label },
  )
}
