import { arch, availableParallelism, platform } from "node:os"
import { type BackendName, Device } from "@bdvax/core-tensor"
import { Duration, Effect } from "effect"
import { Command } from "effect/cli"
import { errorText } from "../errors.js"
import { emit, table } from "../output.js"
import { VERSION } from "../version.js"

/**
 * `bdvax info`: which tensor backends this machine offers. Each backend is probed by creating (and destroying) a
 * device; a missing WebGPU adapter or driver is a result ("unavailable" with the reason), not a crash.
 */
export interface BackendReport {
  readonly backend: BackendName
  readonly available: boolean
  /** Adapter / CPU description. */
  readonly device?: string
  readonly features?: readonly string[]
  readonly maxBufferBytes?: number
  readonly maxBindingBytes?: number
  /** CPU: threads the backend uses (BDVAX_CPU_THREADS or all cores). */
  readonly threads?: number
  readonly error?: string
}

const PROBE_TIMEOUT = Duration.seconds(30)

export const probeBackend = (backend: BackendName): Effect.Effect<BackendReport> =>
  Effect.tryPromise(async () => {
    const dev = await Device.create(backend)
    try {
      const info = dev.backend.info
      const threads = /(\d+) threads?/.exec(info.device)?.[1]
      return {
        backend,
        available: true,
        device: info.device,
        features: [...info.features],
        maxBufferBytes: info.limits.maxBufferSize,
        maxBindingBytes: info.limits.maxBindingSize,
        ...(threads === undefined ? {} : { threads: Number(threads) }),
      } satisfies BackendReport
    } finally {
      dev.destroy()
    }
  }).pipe(
    Effect.timeoutOrElse({ duration: PROBE_TIMEOUT, orElse: () => Effect.fail(new Error(`no answer within ${Duration.toSeconds(PROBE_TIMEOUT)} s`)) }),
    Effect.catch((e) => Effect.succeed({ backend, available: false, error: errorText(e) } satisfies BackendReport)),
  )

const gib = (bytes: number | undefined) =>
  bytes === undefined ? "–" : bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`

export const info = Effect.gen(function* () {
  const backends = [yield* probeBackend("cpu"), yield* probeBackend("webgpu")]
  const system = { bdvax: VERSION, node: process.version, platform: `${platform()} ${arch()}`, cores: availableParallelism() }
  const rows = backends.map((b) => [
    b.backend,
    b.available ? "yes" : "no",
    b.available ? (b.device ?? "") : (b.error ?? ""),
    b.threads === undefined ? "" : String(b.threads),
    gib(b.maxBufferBytes),
    gib(b.maxBindingBytes),
  ])
  const text = [
    `bdvax ${VERSION} · Node ${system.node} · ${system.platform} · ${system.cores} cores`,
    "",
    table(["backend", "available", "device / reason", "threads", "max buffer", "max binding"], rows),
    ...backends.filter((b) => b.available && b.features?.length).map((b) => `${b.backend} features: ${b.features!.join(", ")}`),
  ].join("\n")
  yield* emit({ json: { system, backends }, text })
})

export const infoCommand = Command.make("info", {}, () => info).pipe(
  Command.withDescription("Show the tensor backends available here: CPU threads and features, the WebGPU adapter and its limits (or why there is none)"),
)
