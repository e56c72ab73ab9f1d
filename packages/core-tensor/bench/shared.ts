/**
 * What bench-tensor.ts and its JavaScript peers (peers/jax-js.ts, peers/tfjs-wasm.ts) share: the workloads, the
 * timing loop, the result records, the deterministic input data and the spot check of matmul results.
 * scripts/bench_peer_torch.py mirrors the workloads and the data generator (`hash_data`); keep them in step.
 */

// ---- workloads --------------------------------------------------------------------------------------------------

export type MatmulShape = readonly [m: number, k: number, n: number]
export const MATMUL_SHAPES: readonly MatmulShape[] = [
  [1024, 1024, 1024],
  [2048, 2048, 2048],
  [64, 576, 1536],
]
/** Shapes that --quick leaves out. */
export const QUICK_SKIP = new Set(["2048x2048x2048"])
export const shapeKey = ([m, k, n]: MatmulShape) => `${m}x${k}x${n}`

/** Transpose variants of C = op(A)·op(B): N = as stored, T = the operand is stored transposed and read through a view. */
export const VARIANTS = ["NN", "NT", "TN", "TT"] as const
export type Variant = (typeof VARIANTS)[number]
/** The variants measured on top of the plain matmul (NN is the plain matmul row, not measured twice). */
export const T_VARIANTS = ["NT", "TN", "TT"] as const satisfies readonly Variant[]
export const TRANSPOSE_SHAPES: readonly MatmulShape[] = [
  [1024, 1024, 1024],
  [64, 576, 1536],
]
/** Stored shapes of A and B for a variant: A is [m,k] or, transposed, [k,m]; B is [k,n] or [n,k]. */
export function operandShapes([m, k, n]: MatmulShape, v: Variant): [number[], number[]] {
  return [v[0] === "T" ? [k, m] : [m, k], v[1] === "T" ? [n, k] : [k, n]]
}

/**
 * One training step of a 2-layer MLP: y = relu(x·W1 + b1)·W2 + b2 with W stored [in, out], loss = mean((y − target)²),
 * gradients w.r.t. W1, b1, W2, b2, then one Adam update (no weight decay). The same everywhere.
 */
export const MLP = {
  batch: 64,
  din: 1024,
  hidden: 4096,
  dout: 1024,
  activation: "relu",
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  initStd: 0.02,
  seeds: { w1: 11, w2: 12, x: 13, target: 14 },
} as const
/** Matmul FLOPs of one step: forward x·W1, h·W2; backward dW2 = hᵀ·dy, dh = dy·W2ᵀ, dW1 = xᵀ·dh (no dx). */
export const MLP_FLOPS = 2 * MLP.batch * (2 * MLP.din * MLP.hidden + 3 * MLP.hidden * MLP.dout)

/** The SmolLM2-135M block. */
export const BLOCK = { d: 576, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536, seq: 128, batch: 4, ropeTheta: 10000, rmsEps: 1e-5 } as const

// ---- result records (also the JSON that the peers print) ----------------------------------------------------------

export interface Timing {
  ms: number
  min_ms: number
  runs: number
  all_ms: number[]
  /** Set when the figure is the warm-up run alone (see MeasureOptions.coldLimitS). */
  cold?: boolean
}
export interface Measurement extends Partial<Timing> {
  gflops?: number
  error?: string
  /** How the spot check of the result went ("ok (16 entries)"), or why there was none. */
  check?: string
  note?: string
}
export interface StepResult extends Measurement {
  /** Loss of the first step (the initial parameters): the same inputs give the same value in every library. */
  loss0?: number
  /** Loss of the last step measured (training must have lowered it). */
  loss_last?: number
  steps?: number
  /** Peak bytes of the step, counting what was resident before it (parameters, inputs, optimizer state). */
  peak_bytes?: number
  resident_bytes?: number
  /** peak_bytes − resident_bytes: what the step itself allocated at its high-water mark. */
  step_bytes?: number
  peak_note?: string
}
export interface RowResult {
  /** "cpu", "webgpu", "torch", "numpy", "jax-js", "tfjs-wasm" */
  id: string
  label: string
  available: boolean
  error?: string
  /** Library and version. */
  name?: string
  version?: string
  /** Backend, threads, SIMD, ... in words. */
  device?: string
  threads?: number
  matmul: Record<string, Measurement>
  transposed: Record<string, Partial<Record<Variant, Measurement>>>
  mlp?: StepResult
  block?: StepResult
  notes: string[]
  setup_s?: number
  total_s?: number
}
export const emptyRow = (id: string, label: string): RowResult => ({ id, label, available: true, matmul: {}, transposed: {}, notes: [] })

export const errText = (e: unknown) =>
  (e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : typeof e === "object" && e !== null && "message" in e ? String((e as { message: unknown }).message) : String(e))
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 400)

// ---- timing -----------------------------------------------------------------------------------------------------

export interface MeasureOptions {
  budgetS: number
  maxRuns: number
  /**
   * --quick only: when the warm-up call alone takes at least this long, it is reported as the single run
   * (`cold: true`) instead of timing another call, so that the slowest rows do not eat CI's time.
   */
  coldLimitS?: number
  /**
   * Keep timing past `maxRuns` until this many seconds of timed runs (still within `budgetS`). Three runs of a
   * sub-millisecond product are mostly the transient after the warm-up (caches, TLB, threads waking), not the
   * product, and their median swung 2–3× between identical runs; a floor in time gives short workloads hundreds
   * of runs and long ones (≥ minTimeS / maxRuns each) still `maxRuns`. Every library gets the same rule.
   */
  minTimeS?: number
}

/** Timed runs of one measurement at most, whatever the time floor (keeps all_ms a readable size). */
export const MAX_TIMED_RUNS = 1000

/**
 * One warm-up call (`warmUp`, default: an untimed `run`), then timed calls until (≥ `maxRuns` runs and ≥ `minTimeS`)
 * or (≥ 1 run and ≥ `budgetS`) or MAX_TIMED_RUNS. `run` does the work up to and including the device flush and
 * returns a cleanup that is called after the clock stops. Reports the median.
 */
export async function measure(
  opts: MeasureOptions,
  run: () => Promise<() => void>,
  warmUp: () => Promise<void> = async () => (await run())(),
): Promise<Timing> {
  const w0 = performance.now()
  await warmUp()
  const warmMs = performance.now() - w0
  if (opts.coldLimitS !== undefined && warmMs >= opts.coldLimitS * 1000) {
    const ms = Math.round(warmMs * 100) / 100
    return { ms: warmMs, min_ms: warmMs, runs: 1, all_ms: [ms], cold: true }
  }
  const times: number[] = []
  const start = performance.now()
  const minMs = (opts.minTimeS ?? 0) * 1000
  for (;;) {
    const t0 = performance.now()
    const cleanup = await run()
    times.push(performance.now() - t0)
    cleanup()
    const elapsed = performance.now() - start
    if (elapsed >= opts.budgetS * 1000 || times.length >= MAX_TIMED_RUNS) break
    if (times.length >= opts.maxRuns && elapsed >= minMs) break
  }
  const sorted = [...times].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const ms = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  return { ms, min_ms: sorted[0], runs: times.length, all_ms: times.map((t) => Math.round(t * 100) / 100) }
}

// ---- deterministic data -----------------------------------------------------------------------------------------

/** lowbias32 (Chris Wellons): a 32-bit integer hash. */
function hash32(x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x7feb352d)
  x ^= x >>> 15
  x = Math.imul(x, 0x846ca68b)
  x ^= x >>> 16
  return x >>> 0
}

/**
 * n values, uniform with mean 0 and standard deviation `std`: element i is a hash of (i + hash(seed)). Counter-based,
 * so NumPy reproduces it bit for bit (scripts/bench_peer_torch.py `hash_data`), and every library trains the MLP on
 * the same numbers.
 */
export function hashData(n: number, seed: number, std = 1): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n)
  const mix = hash32(seed >>> 0)
  const scale = Math.sqrt(3) * std
  for (let i = 0; i < n; i++) out[i] = (((hash32((i + mix) >>> 0) + 0.5) * 2.3283064365386963e-10) * 2 - 1) * scale
  return out
}

// ---- spot check -------------------------------------------------------------------------------------------------

/**
 * Compares 16 entries of C = op(A)·op(B) (row-major host copies of the stored operands) against a float64 dot
 * product. Returns undefined when they agree, else a description of the first mismatch.
 */
export function checkMatmul(a: Float32Array, b: Float32Array, c: ArrayLike<number>, [m, k, n]: MatmulShape, v: Variant): string | undefined {
  if (c.length !== m * n) return `result has ${c.length} elements, expected ${m * n}`
  const aAt = v[0] === "T" ? (i: number, p: number) => a[p * m + i] : (i: number, p: number) => a[i * k + p]
  const bAt = v[1] === "T" ? (p: number, j: number) => b[j * k + p] : (p: number, j: number) => b[p * n + j]
  for (let s = 0; s < 16; s++) {
    const i = s === 0 ? 0 : s === 1 ? m - 1 : hash32(s * 2 + 1) % m
    const j = s === 0 ? 0 : s === 1 ? n - 1 : hash32(s * 2 + 2) % n
    let ref = 0
    let mag = 0
    for (let p = 0; p < k; p++) {
      const t = aAt(i, p) * bAt(p, j)
      ref += t
      mag += Math.abs(t)
    }
    const got = c[i * n + j]
    if (!(Math.abs(got - ref) <= 1e-4 * mag + 1e-6)) return `wrong result: C[${i},${j}] = ${got}, expected ${ref.toPrecision(7)}`
  }
  return undefined
}

// ---- peer command line --------------------------------------------------------------------------------------------

export interface PeerArgs extends MeasureOptions {
  quick: boolean
  sections: Set<string>
  /** Peer-specific switches, e.g. "threads=none". */
  options: Map<string, string>
}

/** `--budget S --max-runs N [--min-time S] [--quick] [--cold-limit S] [--sections matmul,transposed,mlp] [--option key=value]…` */
export function parsePeerArgs(argv: readonly string[]): PeerArgs {
  const args: PeerArgs = { budgetS: 3, maxRuns: 10, quick: false, sections: new Set(["matmul", "transposed", "mlp"]), options: new Map() }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === "--quick") args.quick = true
    else if (a === "--budget") args.budgetS = Number(argv[++i])
    else if (a === "--max-runs") args.maxRuns = Number(argv[++i])
    else if (a === "--min-time") args.minTimeS = Number(argv[++i])
    else if (a === "--cold-limit") args.coldLimitS = Number(argv[++i])
    else if (a === "--sections") args.sections = new Set(argv[++i].split(",").filter((s) => s !== ""))
    else if (a === "--option") {
      const [key, value = "true"] = argv[++i].split("=")
      args.options.set(key, value)
    } else throw new Error(`unknown argument ${a}`)
  }
  return args
}

export const peerShapes = (quick: boolean) => MATMUL_SHAPES.filter((s) => !(quick && QUICK_SKIP.has(shapeKey(s))))

/** Progress for the orchestrator, which forwards stderr lines that start with "[peer]". */
export const peerProgress = (msg: string) => process.stderr.write(`[peer] ${msg}\n`)

/** Each stdout line is the whole result so far, so a peer that crashes half-way still reports what it measured. */
export const emitRow = (row: RowResult) => process.stdout.write(`${JSON.stringify(row)}\n`)
