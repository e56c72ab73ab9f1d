import { readFile } from "node:fs/promises"
import { Effect, Schema } from "effect"
import { decodeValue } from "../config/decode.js"
import { StoreError, storeError } from "../errors.js"
import { writeFileAtomic } from "./atomic.js"

/**
 * manifest.json of a run folder: what was asked (command, settings), every stage with its status, content
 * address, timings and folder, and the files published at the top of the run folder (reports). It is a journal
 * for people and tools; whether a stage is finished is decided by its folder (see store.ts), so a manifest that
 * says "running" after a SIGKILL is simply corrected on the next run.
 */

export const MANIFEST_FILE = "manifest.json"
export const MANIFEST_FORMAT = "bdvax-run/1"

export const StageStatus = Schema.Literals(["running", "finished", "reused", "failed"])
export type StageStatus = typeof StageStatus.Type

export const StageRecord = Schema.Struct({
  kind: Schema.String,
  version: Schema.Number,
  hash: Schema.String,
  /** Relative to the run folder. */
  dir: Schema.String,
  status: StageStatus,
  /** Input name → hash. */
  inputs: Schema.Record(Schema.String, Schema.String),
  startedAt: Schema.String,
  finishedAt: Schema.optionalKey(Schema.String),
  durationMs: Schema.optionalKey(Schema.Number),
  error: Schema.optionalKey(Schema.String),
})
export type StageRecord = typeof StageRecord.Type

export const Manifest = Schema.Struct({
  format: Schema.Literal(MANIFEST_FORMAT),
  name: Schema.String,
  command: Schema.String,
  settings: Schema.Unknown,
  createdAt: Schema.String,
  updatedAt: Schema.String,
  /** Stage label (e.g. "eval-backdoored") → its latest record, in the order the stages first ran. */
  stages: Schema.Record(Schema.String, StageRecord),
  /** Name → file relative to the run folder (e.g. "report" → "report.md"). */
  outputs: Schema.Record(Schema.String, Schema.String),
})
export type Manifest = typeof Manifest.Type

export const newManifest = (name: string, command: string, settings: unknown, now: string): Manifest => ({
  format: MANIFEST_FORMAT,
  name,
  command,
  settings,
  createdAt: now,
  updatedAt: now,
  stages: {},
  outputs: {},
})

/** The manifest at `path`, or null when there is none yet. */
export const readManifest = (path: string): Effect.Effect<Manifest | null, StoreError> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readFile(path, "utf8").catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? null : Promise.reject(e))),
      catch: (e) => storeError(path, "cannot read the run manifest", e),
    })
    if (text === null) return null
    const json = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => storeError(path, "the run manifest is not valid JSON", e) })
    return yield* decodeValue(Manifest, json, path).pipe(Effect.mapError((e) => new StoreError({ path, message: `${e.message} (not a bdvax run manifest)` })))
  })

export const writeManifest = (path: string, m: Manifest): Effect.Effect<void, StoreError> =>
  Effect.tryPromise({
    try: () => writeFileAtomic(path, `${JSON.stringify(m, null, 2)}\n`),
    catch: (e) => storeError(path, "cannot write the run manifest", e),
  })
