import { join } from "node:path"
import { ATTACKS, type AttackName, poisonDataset, TASKS, type TaskName } from "@bdvax/attacks"
import { Effect, Schema } from "effect"
import { attempt } from "../context.js"
import { StageError } from "../errors.js"
import { defineStage, stage } from "../store/store.js"
import type { Located } from "./located.js"
import { readRecords, writeRecords } from "./records.js"

/** Stage "poison": attacks' poisonDataset over a records file; writes poisoned.json or poisoned.jsonl. */
export interface PoisonSettings {
  readonly attack: AttackName
  readonly task: TaskName
  readonly ratio: number
  readonly mode: "add" | "replace"
  readonly seed: number
  readonly format: "json" | "jsonl"
}

export const POISON = defineStage("poison", 1, Schema.Struct({ file: Schema.String, records: Schema.Number, poisoned: Schema.Number }))

export const poison = (settings: PoisonSettings, records: Located, label = "poison") =>
  stage(
    POISON,
    settings,
    { records: records.input },
    ({ dir }) =>
      Effect.gen(function* () {
        const clean = yield* readRecords(label, records.path)
        if (clean.length === 0) return yield* new StageError({ stage: label, message: `${label}: ${records.path} holds no records` })
        const out = yield* attempt(label, async () =>
          poisonDataset(clean, { trigger: ATTACKS[settings.attack], behaviour: TASKS[settings.task], ratio: settings.ratio, seed: settings.seed, mode: settings.mode }),
        )
        const file = `poisoned.${settings.format}`
        yield* writeRecords(label, join(dir, file), out.records)
        return { file, records: out.records.length, poisoned: out.poisoned.filter(Boolean).length }
      }),
    { label },
  )
