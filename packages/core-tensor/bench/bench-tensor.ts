/**
 * core-tensor benchmark: each bdvax backend against the libraries a user would pick instead, all measured in the
 * same run on the same machine:
 *   - PyTorch on the CPU and NumPy (scripts/bench_peer_torch.py, in .venv/bin/python or python3),
 *   - jax-js on its wasm device (peers/jax-js.ts), TensorFlow.js on tfjs-backend-wasm (peers/tfjs-wasm.ts),
 *     each in a child process of its own (their worker threads, wasm heaps and process hooks stay out of this one).
 *
 * Workloads (bench/shared.ts):
 *   1. f32 matmul GFLOP/s at 1024³, 2048³ (not with --quick) and 64×576×1536;
 *   2. the transpose variants NN/NT/TN/TT at 1024³ and 64×576×1536 — a transposed operand is stored transposed and
 *      read through a view (bdvax ops.transpose, torch .t(), numpy .T, jax-js np.transpose under jit) or the
 *      library's transpose flags (tfjs matMul transposeA/B);
 *   3. one training step of an MLP 1024→4096→1024 (ReLU), batch 64: forward, MSE to a fixed target, backward, Adam;
 *   4. forward + backward of one Llama block (the SmolLM2-135M block), with its peak memory.
 *
 *   pnpm bench:tensor [--quick] [--backends cpu,webgpu] [--peers torch,jax-js,tfjs] [--sections …] [--json PATH]
 *                     [--no-peer] [--budget S] [--max-runs N] [--min-time S]
 *
 * Methodology: every measurement is one warm-up run (pipeline compilation, jit, buffer pools), then timed runs
 * until (≥ `max-runs` runs and ≥ `min-time` seconds) or (≥ 1 run and ≥ `budget` seconds), reporting the median — so
 * a sub-millisecond product gets hundreds of runs, not three (shared.ts measure). bdvax's timed region ends with
 * `await dev.flush()`, jax-js's with blockUntilReady, so queued work is counted. With --quick, a tfjs measurement
 * whose warm-up alone takes ≥ 2 × budget reports that run as its only run (marked *): tfjs compiles nothing on first
 * use and its slowest kernels take seconds; everything that compiles on first use (bdvax pipelines and generated
 * wasm, jax-js jit) always gets a warm-up plus at least one timed run. Matmul results of bdvax, jax-js
 * and tfjs are spot-checked (16 entries against a float64 dot product) on the warm-up run. A row that fails prints
 * "failed: <message>"; a library that cannot run prints "unavailable: <why>".
 */
import { existsSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { AdamW, type BackendName, Device, Rng, type Tensor, ops, valueAndGrad } from "../src/index.js"
import { type ChildOutput, childTrouble, runPeerProcess } from "./peer-process.js"
import {
  BLOCK,
  MATMUL_SHAPES,
  MLP,
  MLP_FLOPS,
  type MatmulShape,
  type Measurement,
  type MeasureOptions,
  QUICK_SKIP,
  type RowResult,
  type StepResult,
  T_VARIANTS,
  TRANSPOSE_SHAPES,
  VARIANTS,
  type Variant,
  checkMatmul,
  emptyRow,
  errText,
  hashData,
  measure,
  operandShapes,
  shapeKey,
} from "./shared.js"

// ---- configuration ----------------------------------------------------------------------------------------------

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const REPO_ROOT = path.resolve(BENCH_DIR, "../../..")
const TORCH_SCRIPT = path.join(REPO_ROOT, "scripts/bench_peer_torch.py")
const JS_PEERS = {
  "jax-js": { script: "peers/jax-js.ts", options: [] as string[] },
  "jax-js-1t": { script: "peers/jax-js.ts", options: ["--option", "threads=none"] },
  tfjs: { script: "peers/tfjs-wasm.ts", options: [] as string[] },
} as const
type PeerName = "torch" | keyof typeof JS_PEERS
const PEER_NAMES: readonly PeerName[] = ["torch", "jax-js", "jax-js-1t", "tfjs"]
const DEFAULT_PEERS = "torch,jax-js,tfjs"
const SECTION_NAMES = ["matmul", "transposed", "mlp", "block"] as const
type Section = (typeof SECTION_NAMES)[number]

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string" },
    backends: { type: "string", default: "cpu,webgpu" },
    peers: { type: "string", default: DEFAULT_PEERS },
    sections: { type: "string", default: SECTION_NAMES.join(",") },
    "no-peer": { type: "boolean", default: false },
    budget: { type: "string" },
    "max-runs": { type: "string" },
    "min-time": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
  allowPositionals: false,
})

if (flags.help) {
  console.log(
    [
      "usage: pnpm bench:tensor [options]",
      "  --quick              fewer runs, skip 2048³, tfjs rows slower than 2 × budget timed from their warm-up (for CI)",
      "  --backends LIST      bdvax backends, comma-separated: cpu,webgpu (default both)",
      `  --peers LIST         comma-separated from ${PEER_NAMES.join(", ")}, or none (default ${DEFAULT_PEERS};`,
      "                       torch includes numpy; jax-js-1t is jax-js without worker threads, as Node gives it)",
      `  --sections LIST      comma-separated from ${SECTION_NAMES.join(", ")} (default all)`,
      "  --no-peer            same as --peers none",
      "  --json PATH          also write every figure as JSON to PATH",
      "  --budget S           seconds per measurement after warm-up (default 3, quick 1)",
      "  --max-runs N         timed runs per measurement, unless --min-time needs more (default 10, quick 3)",
      "  --min-time S         keep timing past --max-runs until S seconds of runs (default 0.5, quick 0.25)",
    ].join("\n"),
  )
  process.exit(0)
}

function listFlag<T extends string>(name: string, raw: string, allowed: readonly T[]): T[] {
  const out: T[] = []
  for (const item of raw.split(",").map((s) => s.trim()).filter((s) => s !== "" && s !== "none")) {
    if (!allowed.includes(item as T)) {
      console.error(`bench-tensor: unknown ${name} "${item}" (expected ${allowed.join(", ")})`)
      process.exit(2)
    }
    if (!out.includes(item as T)) out.push(item as T)
  }
  return out
}

const QUICK = flags.quick === true
const BUDGET_S = flags.budget !== undefined ? Number(flags.budget) : QUICK ? 1 : 3
const MAX_RUNS = flags["max-runs"] !== undefined ? Number(flags["max-runs"]) : QUICK ? 3 : 10
const MIN_TIME_S = flags["min-time"] !== undefined ? Number(flags["min-time"]) : QUICK ? 0.25 : 0.5
/** --quick, tfjs only (no first-use compilation there): a warm-up this slow is reported as the single run. */
const COLD_LIMIT_S = QUICK ? 2 * BUDGET_S : undefined
const OPTS: MeasureOptions = { budgetS: BUDGET_S, maxRuns: MAX_RUNS, minTimeS: MIN_TIME_S }
/** A single awaited step (flush / read-back) longer than this is reported as a failure instead of hanging. */
const AWAIT_TIMEOUT_MS = (QUICK ? 1 : 5) * 60_000
/** --quick (CI): a bdvax backend that has used this much time skips its remaining measurements. */
const QUICK_BACKEND_BUDGET_S = 75
/** A peer process still running after this is killed; what it reported until then is kept. */
const PEER_TIMEOUT_MS = (QUICK ? 2 : 10) * 60_000
const BACKENDS = listFlag<BackendName>("backend", flags.backends!, ["cpu", "webgpu"])
const PEERS = flags["no-peer"] ? [] : listFlag<PeerName>("peer", flags.peers!, PEER_NAMES)
const SECTIONS = new Set(listFlag<Section>("section", flags.sections!, SECTION_NAMES))
if (!(BUDGET_S > 0) || !(MAX_RUNS >= 1) || !(MIN_TIME_S >= 0)) {
  console.error("bench-tensor: --budget must be > 0, --max-runs ≥ 1 and --min-time ≥ 0")
  process.exit(2)
}
const SHAPES = MATMUL_SHAPES.filter((s) => !(QUICK && QUICK_SKIP.has(shapeKey(s))))

const progress = (msg: string) => process.stderr.write(`[bench] ${msg}\n`)
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

// ---- bdvax measurements -------------------------------------------------------------------------------------------

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${AWAIT_TIMEOUT_MS / 1000} s`)), AWAIT_TIMEOUT_MS)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

const flush = (dev: Device) => withTimeout(dev.flush(), "flush")

/** Runs `fn`, noting tensors left alive on `dev` afterwards (a leak in the bench or the library). */
async function leakChecked<T>(dev: Device, label: string, notes: string[], fn: () => Promise<T>): Promise<T> {
  const before = dev.memory().liveTensors
  try {
    return await fn()
  } finally {
    const after = dev.memory().liveTensors
    if (after !== before) notes.push(`${label}: ${after - before} tensor(s) still alive afterwards`)
  }
}

/** C = op(A)·op(B); a transposed operand is stored transposed and passed as an ops.transpose view (no copy). */
async function benchMatmul(dev: Device, shape: MatmulShape, v: Variant, seed: number): Promise<Measurement> {
  const [m, k, n] = shape
  const [aShape, bShape] = operandShapes(shape, v)
  const aHost = hashData(size(aShape), seed)
  const bHost = hashData(size(bShape), seed + 1)
  const a = dev.tensor(aHost, aShape)
  const b = dev.tensor(bHost, bShape)
  const aOp = v[0] === "T" ? ops.transpose(a) : a
  const bOp = v[1] === "T" ? ops.transpose(b) : b
  let check = "not checked"
  try {
    const t = await measure(
      OPTS,
      async () => {
        const c = ops.matmul(aOp, bOp)
        try {
          await flush(dev)
        } catch (e) {
          c.dispose()
          throw e
        }
        return () => c.dispose()
      },
      async () => {
        const c = ops.matmul(aOp, bOp)
        try {
          await flush(dev)
          const bad = checkMatmul(aHost, bHost, (await withTimeout(c.data(), "reading the result")) as Float32Array, shape, v)
          if (bad !== undefined) throw new Error(bad)
          check = "ok (16 entries)"
        } finally {
          c.dispose()
        }
      },
    )
    return { ...t, gflops: (2 * m * k * n) / (t.ms * 1e6), check }
  } finally {
    if (aOp !== a) aOp.dispose()
    if (bOp !== b) bOp.dispose()
    a.dispose()
    b.dispose()
  }
}

interface MlpParams {
  [name: string]: Tensor
  w1: Tensor
  b1: Tensor
  w2: Tensor
  b2: Tensor
}

function mlpLoss(p: MlpParams, x: Tensor, target: Tensor): Tensor {
  const h = ops.relu(ops.add(ops.matmul(x, p.w1), p.b1))
  const y = ops.add(ops.matmul(h, p.w2), p.b2)
  return ops.mean(ops.square(ops.sub(y, target)))
}

/** One training step: value and gradients, AdamW with weight decay 0 (= Adam), gradients disposed after the flush. */
async function benchMlp(dev: Device): Promise<StepResult> {
  const { batch: B, din, hidden: H, dout, initStd, seeds, lr, beta1, beta2, eps } = MLP
  const params: MlpParams = {
    w1: dev.tensor(hashData(din * H, seeds.w1, initStd), [din, H]),
    b1: dev.zeros([H]),
    w2: dev.tensor(hashData(H * dout, seeds.w2, initStd), [H, dout]),
    b2: dev.zeros([dout]),
  }
  const x = dev.tensor(hashData(B * din, seeds.x), [B, din])
  const target = dev.tensor(hashData(B * dout, seeds.target), [B, dout])
  const optimizer = new AdamW({ lr, beta1, beta2, eps, weightDecay: 0 })
  const valueAndGrads = valueAndGrad(mlpLoss)
  const step = async (): Promise<Tensor> => {
    const [loss, grads] = valueAndGrads(params, x, target)
    try {
      optimizer.step(params, grads)
      await flush(dev)
    } catch (e) {
      loss.dispose()
      throw e
    } finally {
      for (const g of Object.values(grads)) g.dispose()
    }
    return loss
  }
  let last: Tensor | null = null
  let loss0 = Number.NaN
  try {
    const t = await measure(
      OPTS,
      async () => {
        const loss = await step()
        return () => {
          last?.dispose()
          last = loss
        }
      },
      async () => {
        const loss = await step()
        try {
          loss0 = await withTimeout(loss.item(), "reading the loss")
        } finally {
          loss.dispose()
        }
        if (!Number.isFinite(loss0)) throw new Error(`MLP loss is ${loss0}`)
      },
    )
    const lossLast = last === null ? Number.NaN : await withTimeout((last as Tensor).item(), "reading the loss")
    // Peak memory of one more step, started like the timed ones: parameters, inputs and Adam state resident.
    ;(last as Tensor | null)?.dispose()
    last = null
    const resident = dev.memory().liveBytes
    dev.account.resetPeak()
    ;(await step()).dispose()
    const peak = dev.memory().peakBytes
    return {
      ...t,
      gflops: MLP_FLOPS / (t.ms * 1e6),
      loss0,
      loss_last: lossLast,
      steps: optimizer.stepCount,
      resident_bytes: resident,
      step_bytes: peak - resident,
      peak_bytes: peak,
      peak_note: "dev.memory().peakBytes after dev.account.resetPeak() (tensor storage accounting)",
    }
  } finally {
    ;(last as Tensor | null)?.dispose()
    optimizer.dispose()
    for (const tensor of [...Object.values(params), x, target]) tensor.dispose()
  }
}

interface BlockParams {
  [name: string]: Tensor
  attnNorm: Tensor
  wq: Tensor
  wk: Tensor
  wv: Tensor
  wo: Tensor
  mlpNorm: Tensor
  wg: Tensor
  wu: Tensor
  wd: Tensor
}

/** Hugging Face LlamaRotaryEmbedding (default rope): cos/sin of cat(freqs, freqs), [T, Dh]. */
function ropeTables(dev: Device, t: number, dh: number, theta: number): [Tensor, Tensor] {
  const half = dh / 2
  const cos = new Float32Array(t * dh)
  const sin = new Float32Array(t * dh)
  for (let p = 0; p < t; p++)
    for (let i = 0; i < half; i++) {
      const invFreq = Math.fround(1 / theta ** ((2 * i) / dh))
      const angle = Math.fround(p * invFreq)
      for (const d of [i, i + half]) {
        cos[p * dh + d] = Math.cos(angle)
        sin[p * dh + d] = Math.sin(angle)
      }
    }
  return [dev.tensor(cos, [t, dh]), dev.tensor(sin, [t, dh])]
}

/** rmsNorm → q/k/v → rope → causal GQA attention → o → residual → rmsNorm → gate/up → siluMul → down → residual. */
function blockForward(p: BlockParams, x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const { batch: B, seq: T, heads: H, kvHeads: KV, headDim: Dh, rmsEps } = BLOCK
  const heads = (y: Tensor, h: number) => ops.transpose(ops.reshape(y, [B, T, h, Dh]), 1, 2)
  const h = ops.rmsNorm(x, p.attnNorm, rmsEps)
  const q = ops.rope(heads(ops.linear(h, p.wq), H), cos, sin)
  const k = ops.rope(heads(ops.linear(h, p.wk), KV), cos, sin)
  const v = heads(ops.linear(h, p.wv), KV)
  const a = ops.reshape(ops.transpose(ops.attention(q, k, v, { causal: true }), 1, 2), [B, T, H * Dh])
  const x1 = ops.add(x, ops.linear(a, p.wo))
  const h2 = ops.rmsNorm(x1, p.mlpNorm, rmsEps)
  const m = ops.siluMul(ops.linear(h2, p.wg), ops.linear(h2, p.wu))
  const out = ops.add(x1, ops.linear(m, p.wd))
  return ops.mean(ops.square(out))
}

async function benchBlock(dev: Device, seed: number): Promise<StepResult> {
  const { batch: B, seq: T, d: D, heads: H, kvHeads: KV, headDim: Dh, ffn: F, ropeTheta } = BLOCK
  const rng = new Rng(seed)
  const w = (shape: number[]) => dev.randn(shape, rng, 0, 0.02)
  const params: BlockParams = {
    attnNorm: dev.ones([D]),
    wq: w([H * Dh, D]),
    wk: w([KV * Dh, D]),
    wv: w([KV * Dh, D]),
    wo: w([D, H * Dh]),
    mlpNorm: dev.ones([D]),
    wg: w([F, D]),
    wu: w([F, D]),
    wd: w([D, F]),
  }
  const x = dev.randn([B, T, D], rng)
  const [cos, sin] = ropeTables(dev, T, Dh, ropeTheta)
  const step = valueAndGrad((p: BlockParams, input: Tensor) => blockForward(p, input, cos, sin))
  const disposeAll = (value: Tensor, grads: BlockParams) => {
    value.dispose()
    for (const g of Object.values(grads)) g.dispose()
  }
  // The warm-up step reads the loss back as a sanity check (it must be finite).
  let loss = Number.NaN
  const warmUp = async () => {
    const [value, grads] = step(params, x)
    try {
      loss = await withTimeout(value.item(), "reading the loss")
    } finally {
      disposeAll(value, grads)
    }
    if (!Number.isFinite(loss)) throw new Error(`block loss is ${loss}`)
  }
  try {
    const t = await measure(
      OPTS,
      async () => {
        const [value, grads] = step(params, x)
        try {
          await flush(dev)
        } catch (e) {
          disposeAll(value, grads)
          throw e
        }
        return () => disposeAll(value, grads)
      },
      warmUp,
    )
    // Peak memory of one more step: resident = parameters, input and rope tables.
    const resident = dev.memory().liveBytes
    dev.account.resetPeak()
    const [value, grads] = step(params, x)
    try {
      await flush(dev)
    } finally {
      disposeAll(value, grads)
    }
    const peak = dev.memory().peakBytes
    return {
      ...t,
      loss0: loss,
      resident_bytes: resident,
      step_bytes: peak - resident,
      peak_bytes: peak,
      peak_note: "dev.memory().peakBytes after dev.account.resetPeak() (tensor storage accounting)",
    }
  } finally {
    for (const tensor of [...Object.values(params), x, cos, sin]) tensor.dispose()
  }
}

const seedOf = (s: MatmulShape) => 1000 + s[0] + s[1] + s[2]

async function benchBackend(name: BackendName): Promise<RowResult> {
  const row = emptyRow(name, `bdvax ${name}`)
  row.name = "bdvax core-tensor"
  const t0 = performance.now()
  let dev: Device
  try {
    dev = await Device.create(name)
  } catch (e) {
    row.available = false
    row.error = errText(e)
    progress(`${name}: failed to start: ${row.error}`)
    return row
  }
  row.setup_s = (performance.now() - t0) / 1000
  row.device = dev.backend.info.device
  progress(`${name}: ${row.device} (started in ${row.setup_s.toFixed(1)} s)`)
  const timed = async <T extends Measurement>(label: string, fn: () => Promise<T>, show: (r: T) => string): Promise<T | { error: string }> => {
    const s0 = performance.now()
    if (QUICK && (s0 - t0) / 1000 > QUICK_BACKEND_BUDGET_S) {
      progress(`${name}: ${label}: skipped (--quick budget of ${QUICK_BACKEND_BUDGET_S} s per backend used up)`)
      return { error: `skipped: --quick budget of ${QUICK_BACKEND_BUDGET_S} s per backend used up` }
    }
    try {
      const r = await leakChecked(dev, label, row.notes, fn)
      progress(`${name}: ${label}: ${show(r)} (median of ${r.runs}) (${((performance.now() - s0) / 1000).toFixed(1)} s)`)
      return r
    } catch (e) {
      const error = errText(e)
      progress(`${name}: ${label}: failed: ${error}`)
      return { error }
    }
  }
  const gf = (r: Measurement) => `${r.gflops!.toFixed(2)} GFLOP/s`
  try {
    if (SECTIONS.has("matmul"))
      for (const shape of SHAPES) row.matmul[shapeKey(shape)] = await timed(`matmul ${shapeKey(shape)}`, () => benchMatmul(dev, shape, "NN", seedOf(shape)), gf)
    if (SECTIONS.has("transposed"))
      for (const shape of TRANSPOSE_SHAPES) {
        const key = shapeKey(shape)
        row.transposed[key] = {}
        for (const v of T_VARIANTS) row.transposed[key][v] = await timed(`matmul ${key} ${v}`, () => benchMatmul(dev, shape, v, seedOf(shape)), gf)
      }
    if (SECTIONS.has("mlp")) row.mlp = await timed("mlp step", () => benchMlp(dev), (r) => `${r.ms!.toFixed(1)} ms, loss₀ ${r.loss0!.toFixed(5)}`)
    if (SECTIONS.has("block")) row.block = await timed("block fwd+bwd", () => benchBlock(dev, 7), (r) => `${r.ms!.toFixed(1)} ms, loss ${r.loss0!.toFixed(4)}`)
  } finally {
    try {
      dev.destroy()
    } catch (e) {
      row.notes.push(`destroy failed: ${errText(e)}`)
    }
  }
  row.total_s = (performance.now() - t0) / 1000
  return row
}

// ---- peers ------------------------------------------------------------------------------------------------------

/** A peer process with this bench's timeout and progress line. */
const runChild = (label: string, command: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildOutput> =>
  runPeerProcess({ label, command, args, env, cwd: REPO_ROOT, timeoutMs: PEER_TIMEOUT_MS, progress })
const peerTrouble = (c: ChildOutput) => childTrouble(c, PEER_TIMEOUT_MS)

const peerArgs = (coldLimit = false) => [
  "--budget",
  String(BUDGET_S),
  "--max-runs",
  String(MAX_RUNS),
  "--min-time",
  String(MIN_TIME_S),
  ...(QUICK ? ["--quick"] : []),
  ...(coldLimit && COLD_LIMIT_S !== undefined ? ["--cold-limit", String(COLD_LIMIT_S)] : []),
]

interface TorchJson {
  available: boolean
  python?: string
  executable?: string
  threads?: number
  torch?: PyLib
  numpy?: PyLib
}
interface PyLib {
  available: boolean
  error?: string
  version?: string
  name?: string
  blas?: string
  threads?: number
  matmul?: Record<string, Measurement>
  transposed?: Record<string, Partial<Record<Variant, Measurement>>>
  mlp?: StepResult
  block?: StepResult & { attention?: string }
}

async function runTorchPeer(): Promise<RowResult[]> {
  const venvPython = path.join(REPO_ROOT, ".venv/bin/python")
  const python = existsSync(venvPython) ? venvPython : "python3"
  const args = [TORCH_SCRIPT, "--json", ...peerArgs()]
  if (!SECTIONS.has("transposed")) args.push("--no-transposed")
  if (!SECTIONS.has("mlp")) args.push("--no-mlp")
  if (!SECTIONS.has("block")) args.push("--no-block")
  // Older OpenBLAS builds need these on some CPUs (see the machine notes); they slow a current NumPy, so the
  // benchmark (only) runs without them.
  const env = { ...process.env }
  const unset = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"].filter((k) => env[k] !== undefined)
  for (const k of unset) delete env[k]
  progress(`torch: ${path.relative(REPO_ROOT, python) || python} ${path.relative(REPO_ROOT, TORCH_SCRIPT)} ${args.slice(1).join(" ")}`)
  const c = await runChild("torch", python, args, env)
  const trouble = peerTrouble(c)
  const torch = emptyRow("torch", "torch cpu")
  const numpy = emptyRow("numpy", "numpy")
  const j = c.lastJson as TorchJson | undefined
  const fill = (row: RowResult, lib: PyLib | undefined, what: string) => {
    if (lib === undefined || !lib.available) {
      row.available = false
      row.error = lib?.error ?? trouble ?? `${what}: no result`
      return
    }
    row.name = lib.name
    row.version = lib.version
    row.threads = lib.threads ?? j?.threads
    row.device = `CPU, ${row.threads} threads, ${lib.blas ?? "?"}${j?.python !== undefined ? `, python ${j.python}` : ""}`
    row.matmul = lib.matmul ?? {}
    row.transposed = lib.transposed ?? {}
    row.mlp = lib.mlp
    row.block = lib.block
    if (trouble !== undefined) row.notes.push(`the peer process ${trouble}; rows it did not reach are missing`)
    if (unset.length > 0) row.notes.push(`run without ${unset.join(", ")} (set in this shell for old OpenBLAS builds; they slow a current one)`)
  }
  fill(torch, j?.torch, "torch")
  fill(numpy, j?.numpy, "numpy")
  if (j?.torch?.block?.attention !== undefined) torch.notes.push(`block attention: ${j.torch.block.attention}`)
  return [torch, numpy]
}

async function runJsPeer(name: keyof typeof JS_PEERS): Promise<RowResult> {
  const { script, options } = JS_PEERS[name]
  const sections = [...SECTIONS].filter((s) => s !== "block")
  const common = [...peerArgs(name === "tfjs"), "--sections", sections.join(","), ...options]
  const args = [...process.execArgv, path.join(BENCH_DIR, script), ...common]
  progress(`${name}: ${path.relative(REPO_ROOT, path.join(BENCH_DIR, script))} ${common.join(" ")}`)
  const c = await runChild(name, process.execPath, args, process.env)
  const trouble = peerTrouble(c)
  const row = c.lastJson as RowResult | undefined
  if (row === undefined) {
    const r = emptyRow(name === "tfjs" ? "tfjs-wasm" : name, { "jax-js": "jax-js wasm", "jax-js-1t": "jax-js wasm 1t", tfjs: "tfjs wasm" }[name])
    r.available = false
    r.error = trouble ?? "no result"
    return r
  }
  if (trouble !== undefined) {
    row.notes.push(`the peer process ${trouble}; rows it did not reach are missing`)
    if (SECTIONS.has("mlp") && row.available && row.mlp === undefined) row.mlp = { error: `not reached: the peer process ${trouble}` }
  }
  return row
}

// ---- report -----------------------------------------------------------------------------------------------------

const fmt = (x: number, digits = 2) => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(digits))
const fmtRatio = (r: number) => `${r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toFixed(3)}×`
const clip = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`)
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
const CELL = 44

/** Columns aligned to the widest cell; a row of [label, message] (fewer cells than the header) spans the row. */
function table(header: string[], rows: string[][]): string {
  const full = rows.filter((r) => r.length === header.length)
  const widths = header.map((h, c) => Math.max(h.length, ...full.map((r) => r[c].length), ...(c === 0 ? rows.map((r) => r[0].length) : [])))
  const line = (cells: string[]) =>
    cells.length < header.length
      ? `${cells[0].padEnd(widths[0])}  ${clip(cells.slice(1).join("  "), 120)}`
      : cells.map((s, c) => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]))).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

/** A GFLOP/s cell: value, (fraction of the reference's GFLOP/s), * for a single cold run. */
function gflopsCell(r: Measurement | undefined, ref: Measurement | undefined, isRef: boolean): string {
  if (r === undefined) return "-"
  if (r.error !== undefined) return r.error.startsWith("skipped") ? "skipped" : clip(`failed: ${r.error}`, CELL)
  const ratio = !isRef && ref?.gflops !== undefined ? ` (${fmtRatio(r.gflops! / ref.gflops)})` : ""
  return `${fmt(r.gflops!)}${ratio}${r.cold ? "*" : ""}`
}

const variantOf = (row: RowResult, key: string, v: Variant): Measurement | undefined => (v === "NN" ? row.matmul[key] : row.transposed[key]?.[v])

async function main(): Promise<void> {
  const tStart = performance.now()
  const cpus = os.cpus()
  const machine: Record<string, unknown> = {
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    available_parallelism: os.availableParallelism(),
    memory_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    load_avg: os.loadavg().map((l) => Math.round(l * 100) / 100),
  }
  const mode = {
    quick: QUICK,
    budget_s: BUDGET_S,
    max_runs: MAX_RUNS,
    min_time_s: MIN_TIME_S,
    cold_limit_s: COLD_LIMIT_S ?? null,
    backends: BACKENDS,
    peers: PEERS,
    sections: [...SECTIONS],
    shapes: SHAPES.map(shapeKey),
    transpose_shapes: TRANSPOSE_SHAPES.map(shapeKey),
  }
  progress(
    `mode: ${QUICK ? "quick" : "full"}, backends ${BACKENDS.join(",") || "none"}, peers ${PEERS.join(",") || "none"}, sections ${[...SECTIONS].join(",")}; ≤ ${MAX_RUNS} runs or ${BUDGET_S} s per measurement after a warm-up`,
  )

  const rows: RowResult[] = []
  for (const name of BACKENDS) rows.push(await benchBackend(name))
  const peerRows: RowResult[] = []
  for (const name of PEERS) {
    const p0 = performance.now()
    const got = name === "torch" ? await runTorchPeer() : [await runJsPeer(name)]
    for (const r of got) {
      r.total_s ??= (performance.now() - p0) / 1000
      progress(`${r.label}: ${r.available ? "done" : `unavailable: ${r.error}`} (${((performance.now() - p0) / 1000).toFixed(1)} s)`)
    }
    peerRows.push(...got)
  }
  rows.push(...peerRows)
  const byId = new Map(rows.map((r) => [r.id, r]))
  for (const name of BACKENDS) {
    const r = byId.get(name)
    if (r?.device !== undefined) machine[name === "webgpu" ? "webgpu_adapter" : "cpu_backend"] = r.device
  }

  // References: torch for matmul (numpy when torch is missing), block and MLP; jax-js also for the MLP.
  const usable = (id: string) => (byId.get(id)?.available ? byId.get(id) : undefined)
  const torch = usable("torch")
  const mmRef = torch !== undefined && Object.values(torch.matmul).some((m) => m.gflops !== undefined) ? torch : usable("numpy")
  const jaxRow = usable("jax-js") ?? usable("jax-js-1t")
  const ms = (s: StepResult | undefined) => (s?.ms !== undefined && s.error === undefined ? s.ms : undefined)
  const timeRatio = (mine: StepResult | undefined, theirs: StepResult | undefined) => {
    const a = ms(mine)
    const b = ms(theirs)
    return a !== undefined && b !== undefined ? a / b : null
  }

  const ratios: Record<string, unknown> = {}
  for (const r of rows) {
    if (!r.available) continue
    const matmul: Record<string, number | null> = {}
    for (const s of SHAPES) {
      const key = shapeKey(s)
      const mine = r.matmul[key]?.gflops
      const theirs = mmRef?.matmul[key]?.gflops
      matmul[key] = mine !== undefined && theirs !== undefined ? mine / theirs : null
    }
    const transposed: Record<string, Record<string, number | null>> = {}
    for (const s of TRANSPOSE_SHAPES) {
      const key = shapeKey(s)
      transposed[key] = {}
      for (const v of VARIANTS) {
        const mine = variantOf(r, key, v)?.gflops
        const theirs = mmRef === undefined ? undefined : variantOf(mmRef, key, v)?.gflops
        transposed[key][v] = mine !== undefined && theirs !== undefined ? mine / theirs : null
      }
    }
    ratios[r.id] = {
      matmul_speed_vs_ref: matmul,
      transposed_speed_vs_ref: transposed,
      mlp_time_vs_jax: timeRatio(r.mlp, jaxRow?.mlp),
      mlp_time_vs_torch: timeRatio(r.mlp, torch?.mlp),
      block_time_vs_torch: timeRatio(r.block, torch?.block),
    }
  }
  const cpuRow = usable("cpu")
  const numpyRow = usable("numpy")
  const goalValue = timeRatio(cpuRow?.mlp, jaxRow?.mlp)
  // The matmul goal (issue #3): cpu ≥ 0.5 × numpy's GFLOP/s at 1024³ and 64×576×1536, every transpose variant;
  // the worst of them is the figure.
  const matmulGoal = (() => {
    let worst: { value: number; at: string } | null = null
    let missing = cpuRow === undefined || numpyRow === undefined
    for (const s of TRANSPOSE_SHAPES)
      for (const v of VARIANTS) {
        const mine = cpuRow === undefined ? undefined : variantOf(cpuRow, shapeKey(s), v)?.gflops
        const theirs = numpyRow === undefined ? undefined : variantOf(numpyRow, shapeKey(s), v)?.gflops
        if (mine === undefined || theirs === undefined) {
          missing = true
          continue
        }
        if (worst === null || mine / theirs < worst.value) worst = { value: mine / theirs, at: `${shapeKey(s)} ${v}` }
      }
    return {
      description: "bdvax cpu f32 matmul GFLOP/s ≥ 0.5 × numpy's at 1024³ and 64×576×1536, every transpose variant (worst case)",
      target: 0.5,
      value: missing ? null : (worst?.value ?? null),
      worst_at: worst?.at ?? null,
      met: missing || worst === null ? null : worst.value >= 0.5,
    }
  })()
  // The block goal: cpu ≥ 0.5 × PyTorch's speed, i.e. step time ≤ 2 × torch's.
  const blockValue = timeRatio(cpuRow?.block, torch?.block)
  const goals = {
    matmul_cpu_vs_numpy: matmulGoal,
    mlp_cpu_vs_jax: {
      description: "bdvax cpu MLP training step time ≤ 0.5 × jax-js's",
      target: 0.5,
      value: goalValue,
      jax_row: jaxRow?.id ?? null,
      met: goalValue === null ? null : goalValue <= 0.5,
    },
    block_cpu_vs_torch: {
      description: "bdvax cpu Llama-block step time ≤ 2 × PyTorch CPU's (speed ≥ 0.5 ×)",
      target: 2,
      value: blockValue,
      met: blockValue === null ? null : blockValue <= 2,
    },
  }
  const goalText = (value: number | null, met: boolean | null, extra = "") =>
    value === null ? "not measured (needs both rows)" : `${fmtRatio(value)} (${met ? "met" : "not met"}${extra})`

  // ---- print ----
  const out: string[] = []
  const refText = mmRef !== undefined ? `(×) = fraction of ${mmRef.label}'s GFLOP/s` : "no ratios (neither torch nor numpy ran)"
  out.push(`core-tensor benchmark${QUICK ? " (--quick)" : ""}`)
  out.push(`machine : ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB, ${machine.platform}, node ${machine.node}`)
  out.push(`load    : ${(machine.load_avg as number[]).join(" ")} (1/5/15-min load average at start)`)
  for (const r of rows) {
    const what = r.available ? [r.name, r.device].filter((s) => s !== undefined).join(": ") : clip(`unavailable: ${r.error}`, 120)
    out.push(`${r.label.padEnd(14)}: ${what}`)
  }
  out.push(
    `method  : warm-up, then the median of timed runs: ≥ ${MAX_RUNS} runs and ≥ ${MIN_TIME_S} s of them, stopping at ${BUDGET_S} s (≥ 1 run); device work flushed inside the timed region`,
  )
  if (QUICK && PEERS.includes("tfjs"))
    out.push(`          * = --quick, tfjs only: its warm-up alone took ≥ ${COLD_LIMIT_S} s and is the only run (tfjs compiles nothing on first use)`)
  const load1 = (machine.load_avg as number[])[0]
  if (load1 > os.availableParallelism())
    out.push(`WARNING : load average ${load1} on ${os.availableParallelism()} cores: other work competes for the cores and every figure below is unreliable`)
  out.push("")

  const unavailableCells = (r: RowResult) => [r.label, r.error !== undefined ? `${r.id === "cpu" || r.id === "webgpu" ? "failed" : "unavailable"}: ${r.error}` : "unavailable"]

  if (SECTIONS.has("matmul")) {
    out.push(`1. f32 matmul A·B, GFLOP/s (M×K×N); ${refText}, higher is better`)
    const header = ["", ...SHAPES.map(shapeKey)]
    const body: string[][] = []
    const detail: string[][] = []
    for (const r of rows) {
      if (!r.available) {
        body.push(unavailableCells(r))
        continue
      }
      body.push([r.label, ...SHAPES.map((s) => gflopsCell(r.matmul[shapeKey(s)], mmRef?.matmul[shapeKey(s)], r === mmRef))])
      detail.push([r.label, ...SHAPES.map((s) => {
        const m = r.matmul[shapeKey(s)]
        return m?.ms !== undefined ? `${fmt(m.ms, 2)} ms ×${m.runs}${m.runs! > 1 ? ` (min ${fmt(m.min_ms!, 2)})` : ""}` : "-"
      })])
    }
    out.push(table(header, body))
    out.push("")
    out.push("   median time × timed runs (fastest run); a median far above the fastest run is noise from other work on the cores")
    out.push(table(header, detail))
    out.push("")
  }

  if (SECTIONS.has("transposed")) {
    out.push(`2. f32 matmul transpose variants op(A)·op(B), GFLOP/s; T = operand stored transposed, passed as a view (bdvax ops.transpose,`)
    out.push("   torch .t(), numpy .T, jax-js np.transpose inside jit) or as tfjs's matMul transposeA/B flags; no copy outside the library's")
    out.push(`   kernel. ${refText} for the same variant. NN is the plain matmul of table 1.`)
    for (const s of TRANSPOSE_SHAPES) {
      const key = shapeKey(s)
      const header = [key, ...VARIANTS]
      const body: string[][] = []
      for (const r of rows) {
        if (!r.available) {
          body.push(unavailableCells(r))
          continue
        }
        body.push([r.label, ...VARIANTS.map((v) => gflopsCell(variantOf(r, key, v), mmRef === undefined ? undefined : variantOf(mmRef, key, v), r === mmRef))])
      }
      out.push(table(header, body))
      out.push("")
    }
    if (SECTIONS.has("matmul")) {
      const g = goals.matmul_cpu_vs_numpy
      out.push(`   goal: bdvax cpu ≥ 0.50× numpy's GFLOP/s, every variant at ${TRANSPOSE_SHAPES.map(shapeKey).join(" and ")} → worst ${goalText(g.value, g.met, g.worst_at === null ? "" : `, at ${g.worst_at}`)}`)
      out.push("")
    }
  }

  const stepTable = (title: string[], pick: (r: RowResult) => StepResult | undefined, withJax: boolean, withFlops: boolean) => {
    out.push(...title)
    const header = ["", "ms/step", ...(withFlops ? ["GFLOP/s"] : []), ...(withJax ? ["÷ jax-js"] : []), "÷ torch", "peak MiB (resident + step)", "loss₀", "runs"]
    const body: string[][] = []
    for (const r of rows) {
      if (!r.available) {
        body.push(unavailableCells(r))
        continue
      }
      const s = pick(r)
      if (s === undefined) continue
      if (s.error !== undefined || s.ms === undefined) {
        body.push([r.label, s.error?.startsWith("skipped") ? s.error : clip(`failed: ${s.error ?? "no timing"}`, 120)])
        continue
      }
      const vsJax = timeRatio(s, jaxRow === undefined ? undefined : pick(jaxRow))
      const vsTorch = timeRatio(s, torch === undefined ? undefined : pick(torch))
      const peak =
        s.peak_bytes !== undefined
          ? `${mib(s.peak_bytes)} (${mib(s.resident_bytes ?? 0)} + ${mib(s.step_bytes ?? 0)})`
          : s.peak_note?.startsWith("n/a")
            ? "n/a"
            : "-"
      body.push([
        r.label,
        `${fmt(s.ms, 1)}${s.cold ? "*" : ""}`,
        ...(withFlops ? [s.gflops !== undefined ? fmt(s.gflops) : "-"] : []),
        ...(withJax ? [r === jaxRow ? "1" : vsJax !== null ? fmtRatio(vsJax) : "-"] : []),
        r === torch ? "1" : vsTorch !== null ? fmtRatio(vsTorch) : "-",
        peak,
        s.loss0 !== undefined ? s.loss0.toFixed(5) : "-",
        String(s.runs ?? "-"),
      ])
    }
    out.push(table(header, body))
  }

  if (SECTIONS.has("mlp")) {
    const { din, hidden, dout, batch } = MLP
    stepTable(
      [
        `3. MLP ${din}→${hidden}→${dout} (ReLU), batch ${batch}: one training step = forward + MSE + backward + Adam (lr ${MLP.lr}); same inputs everywhere.`,
        `   ÷ jax-js / ÷ torch = this step time ÷ theirs (lower is better; 0.50× = twice as fast). GFLOP/s counts the ${(MLP_FLOPS / 1e9).toFixed(2)} GFLOP of matmuls.`,
      ],
      (r) => r.mlp,
      true,
      true,
    )
    const v = goals.mlp_cpu_vs_jax
    out.push(`   goal: bdvax cpu ≤ 0.50× jax-js's step time → ${goalText(v.value, v.met, jaxRow !== undefined && jaxRow.id !== "jax-js" ? `, against ${jaxRow.label}` : "")}`)
    out.push("")
  }

  if (SECTIONS.has("block")) {
    const b = BLOCK
    stepTable(
      [
        `4. Llama block (d=${b.d}, ${b.heads} heads / ${b.kvHeads} KV, ffn ${b.ffn}, seq ${b.seq}, batch ${b.batch}): forward + backward; ÷ torch = this step time ÷ torch's`,
        "   (lower is better). Peak = resident before the step (weights, input, rope tables) + the step's high-water mark: bdvax",
        "   dev.memory().peakBytes after dev.account.resetPeak(); torch: torch.profiler memory events. loss₀ = the loss (random init).",
      ],
      (r) => r.block,
      false,
      false,
    )
    const g = goals.block_cpu_vs_torch
    out.push(`   goal: bdvax cpu ≤ 2× torch cpu's step time (≥ 0.5× its speed) → ${goalText(g.value, g.met)}`)
    out.push("")
  }

  // ---- notes ----
  const notes: string[] = []
  for (const r of rows) {
    if (!r.available) {
      notes.push(`${r.label}: ${r.id === "cpu" || r.id === "webgpu" ? "failed" : "unavailable"}: ${r.error}`)
      continue
    }
    const failText = (e: string) => (e.startsWith("skipped") ? e : `failed: ${e}`)
    for (const [key, m] of Object.entries(r.matmul)) if (m.error !== undefined) notes.push(`${r.label} matmul ${key}: ${failText(m.error)}`)
    for (const [key, vs] of Object.entries(r.transposed))
      for (const [v, m] of Object.entries(vs)) if (m?.error !== undefined) notes.push(`${r.label} matmul ${key} ${v}: ${failText(m.error)}`)
    for (const [what, s] of [
      ["mlp", r.mlp],
      ["block", r.block],
    ] as const) {
      if (s?.error !== undefined) notes.push(`${r.label} ${what}: ${failText(s.error)}`)
      if (s?.peak_note?.startsWith("n/a")) notes.push(`${r.label} ${what} peak memory: ${s.peak_note}`)
    }
    if (r.mlp?.loss0 !== undefined && r.mlp.loss_last !== undefined && !(r.mlp.loss_last < r.mlp.loss0))
      notes.push(
        `${r.label} mlp: ${Number.isFinite(r.mlp.loss_last) ? "the loss did not go down" : "the loss became non-finite"} over ${r.mlp.steps ?? "?"} Adam steps (${r.mlp.loss0} → ${r.mlp.loss_last})`,
      )
    for (const n of r.notes) notes.push(`${r.label}: ${n}`)
  }
  // Every library trains the MLP from the same numbers, so the first loss must agree.
  const refLoss = torch?.mlp?.loss0 ?? rows.find((r) => r.mlp?.loss0 !== undefined)?.mlp?.loss0
  if (refLoss !== undefined) {
    const off = rows.filter((r) => r.mlp?.loss0 !== undefined && Math.abs(r.mlp.loss0 - refLoss) > 1e-4 * Math.abs(refLoss))
    if (off.length > 0) notes.push(`mlp loss₀ disagrees: ${off.map((r) => `${r.label} ${r.mlp!.loss0}`).join(", ")} vs ${refLoss} (same inputs: one of them computes something else)`)
    else notes.push(`mlp loss₀ agrees across ${rows.filter((r) => r.mlp?.loss0 !== undefined).length} libraries (${refLoss.toFixed(6)})`)
  }
  const totalS = (performance.now() - tStart) / 1000
  machine.load_avg_end = os.loadavg().map((l) => Math.round(l * 100) / 100)
  notes.push(`load average at end ${(machine.load_avg_end as number[]).join(" ")} (figures are noisy when other work shares the cores)`)
  notes.push(`times: ${rows.map((r) => `${r.label} ${r.total_s !== undefined ? `${r.total_s.toFixed(1)} s` : "?"}`).join(", ")}; total wall time ${totalS.toFixed(1)} s`)
  out.push("notes")
  for (const n of notes) out.push(`  - ${n}`)
  console.log(out.join("\n"))

  if (flags.json !== undefined) {
    const report = {
      machine,
      mode,
      config: { matmul_shapes: MATMUL_SHAPES.map(shapeKey), transpose_shapes: TRANSPOSE_SHAPES.map(shapeKey), mlp: { ...MLP, flops: MLP_FLOPS }, block: BLOCK },
      backends: Object.fromEntries(rows.filter((r) => r.id === "cpu" || r.id === "webgpu").map((r) => [r.id, r])),
      peers: Object.fromEntries(peerRows.map((r) => [r.id, r])),
      reference: { matmul: mmRef?.id ?? null, mlp: [jaxRow?.id ?? null, torch?.id ?? null], block: torch?.id ?? null },
      ratios,
      ratio_definition:
        "matmul_speed_vs_ref / transposed_speed_vs_ref: GFLOP/s ÷ the reference's GFLOP/s (higher is better); mlp_time_vs_* and block_time_vs_torch: step ms ÷ the peer's step ms (lower is better); 1 = parity",
      goals,
      notes,
      total_s: Math.round(totalS * 10) / 10,
      timestamp: new Date().toISOString(),
    }
    writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`)
    progress(`wrote ${flags.json}`)
  }
}

await main()
