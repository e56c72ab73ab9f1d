import { type KernelCall, specOf, type View } from "../../backend.js"
import { tableTuning, type AdapterDescription, type MatmulTile, storeTuning, tile, tileName, tileProblem, type WebGpuTuning } from "./tuning.js"
import type { WebGpuBackend } from "./webgpu-backend.js"

/**
 * The one-time matmul micro-autotune (BDVAX_WEBGPU_AUTOTUNE=1, see tuning.ts). For two probe products — a large
 * square one and a medium, transformer-linear-sized one — every candidate tile the device supports runs alone
 * (no split-K), its output checked against the first candidate's; the fastest tile per probe becomes the
 * adapter's candidate list (largest first, plus the smallest table tile as a floor for tiny products). The
 * result and the measurements go to the cache file; later backends on the same adapter load it without
 * re-measuring. Budget: about 60 s on a GPU; on lavapipe the probes are smaller.
 */

const CANDIDATES: readonly MatmulTile[] = [
  tile(128, 128, 8, 8, 8),
  tile(128, 128, 16, 8, 8),
  tile(128, 128, 32, 8, 8),
  tile(128, 64, 16, 8, 4),
  tile(64, 128, 16, 4, 8),
  tile(64, 64, 8, 8, 8),
  tile(64, 64, 16, 8, 8),
  tile(64, 64, 16, 4, 4),
  tile(64, 64, 32, 4, 4),
  tile(32, 64, 16, 4, 4),
  tile(32, 32, 16, 4, 4),
]

const BUDGET_MS = 60_000

interface Probe {
  readonly name: string
  readonly m: number
  readonly k: number
  readonly n: number
}

export interface AutotuneReport {
  readonly tuning: WebGpuTuning
  readonly measured: Record<string, Record<string, number | string>>
  readonly cacheError: string | null
}

export async function autotune(backend: WebGpuBackend, adapter: AdapterDescription, log: (line: string) => void = (l) => process.stderr.write(`[webgpu autotune] ${l}\n`)): Promise<AutotuneReport> {
  const start = performance.now()
  const base = tableTuning(adapter)
  const software = base.source === "table:lavapipe"
  const probes: Probe[] = software
    ? [
        { name: "large", m: 512, k: 512, n: 512 },
        { name: "medium", m: 256, k: 576, n: 384 },
      ]
    : [
        { name: "large", m: 2048, k: 2048, n: 2048 },
        { name: "medium", m: 512, k: 1024, n: 1536 },
      ]
  const { maxInvocations, workgroupStorage } = backend.kernelContext
  const candidates = CANDIDATES.filter((t) => tileProblem(t, maxInvocations, workgroupStorage) === null)
  const measured: Record<string, Record<string, number | string>> = {}
  const best: Record<string, { tile: MatmulTile; gflops: number }> = {}
  const original = backend.tuning
  log(`adapter ${adapter.description || adapter.device}: ${candidates.length} candidate tiles, probes ${probes.map((p) => `${p.m}x${p.k}x${p.n}`).join(", ")}`)
  try {
    for (const probe of probes) {
      measured[probe.name] = {}
      const { call, free } = probeCall(backend, probe)
      let reference: Float32Array | null = null
      try {
        for (const t of candidates) {
          if (performance.now() - start > BUDGET_MS) {
            measured[probe.name][tileName(t)] = "skipped (budget)"
            continue
          }
          backend.setTuning({ ...base, source: "autotune-probe", matmul: { ...base.matmul, tiles: [t], parallelism: 1, splitKMinK: 0 } })
          try {
            const gflops = await timeCall(backend, call, probe, software)
            const out = new Float32Array((await backend.read(call.out.buffer, 0, probe.m * probe.n * 4)).buffer)
            if (reference === null) reference = out
            else if (!close(out, reference)) {
              measured[probe.name][tileName(t)] = "wrong result"
              log(`${probe.name} ${tileName(t)}: wrong result, skipped`)
              continue
            }
            measured[probe.name][tileName(t)] = Math.round(gflops * 100) / 100
            log(`${probe.name} ${tileName(t)}: ${gflops.toFixed(2)} GFLOP/s`)
            if (best[probe.name] === undefined || gflops > best[probe.name].gflops) best[probe.name] = { tile: t, gflops }
          } catch (e) {
            measured[probe.name][tileName(t)] = `failed: ${String(e)}`
          }
        }
      } finally {
        free()
      }
    }
  } finally {
    backend.setTuning(original)
  }
  const chosen = [best.large?.tile, best.medium?.tile, base.matmul.tiles[base.matmul.tiles.length - 1]].filter((t): t is MatmulTile => t !== undefined)
  const tiles = chosen
    .filter((t, i) => chosen.findIndex((u) => tileName(u) === tileName(t)) === i)
    .filter((t) => tileProblem(t, maxInvocations, workgroupStorage) === null)
    .sort((x, y) => y.m * y.n - x.m * x.n)
  const tuning: WebGpuTuning = { ...base, source: "autotune", matmul: { ...base.matmul, tiles: tiles.length > 0 ? tiles : base.matmul.tiles } }
  const cacheError = storeTuning(adapter, { tuning, measured, date: new Date().toISOString() })
  if (cacheError !== null) log(cacheError)
  log(`chose ${tuning.matmul.tiles.map(tileName).join(", ")} in ${((performance.now() - start) / 1000).toFixed(1)} s`)
  backend.setTuning(tuning)
  return { tuning, measured, cacheError }
}

function probeCall(backend: WebGpuBackend, { m, k, n }: Probe): { call: KernelCall & { kind: "matmul"; out: View }; free: () => void } {
  const view = (rows: number, cols: number, fill: boolean): View => {
    const buffer = backend.alloc(rows * cols * 4)
    if (fill) {
      const data = new Float32Array(rows * cols)
      let s = rows * 7919 + cols
      for (let i = 0; i < data.length; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0
        data[i] = s / 2 ** 32 - 0.5
      }
      backend.write(buffer, data)
    }
    return { buffer, dtype: "float32", shape: [rows, cols], strides: [cols, 1], offset: 0 }
  }
  const call = { kind: "matmul" as const, a: view(m, k, true), b: view(k, n, true), out: view(m, n, false) }
  return { call, free: () => [call.a, call.b, call.out].forEach((v) => backend.free(v.buffer)) }
}

async function timeCall(backend: WebGpuBackend, call: KernelCall, { m, k, n }: Probe, software: boolean): Promise<number> {
  const program = backend.compile(specOf(call))
  backend.dispatch(program, call)
  await backend.flush()
  const minMs = software ? 300 : 150
  const maxReps = software ? 5 : 50
  let reps = 0
  const t0 = performance.now()
  // Batches of dispatches per flush, so that a fast GPU is not timed on submission latency.
  const batch = software ? 1 : 10
  while (reps < maxReps && (reps === 0 || performance.now() - t0 < minMs)) {
    for (let i = 0; i < batch; i++) backend.dispatch(program, call)
    await backend.flush()
    reps += batch
  }
  const seconds = (performance.now() - t0) / 1000
  return (2 * m * k * n * reps) / seconds / 1e9
}

function close(a: Float32Array, b: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i] - b[i]) <= 1e-3 * (1 + Math.abs(b[i])))) return false
  return true
}
