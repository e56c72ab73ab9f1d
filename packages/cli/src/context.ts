import { join, resolve } from "node:path"
import { TensorDevice } from "@bdvax/core-tensor"
import { Effect, Option } from "effect"
import { errorText, StageError } from "./errors.js"
import { BackendFlag, RunDirFlag } from "./flags.js"
import { Store } from "./store/store.js"

/** The run folder of a command: `--run-dir`, else runs/<defaultName> under the working directory. */
export const runDirFor = (defaultName: string) =>
  Effect.gen(function* () {
    const flag = yield* RunDirFlag
    return resolve(Option.getOrElse(flag, () => join("runs", defaultName)))
  })

/**
 * Provide the artifact store of the command's run folder (locked while `program` runs). The manifest records the
 * settings and the backend; the backend is not part of stage hashes — an artifact is a valid result whichever
 * device computed it, so a run started on one backend can be finished on another.
 */
export const withStore = <A, E, R>(o: { readonly command: string; readonly defaultName: string; readonly settings: object }, program: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const runDir = yield* runDirFor(o.defaultName)
    const backend = yield* BackendFlag
    return yield* program.pipe(Effect.provide(Store.layer({ runDir, command: o.command, settings: { ...o.settings, backend } })))
  })

/** Provide the tensor device chosen by `--backend`, destroyed when `program` ends. */
export const withDevice = <A, E, R>(program: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const backend = yield* BackendFlag
    return yield* program.pipe(Effect.provide(TensorDevice.layer(backend)))
  })

/** Run library code (which throws tagged errors naming files) as part of a stage. */
export const attempt = <A>(stage: string, f: () => Promise<A>): Effect.Effect<A, StageError> =>
  Effect.tryPromise({ try: f, catch: (cause) => new StageError({ stage, message: `${stage}: ${errorText(cause)}`, cause }) })
