import { randomBytes } from "node:crypto"
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises"
import { basename, isAbsolute, join, relative, resolve } from "node:path"
import { Cause, Context, Effect, Exit, Layer, Schema, Semaphore } from "effect"
import { decodeValue } from "../config/decode.js"
import { errorText, type StoreError, storeError } from "../errors.js"
import { Progress } from "../progress/progress.js"
import { copyAtomic, fsyncTree, removeTemporaries, renameDurably, TEMP_PREFIX } from "./atomic.js"
import { canonicalJson, STORE_FORMAT, stageHash } from "./hash.js"
import { lockRunDir } from "./lock.js"
import { MANIFEST_FILE, type Manifest, newManifest, readManifest, type StageRecord, writeManifest } from "./manifest.js"

/**
 * The artifact store: a run folder
 *
 *   runs/<name>/manifest.json         the journal (manifest.ts)
 *   runs/<name>/stages/<kind>-<hash>/  one folder per finished stage: its outputs and stage.json
 *   runs/<name>/report.md, …           published outputs
 *
 * A stage's folder is addressed by the hash of (kind, version, settings, inputs' hashes) (hash.ts). It is built
 * under a temporary name, flushed to disk and renamed into place (atomic.ts), and it is finished exactly when the
 * folder exists with a stage.json that decodes — so a run killed at any instant leaves either a finished stage or
 * a temporary folder that the next run deletes, and re-running re-uses every finished stage.
 */

export const STAGES_DIR = "stages"
export const STAGE_FILE = "stage.json"

/** A kind of stage: its name, its version (bump it when its code or outputs change) and the schema of its result. */
export interface StageKind<R> {
  readonly name: string
  readonly version: number
  readonly result: Schema.Top & { readonly Type: R; readonly DecodingServices: never }
}

export const defineStage = <S extends Schema.Top & { readonly DecodingServices: never }>(name: string, version: number, result: S): StageKind<S["Type"]> => {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new RangeError(`stage kind "${name}": use lower-case letters, digits and dashes`)
  if (!Number.isInteger(version) || version < 1) throw new RangeError(`stage kind "${name}": version must be a positive integer`)
  return { name, version, result }
}

/** What a stage depends on: an earlier stage's artifact or a user's file (see hash.ts `externalInput`). */
export interface StageInput {
  readonly hash: string
  /** The artifact's folder, or the external file/folder. */
  readonly path: string
}

export interface StageArtifact<R> extends StageInput {
  readonly kind: string
  readonly label: string
  readonly result: R
  /** True when the stage was found finished and not run again. */
  readonly reused: boolean
}

export interface StageContext {
  /** The (temporary) folder to write the stage's outputs into; it becomes the artifact's `path`. */
  readonly dir: string
  readonly label: string
}

export interface StageOptions {
  /** The stage's name in the manifest and in progress lines; default the kind's name. Unique within a run. */
  readonly label?: string
}

export interface StoreShape {
  readonly runDir: string
  readonly run: <R, E, Req>(
    kind: StageKind<R>,
    settings: unknown,
    inputs: Readonly<Record<string, StageInput>>,
    work: (ctx: StageContext) => Effect.Effect<R, E, Req>,
    options?: StageOptions,
  ) => Effect.Effect<StageArtifact<R>, E | StoreError, Req>
  /** Copy a file or folder into place atomically (relative destinations are in the run folder) and record it under `name`. */
  readonly publish: (name: string, from: string, to: string) => Effect.Effect<string, StoreError>
  /** The manifest as it stands. */
  readonly manifest: Effect.Effect<Manifest>
}

export interface StoreOptions {
  readonly runDir: string
  /** The command that owns the run, and its settings (recorded in the manifest). */
  readonly command: string
  readonly settings: unknown
}

const StageFile = Schema.Struct({
  format: Schema.Literal(STORE_FORMAT),
  kind: Schema.String,
  version: Schema.Number,
  hash: Schema.String,
  settings: Schema.Unknown,
  inputs: Schema.Record(Schema.String, Schema.String),
  result: Schema.Unknown,
})

const nowIso = () => new Date().toISOString()

const tryStore = <A>(path: string, what: string, f: () => Promise<A>): Effect.Effect<A, StoreError> =>
  Effect.tryPromise({ try: f, catch: (e) => storeError(path, what, e) })

/**
 * The finished stage in `dir`, or null when there is none. A folder whose stage.json is missing, unreadable or
 * for another hash is not a finished stage (it is reported and recomputed, never trusted).
 */
function readFinished<R>(dir: string, hash: string, kind: StageKind<R>): Effect.Effect<{ result: R } | { invalid: string } | null> {
  return Effect.gen(function* () {
    const file = join(dir, STAGE_FILE)
    const read = yield* Effect.promise(() =>
      readFile(file, "utf8").then(
        (text) => ({ text }),
        (e: NodeJS.ErrnoException) => (e.code === "ENOENT" || e.code === "ENOTDIR" ? null : { error: e.message }),
      ),
    )
    if (read === null) {
      const exists = yield* Effect.promise(() => stat(dir).then((st) => st.isDirectory(), () => false))
      return exists ? { invalid: `${file} is missing` } : null
    }
    if ("error" in read) return { invalid: `${file} cannot be read (${read.error})` }
    let json: unknown
    try {
      json = JSON.parse(read.text)
    } catch (e) {
      return { invalid: `${file} is not valid JSON (${errorText(e)})` }
    }
    const decoded = yield* Effect.result(decodeValue(StageFile, json, file))
    if (decoded._tag === "Failure") return { invalid: decoded.failure.message }
    if (decoded.success.hash !== hash) return { invalid: `${file} is for hash ${decoded.success.hash}` }
    const result = yield* Effect.result(decodeValue(kind.result, decoded.success.result, file))
    if (result._tag === "Failure") return { invalid: result.failure.message }
    return { result: result.success as R }
  })
}

const makeStore = (options: StoreOptions) =>
  Effect.gen(function* () {
    const progress = yield* Progress
    const runDir = resolve(options.runDir)
    const stagesDir = join(runDir, STAGES_DIR)
    const manifestPath = join(runDir, MANIFEST_FILE)
    yield* tryStore(runDir, "cannot create the run folder", () => mkdir(stagesDir, { recursive: true }))
    yield* lockRunDir(runDir)
    const leftovers = yield* tryStore(stagesDir, "cannot clean unfinished stages", () => removeTemporaries(stagesDir))
    if (leftovers.length > 0) yield* progress.note(`run ${runDir}: removed ${leftovers.length} unfinished stage folder(s) of an interrupted run`)
    yield* tryStore(runDir, "cannot clean unfinished files", () => removeTemporaries(runDir))

    const previous = yield* readManifest(manifestPath)
    let manifest: Manifest = {
      ...(previous ?? newManifest(basename(runDir), options.command, options.settings, nowIso())),
      command: options.command,
      settings: options.settings,
      updatedAt: nowIso(),
    }
    const lock = yield* Semaphore.make(1)
    const save = (change: (m: Manifest) => Manifest) =>
      lock.withPermits(1)(
        Effect.suspend(() => {
          manifest = { ...change(manifest), updatedAt: nowIso() }
          return writeManifest(manifestPath, manifest)
        }),
      )
    const setStage = (label: string, record: StageRecord) => save((m) => ({ ...m, stages: { ...m.stages, [label]: record } }))
    yield* save((m) => m)

    const run: StoreShape["run"] = (kind, settings, inputs, work, stageOptions = {}) =>
      Effect.gen(function* () {
        const label = stageOptions.label ?? kind.name
        const inputHashes = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.hash]))
        let hash: string
        try {
          hash = stageHash({ kind: kind.name, version: kind.version, settings, inputs: inputHashes })
        } catch (e) {
          return yield* Effect.fail(storeError(stagesDir, `stage ${label}: settings cannot be hashed`, e))
        }
        const folder = `${kind.name}-${hash.slice(0, 16)}`
        const finalDir = join(stagesDir, folder)
        const rel = relative(runDir, finalDir)
        const base = { kind: kind.name, version: kind.version, hash, dir: rel, inputs: inputHashes }

        const found = yield* readFinished(finalDir, hash, kind)
        if (found !== null && "result" in found) {
          const t = nowIso()
          yield* setStage(label, { ...base, status: "reused", startedAt: t, finishedAt: t, durationMs: 0 })
          yield* progress.note(`✓ ${label}: reused ${rel}`)
          return { kind: kind.name, label, hash, path: finalDir, result: found.result, reused: true }
        }
        if (found !== null) {
          yield* progress.note(`! ${label}: ${found.invalid}; recomputing`)
          yield* tryStore(finalDir, "cannot remove an invalid stage folder", () => rm(finalDir, { recursive: true, force: true }))
        }

        const startedAt = nowIso()
        const t0 = performance.now()
        yield* setStage(label, { ...base, status: "running", startedAt })
        yield* progress.note(`▶ ${label}: running → ${rel}`)
        const tmp = join(stagesDir, `${TEMP_PREFIX}${folder}-${process.pid}-${randomBytes(4).toString("hex")}`)
        yield* tryStore(tmp, "cannot create the stage folder", () => mkdir(tmp, { recursive: true }))
        const result = yield* work({ dir: tmp, label }).pipe(
          Effect.onExit((exit) =>
            Exit.isSuccess(exit)
              ? Effect.void
              : Effect.gen(function* () {
                  yield* Effect.promise(() => rm(tmp, { recursive: true, force: true }))
                  const error = errorText(Cause.squash(exit.cause))
                  yield* setStage(label, { ...base, status: "failed", startedAt, finishedAt: nowIso(), durationMs: performance.now() - t0, error }).pipe(Effect.ignore)
                }),
          ),
        )
        const stageJson = { format: STORE_FORMAT, kind: kind.name, version: kind.version, hash, settings, inputs: inputHashes, result }
        let text: string
        try {
          // canonical for hashing only; the file is pretty-printed in the key order given, which is deterministic
          canonicalJson(stageJson)
          text = `${JSON.stringify(stageJson, null, 2)}\n`
        } catch (e) {
          yield* Effect.promise(() => rm(tmp, { recursive: true, force: true }))
          return yield* Effect.fail(storeError(tmp, `stage ${label}: its result is not plain JSON`, e))
        }
        yield* tryStore(finalDir, "cannot finish the stage folder", async () => {
          await writeFile(join(tmp, STAGE_FILE), text)
          await fsyncTree(tmp)
          await renameDurably(tmp, finalDir)
        }).pipe(Effect.onError(() => Effect.promise(() => rm(tmp, { recursive: true, force: true }))))
        const durationMs = performance.now() - t0
        yield* setStage(label, { ...base, status: "finished", startedAt, finishedAt: nowIso(), durationMs })
        yield* progress.note(`✓ ${label}: finished in ${(durationMs / 1000).toFixed(1)} s`)
        // Return what a later run would read back, so a fresh and a reused stage look the same to the caller.
        const reread = yield* readFinished(finalDir, hash, kind)
        if (reread === null || !("result" in reread)) return yield* Effect.fail(storeError(finalDir, `stage ${label}: ${reread === null ? "vanished" : reread.invalid}`))
        return { kind: kind.name, label, hash, path: finalDir, result: reread.result, reused: false }
      })

    const publish: StoreShape["publish"] = (name, from, to) =>
      Effect.gen(function* () {
        const dest = isAbsolute(to) ? to : join(runDir, to)
        yield* tryStore(dest, "cannot publish", () => copyAtomic(from, dest))
        const recorded = dest.startsWith(`${runDir}/`) ? relative(runDir, dest) : dest
        yield* save((m) => ({ ...m, outputs: { ...m.outputs, [name]: recorded } }))
        return dest
      })

    return Store.of({ runDir, run, publish, manifest: Effect.sync(() => manifest) })
  })

export class Store extends Context.Service<Store, StoreShape>()("@bdvax/cli/Store") {
  /** A run folder, locked for the layer's lifetime; unfinished stages of an interrupted run are cleaned first. */
  static layer(options: StoreOptions): Layer.Layer<Store, StoreError, Progress> {
    return Layer.effect(Store, makeStore(options))
  }
}

/**
 * Run a stage through the store: reuse its finished folder when (kind, version, settings, inputs) match, else run
 * `work` into a fresh temporary folder and commit it atomically.
 */
export const stage = <R, E, Req>(
  kind: StageKind<R>,
  settings: unknown,
  inputs: Readonly<Record<string, StageInput>>,
  work: (ctx: StageContext) => Effect.Effect<R, E, Req>,
  options?: StageOptions,
): Effect.Effect<StageArtifact<R>, E | StoreError, Req | Store> =>
  Effect.gen(function* () {
    const store = yield* Store
    return yield* store.run(kind, settings, inputs, work, options)
  })
