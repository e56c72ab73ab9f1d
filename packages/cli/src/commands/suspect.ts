import { Effect, Option } from "effect"
import { optionsError } from "../config/options.js"
import { externalInput } from "../store/hash.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT, type DemoSettings, demoWorld } from "../pipeline/demo.js"
import { itself, type Located } from "../pipeline/located.js"
import type { ModelLocation } from "../pipeline/model-io.js"

/**
 * The suspicious model and the defender's clean records of a command: user files (`--model` [+ `--adapter`] and
 * `--records`), or with `--toy` the demo's backdoored toy model and its planting records (the stages of the demo,
 * run or reused in the command's run folder).
 */
export interface SuspectSource {
  readonly suspect: ModelLocation
  readonly clean: Located
  readonly toy: DemoSettings | null
}

export interface SuspectFlags {
  readonly model: Option.Option<string>
  readonly adapter: Option.Option<string>
  readonly records: Option.Option<string>
  readonly toy: boolean
  readonly mode: "full" | "lora"
}

/** The demo's settings for a toy suspect of this mode. */
export const toySettings = (mode: "full" | "lora"): DemoSettings =>
  mode === "lora" ? { ...DEMO_DEFAULTS, ...DEMO_LORA_PLANT, mode } : { ...DEMO_DEFAULTS, mode }

/** Check the flag combination before anything runs (usage errors name the flag). */
export const checkSuspectFlags = (command: string, o: SuspectFlags) =>
  Effect.gen(function* () {
    const model = Option.getOrNull(o.model)
    if (o.toy && model !== null) return yield* optionsError(command, "--toy", "give either --model <folder> or --toy, not both")
    if (!o.toy && model === null) return yield* optionsError(command, "--model", "required (or --toy for the demo's toy world)")
    if (!o.toy && Option.isNone(o.records)) return yield* optionsError(command, "--records", "required with --model: the defender's clean instruction records")
    if (o.toy && Option.isSome(o.adapter)) return yield* optionsError(command, "--adapter", "not with --toy (use --mode lora for the toy's adapter)")
    if (o.toy && Option.isSome(o.records)) return yield* optionsError(command, "--records", "not with --toy (the toy's defender uses its planting records)")
  })

export const suspectSource = (o: SuspectFlags) =>
  Effect.gen(function* () {
    if (o.toy) {
      const settings = toySettings(o.mode)
      const w = yield* demoWorld(settings)
      return { suspect: w.suspect, clean: w.defenderClean, toy: settings } satisfies SuspectSource
    }
    const model = itself(yield* externalInput(Option.getOrThrow(o.model)))
    const adapter = Option.isSome(o.adapter) ? itself(yield* externalInput(o.adapter.value)) : null
    const clean = itself(yield* externalInput(Option.getOrThrow(o.records)))
    return { suspect: { model, adapter }, clean, toy: null } satisfies SuspectSource
  })
