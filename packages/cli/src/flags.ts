import { Flag, GlobalFlag } from "effect/cli"

/**
 * Flags every command accepts (before or after its name): effect/cli "setting" global flags, read in a handler
 * with `yield* BackendFlag` etc.
 */
export const BACKENDS = ["cpu", "webgpu"] as const
export type BackendChoice = (typeof BACKENDS)[number]

export const BackendFlag = GlobalFlag.Setting("backend")({
  flag: Flag.Literals("backend", BACKENDS).pipe(
    Flag.withDescription("Tensor backend: cpu (WebAssembly SIMD, threads) or webgpu (Dawn; see `bdvax info`)"),
    Flag.withDefault("cpu" as BackendChoice),
  ),
})

export const JsonFlag = GlobalFlag.Setting("json")({
  flag: Flag.Boolean("json").pipe(
    Flag.withDescription("Print machine-readable results (JSON) on stdout; progress stays on stderr"),
    Flag.withDefault(false),
  ),
})

export const RunDirFlag = GlobalFlag.Setting("run-dir")({
  flag: Flag.String("run-dir").pipe(
    Flag.withDescription("Run folder of the artifact store (default runs/<command or experiment name>); re-running resumes it"),
    Flag.optional,
  ),
})

export const GLOBAL_FLAGS = [BackendFlag, JsonFlag, RunDirFlag] as const
