import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"

/**
 * Kernel parameters per adapter. The kernels are generators: tile sizes, work per thread and how many
 * workgroups keep a device busy are inputs, and the values come from, in order of precedence:
 *
 *   1. `createWebGpuBackend({ tuning })` (tests, experiments);
 *   2. the autotune cache, `$XDG_CACHE_HOME/bdvax/webgpu-tuning.json` (default `~/.cache/bdvax/…`, or the file
 *      named by BDVAX_WEBGPU_TUNING_CACHE), keyed by the adapter's vendor, architecture, device and description;
 *      written by the one-time micro-autotune (autotune.ts) that runs when BDVAX_WEBGPU_AUTOTUNE=1 and no entry
 *      for this adapter exists yet (BDVAX_WEBGPU_AUTOTUNE=force re-measures);
 *   3. the table below, by vendor and architecture (Dawn's `adapter.info`), with a default row.
 *
 * The table's numbers are design values, not measurements, except the lavapipe row (measured on a 2-core
 * EPYC VM): a matmul's candidate tiles are listed largest first, and the planner (matmul.ts) takes the largest
 * that still yields about `parallelism` workgroups — the number of workgroups that fill the device (streaming
 * multiprocessors × resident workgroups on a GPU, threads on lavapipe) — and splits K when even the smallest
 * leaves the device idle.
 */

/** A matmul tile: the workgroup computes m × n outputs, walking K in slabs of k; each thread owns a rows × cols
 *  register tile, so the workgroup has (m / rows) · (n / cols) threads. rows and cols are multiples of 4. */
export interface MatmulTile {
  readonly m: number
  readonly n: number
  readonly k: number
  readonly rows: number
  readonly cols: number
}

export interface WebGpuTuning {
  /** Where the values came from: "table:<row>", "autotune", "options". */
  readonly source: string
  readonly matmul: {
    /** Candidate tiles, largest first. */
    readonly tiles: readonly MatmulTile[]
    /** Workgroups that keep the device busy. */
    readonly parallelism: number
    /** Split K (partial sums + a reduce pass) only when K is at least this and the tiles alone leave the device
     *  under half busy. 0 disables split-K. */
    readonly splitKMinK: number
    /** Fewest K elements per split. */
    readonly splitKChunk: number
    /** Compile-time bounds for the loops over the tile (the driver unrolls them), or bounds read from the
     *  uniforms (see attention.unroll). */
    readonly unroll: boolean
    /** A thread's register tile: interleaved rows and column quads (thread t owns quads t, t + T, …: conflict-free
     *  workgroup-memory reads, coalesced stores — what GPUs want) or one contiguous run of quads. */
    readonly interleave: boolean
    /** Prefetch the next K slab into registers during the multiply (hides memory latency on GPUs; on lavapipe
     *  the extra live registers across barriers only slow compilation down). */
    readonly prefetch: boolean
    /** Products below this many flops (2·M·N·K·batch) use the generic variant of their tile (scalar strided
     *  loads, all bounds checked) instead of compiling a specialised one. */
    readonly specializeMinFlops: number
    /** GEMV (M = 1 or N = 1): threads cooperating on one output when K is contiguous. A power of two ≤ 256. */
    readonly gemvLanes: number
  }
  readonly attention: {
    /** Candidate (query rows, keys) block sizes, largest first; the first whose tiles fit the workgroup memory
     *  (attention.ts) is used. */
    readonly blocks: ReadonlyArray<readonly [number, number]>
    /** Threads per workgroup, at most. */
    readonly threads: number
    /**
     * Loops over the head dim and the blocks get compile-time bounds (true: the driver unrolls them, as GPUs
     * want) or bounds read from the uniforms (false: lavapipe's LLVM fully unrolls constant-trip loops, which
     * made one attention kernel take 25 s instead of 2 s to compile and run no faster).
     */
    readonly unroll: boolean
  }
}

export interface AdapterDescription {
  readonly vendor: string
  readonly architecture: string
  readonly device: string
  readonly description: string
}

export const tile = (m: number, n: number, k: number, rows: number, cols: number): MatmulTile => ({ m, n, k, rows, cols })
export const tileName = (t: MatmulTile) => `${t.m}x${t.n}x${t.k}/${t.rows}x${t.cols}`
export const tileThreads = (t: MatmulTile) => (t.m / t.rows) * (t.n / t.cols)

/** Whether a tile is one the generator supports within `maxInvocations` threads and `storage` bytes of shared
 *  memory (the reason, or null). */
export function tileProblem(t: MatmulTile, maxInvocations: number, storage: number): string | null {
  const threads = tileThreads(t)
  if (![t.m, t.n, t.k, t.rows, t.cols].every((v) => Number.isInteger(v) && v > 0)) return "sizes must be positive integers"
  if (t.rows % 4 !== 0 || t.cols % 4 !== 0 || t.k % 4 !== 0) return "rows, cols and k must be multiples of 4"
  if (t.m % t.rows !== 0 || t.n % t.cols !== 0) return "rows must divide m and cols n"
  if (threads > maxInvocations || threads < 32) return `${threads} threads (32 … ${maxInvocations} allowed)`
  if ((t.m * t.k) % (4 * threads) !== 0 || (t.n * t.k) % (4 * threads) !== 0) return "each thread must load whole vec4s of both slabs"
  if (sharedBytes(t) > storage) return `${sharedBytes(t)} bytes of workgroup memory (${storage} allowed)`
  return null
}

/** Workgroup memory of a tile: both slabs, k-major, one vec4 of padding per k row. */
export const sharedBytes = (t: MatmulTile) => 16 * t.k * (t.m / 4 + 1 + t.n / 4 + 1)

// 128×128 tiles with 8×8 outputs per thread are the classic SGEMM shape for discrete GPUs (64 accumulators,
// 16 vec4 operand loads per 64 FMAs per k); 128×64 and 64×64 keep 256 threads with fewer outputs for medium
// products; 32×32 (64 threads, 4×4) is the floor for small ones.
const GPU_TILES = [tile(128, 128, 16, 8, 8), tile(128, 64, 16, 8, 4), tile(64, 64, 16, 4, 4), tile(32, 32, 16, 4, 4)]

interface TableRow {
  readonly name: string
  readonly match: (a: AdapterDescription) => boolean
  readonly tuning: (a: AdapterDescription) => Omit<WebGpuTuning, "source">
}

/** Streaming multiprocessors by NVIDIA architecture (the largest part of each generation: the GPU check's
 *  H200 has 132); 2 resident 256-thread workgroups each. */
const NVIDIA_SMS: Record<string, number> = { hopper: 132, blackwell: 148, ampere: 108, lovelace: 128, ada: 128, turing: 72, volta: 80, pascal: 56 }

const ATTENTION_BLOCKS: ReadonlyArray<readonly [number, number]> = [
  [64, 32],
  [32, 32],
  [16, 32],
  [16, 16],
  [8, 16],
  [8, 8],
  [4, 8],
]

const gpuRow = (parallelism: number, tiles = GPU_TILES) => ({
  matmul: { tiles, parallelism, splitKMinK: 1024, splitKChunk: 256, unroll: true, interleave: true, prefetch: true, specializeMinFlops: 2 ** 20, gemvLanes: 32 },
  attention: { blocks: ATTENTION_BLOCKS, threads: 128, unroll: true },
})

const TABLE: readonly TableRow[] = [
  {
    // Mesa's lavapipe: Vulkan on the CPU (8-wide LLVM vectors, one thread per core). Workgroups run as loops over
    // SIMD lanes, so what matters is enough work per barrier; measured on 2 cores (see autotune.ts).
    name: "lavapipe",
    match: (a) => a.vendor === "mesa" && (a.architecture === "software" || a.device.startsWith("llvmpipe")),
    tuning: () => ({
      matmul: {
        tiles: [tile(128, 128, 16, 8, 8), tile(64, 64, 16, 8, 8), tile(32, 32, 16, 4, 4)],
        parallelism: Math.max(1, os.availableParallelism()),
        splitKMinK: 2048,
        splitKChunk: 512,
        unroll: true,
        interleave: false,
        prefetch: false,
        specializeMinFlops: 2 ** 25,
        gemvLanes: 32,
      },
      attention: { blocks: ATTENTION_BLOCKS, threads: 128, unroll: false },
    }),
  },
  { name: "nvidia", match: (a) => a.vendor === "nvidia", tuning: (a) => gpuRow(2 * (NVIDIA_SMS[a.architecture] ?? 80)) },
  // Compute units × 2 for a large part; RDNA's 64-wide wavefronts are happy with 256-thread workgroups.
  { name: "amd", match: (a) => a.vendor === "amd", tuning: () => gpuRow(2 * 96) },
  // Apple GPUs: fewer, wider cores; 32×32 threadgroup memory budget suits the same tiles.
  { name: "apple", match: (a) => a.vendor === "apple", tuning: () => gpuRow(64) },
  { name: "intel", match: (a) => a.vendor === "intel", tuning: () => gpuRow(64, [tile(64, 64, 16, 4, 4), tile(32, 32, 16, 4, 4)]) },
  { name: "default", match: () => true, tuning: () => gpuRow(64) },
]

/** The table row for an adapter. */
export function tableTuning(adapter: AdapterDescription): WebGpuTuning {
  const row = TABLE.find((r) => r.match(adapter))!
  return { source: `table:${row.name}`, ...row.tuning(adapter) }
}

// ---- the autotune cache -----------------------------------------------------------------------------------------

export const adapterKey = (a: AdapterDescription) => [a.vendor, a.architecture, a.device, a.description].join("|")

export function tuningCachePath(): string {
  const explicit = process.env.BDVAX_WEBGPU_TUNING_CACHE
  if (explicit !== undefined && explicit !== "") return explicit
  const base = process.env.XDG_CACHE_HOME !== undefined && process.env.XDG_CACHE_HOME !== "" ? process.env.XDG_CACHE_HOME : path.join(os.homedir(), ".cache")
  return path.join(base, "bdvax", "webgpu-tuning.json")
}

export const autotuneEnabled = () => {
  const v = process.env.BDVAX_WEBGPU_AUTOTUNE
  return v === "1" || v === "force"
}

const CACHE_VERSION = 1

export interface CacheEntry {
  readonly tuning: WebGpuTuning
  /** What autotune measured (GFLOP/s per candidate and probe shape), for the curious. */
  readonly measured?: unknown
  readonly date: string
}

interface CacheFile {
  readonly version: number
  readonly entries: Record<string, CacheEntry>
}

function readCache(): CacheFile {
  try {
    const parsed = JSON.parse(readFileSync(tuningCachePath(), "utf8")) as CacheFile
    if (parsed.version === CACHE_VERSION && typeof parsed.entries === "object" && parsed.entries !== null) return parsed
  } catch {
    // missing or unreadable: no cached tuning
  }
  return { version: CACHE_VERSION, entries: {} }
}

/** The cached tuning for this adapter, if it is still valid for the device's limits. */
export function cachedTuning(adapter: AdapterDescription, limits: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupStorageSize: number }): WebGpuTuning | null {
  if (process.env.BDVAX_WEBGPU_AUTOTUNE === "force") return null
  const entry = readCache().entries[adapterKey(adapter)]
  if (entry === undefined) return null
  const t = entry.tuning
  const ok =
    t?.matmul !== undefined &&
    typeof t.matmul.unroll === "boolean" &&
    typeof t.matmul.interleave === "boolean" &&
    typeof t.attention?.unroll === "boolean" &&
    Array.isArray(t.matmul.tiles) &&
    t.matmul.tiles.length > 0 &&
    t.matmul.tiles.every((x) => tileProblem(x, limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupStorageSize) === null) &&
    t.matmul.parallelism >= 1 &&
    typeof t.matmul.prefetch === "boolean" &&
    typeof t.matmul.specializeMinFlops === "number" &&
    [1, 2, 4, 8, 16, 32, 64, 128, 256].includes(t.matmul.gemvLanes) &&
    Array.isArray(t.attention?.blocks) &&
    t.attention.blocks.length > 0 &&
    t.attention.threads >= 32
  return ok ? { ...t, source: "autotune" } : null
}

/** Store a tuning for this adapter (atomically: write a temp file, rename). Failures are reported, not thrown:
 *  a read-only home directory must not break the backend. */
export function storeTuning(adapter: AdapterDescription, entry: CacheEntry): string | null {
  const file = tuningCachePath()
  try {
    const cache = readCache()
    const next: CacheFile = { version: CACHE_VERSION, entries: { ...cache.entries, [adapterKey(adapter)]: entry } }
    mkdirSync(path.dirname(file), { recursive: true })
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, `${JSON.stringify(next, null, 2)}\n`)
    renameSync(tmp, file)
    return null
  } catch (e) {
    return `could not write ${file}: ${String(e)}`
  }
}

/** The tuning a new backend uses: the autotune cache entry for this adapter if any, else the table row. */
export function resolveTuning(adapter: AdapterDescription, limits: GPUSupportedLimits): WebGpuTuning {
  const cached = existsSync(tuningCachePath()) ? cachedTuning(adapter, limits) : null
  const base = cached ?? tableTuning(adapter)
  // Drop tiles this device cannot run (a small workgroup memory or invocation limit).
  const tiles = base.matmul.tiles.filter((t) => tileProblem(t, limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupStorageSize) === null)
  return { ...base, matmul: { ...base.matmul, tiles: tiles.length > 0 ? tiles : [tile(32, 32, 8, 4, 4)] } }
}
