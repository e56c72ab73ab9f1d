import { type InstructionRecord, readInstructions, writeInstructions } from "@bdvax/attacks"
import type { Effect } from "effect"
import { attempt } from "../context.js"
import type { StageError } from "../errors.js"

/** Instruction records (JSON array or JSONL, attacks' reader: errors name the file and the line). */
export const readRecords = (stage: string, path: string): Effect.Effect<InstructionRecord[], StageError> => attempt(stage, () => readInstructions(path))

export const writeRecords = (stage: string, path: string, records: readonly InstructionRecord[]): Effect.Effect<void, StageError> =>
  attempt(stage, () => writeInstructions(path, records))
