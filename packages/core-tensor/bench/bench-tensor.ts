/**
 * core-tensor benchmark: f32 matmul GFLOP/s and the forward+backward step time of one Llama-style transformer
 * block (the SmolLM2-135M block), on each bdvax backend, against a PyTorch-on-CPU peer
 * (scripts/bench_peer_torch.py, NumPy matmul-only fallback).
 *
 *   pnpm bench:tensor [--quick] [--backends cpu,webgpu] [--json PATH] [--no-peer] [--budget S] [--max-runs N]
 *
 * Methodology: every measurement is one warm-up run (pipeline compilation, buffer pools), then timed runs until
 * `max-runs` runs or (≥ 1 run and ≥ `budget` seconds), reporting the median. Each timed region ends with
 * `await dev.flush()`, so queued GPU work is counted; the outputs are disposed after the clock stops.
 * Ratios are "fraction of the peer's speed": backend GFLOP/s ÷ peer GFLOP/s, and peer ms ÷ backend ms for the
 * block (1 = parity, < 1 = slower than the peer). A backend that fails prints "failed: <message>" in its row.
 */
import { spawnSync } from "node:child_process"
import { existsSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { type BackendName, Device, Rng, type Tensor, ops, valueAndGrad } from "../src/index.js"

// ---- configuration ----------------------------------------------------------------------------------------------

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
const PEER_SCRIPT = path.join(REPO_ROOT, "scripts/bench_peer_torch.py")

type MatmulShape = readonly [m: number, k: number, n: number]
const MATMUL_SHAPES: readonly MatmulShape[] = [
  [1024, 1024, 1024],
  [2048, 2048, 2048],
  [64, 576, 1536],
]
const QUICK_SKIP = new Set(["2048x2048x2048"])
const shapeKey = ([m, k, n]: MatmulShape) => `${m}x${k}x${n}`

/** The SmolLM2-135M block. */
const BLOCK = { d: 576, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536, seq: 128, batch: 4, ropeTheta: 10000, rmsEps: 1e-5 } as const

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string" },
    backends: { type: "string", default: "cpu,webgpu" },
    "no-peer": { type: "boolean", default: false },
    budget: { type: "string" },
    "max-runs": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
  allowPositionals: false,
})

if (flags.help) {
  console.log(
    [
      "usage: pnpm bench:tensor [options]",
      "  --quick              fewer runs, skip 2048³ (for CI)",
      "  --backends LIST      comma-separated: cpu,webgpu (default both)",
      "  --json PATH          also write the figures as JSON to PATH",
      "  --no-peer            skip the PyTorch peer",
      "  --budget S           seconds per measurement after warm-up (default 3, quick 1)",
      "  --max-runs N         timed runs per measurement at most (default 10, quick 3)",
    ].join("\n"),
  )
  process.exit(0)
}

const QUICK = flags.quick === true
const BUDGET_S = flags.budget !== undefined ? Number(flags.budget) : QUICK ? 1 : 3
const MAX_RUNS = flags["max-runs"] !== undefined ? Number(flags["max-runs"]) : QUICK ? 3 : 10
/** A single awaited step (flush / read-back) longer than this is reported as a failure instead of hanging. */
const AWAIT_TIMEOUT_MS = 5 * 60_000
const BACKENDS: BackendName[] = []
for (const raw of flags.backends!.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
  if (raw !== "cpu" && raw !== "webgpu") {
    console.error(`bench-tensor: unknown backend "${raw}" (expected cpu, webgpu)`)
    process.exit(2)
  }
  if (!BACKENDS.includes(raw)) BACKENDS.push(raw)
}
if (!(BUDGET_S > 0) || !(MAX_RUNS >= 1)) {
  console.error("bench-tensor: --budget must be > 0 and --max-runs ≥ 1")
  process.exit(2)
}
const SHAPES = MATMUL_SHAPES.filter((s) => !(QUICK && QUICK_SKIP.has(shapeKey(s))))

// ---- result types -----------------------------------------------------------------------------------------------

interface Timing {
  ms: number
  min_ms: number
  runs: number
  all_ms: number[]
}
interface MatmulResult extends Partial<Timing> {
  gflops?: number
  error?: string
}
interface BlockResult extends Partial<Timing> {
  loss?: number
  error?: string
}
interface BackendResult {
  device?: string
  error?: string
  matmul: Record<string, MatmulResult>
  block_ms: number | null
  block?: BlockResult
  setup_s?: number
  notes: string[]
}
interface PeerResult {
  available: boolean
  name?: string
  library?: string
  threads?: number
  matmul?: Record<string, { ms: number; runs: number; gflops: number }>
  block_ms?: number | null
  block?: { ms?: number; runs?: number; error?: string; attention?: string }
  errors?: string[]
  error?: string
  python?: string
  executable?: string
}

const progress = (msg: string) => process.stderr.write(`[bench] ${msg}\n`)
const errText = (e: unknown) => (e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e)).replace(/\s+/g, " ").trim()

// ---- timing -----------------------------------------------------------------------------------------------------

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${AWAIT_TIMEOUT_MS / 1000} s`)), AWAIT_TIMEOUT_MS)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

/**
 * One warm-up call (`warmUp`, default: an untimed `run`), then timed calls until MAX_RUNS or (≥ 1 run and
 * ≥ BUDGET_S). `run` does the work up to and including the device flush and returns a cleanup that is called after
 * the clock stops.
 */
async function measure(run: () => Promise<() => void>, warmUp: () => Promise<void> = async () => (await run())()): Promise<Timing> {
  await warmUp()
  const times: number[] = []
  const start = performance.now()
  while (times.length < MAX_RUNS) {
    const t0 = performance.now()
    const cleanup = await run()
    times.push(performance.now() - t0)
    cleanup()
    if (performance.now() - start >= BUDGET_S * 1000) break
  }
  const sorted = [...times].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const ms = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  return { ms, min_ms: sorted[0], runs: times.length, all_ms: times.map((t) => Math.round(t * 100) / 100) }
}

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

// ---- the measurements -------------------------------------------------------------------------------------------

async function benchMatmul(dev: Device, shape: MatmulShape, seed: number): Promise<MatmulResult> {
  const [m, k, n] = shape
  const rng = new Rng(seed)
  const a = dev.randn([m, k], rng)
  const b = dev.randn([k, n], rng)
  try {
    const t = await measure(async () => {
      const c = ops.matmul(a, b)
      try {
        await withTimeout(dev.flush(), "flush")
      } catch (e) {
        c.dispose()
        throw e
      }
      return () => c.dispose()
    })
    return { ...t, gflops: (2 * m * k * n) / (t.ms * 1e6) }
  } finally {
    a.dispose()
    b.dispose()
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

async function benchBlock(dev: Device, seed: number): Promise<BlockResult> {
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
    const t = await measure(async () => {
      const [value, grads] = step(params, x)
      try {
        await withTimeout(dev.flush(), "flush")
      } catch (e) {
        disposeAll(value, grads)
        throw e
      }
      return () => disposeAll(value, grads)
    }, warmUp)
    return { ...t, loss }
  } finally {
    for (const t of [...Object.values(params), x, cos, sin]) t.dispose()
  }
}

async function benchBackend(name: BackendName): Promise<BackendResult> {
  const result: BackendResult = { matmul: {}, block_ms: null, notes: [] }
  const t0 = performance.now()
  let dev: Device
  try {
    dev = await Device.create(name)
  } catch (e) {
    result.error = errText(e)
    progress(`${name}: failed to start: ${result.error}`)
    return result
  }
  result.setup_s = (performance.now() - t0) / 1000
  result.device = dev.backend.info.device
  progress(`${name}: ${result.device} (started in ${result.setup_s.toFixed(1)} s)`)
  try {
    for (const [i, shape] of SHAPES.entries()) {
      const key = shapeKey(shape)
      const s0 = performance.now()
      try {
        result.matmul[key] = await leakChecked(dev, `matmul ${key}`, result.notes, () => benchMatmul(dev, shape, 100 + i))
        const r = result.matmul[key]
        progress(`${name}: matmul ${key}: ${r.gflops!.toFixed(2)} GFLOP/s, median ${r.ms!.toFixed(1)} ms of ${r.runs} (${((performance.now() - s0) / 1000).toFixed(1)} s)`)
      } catch (e) {
        result.matmul[key] = { error: errText(e) }
        progress(`${name}: matmul ${key}: failed: ${result.matmul[key].error}`)
      }
    }
    const s0 = performance.now()
    try {
      result.block = await leakChecked(dev, "block", result.notes, () => benchBlock(dev, 7))
      result.block_ms = result.block.ms!
      progress(`${name}: block fwd+bwd: median ${result.block_ms.toFixed(1)} ms of ${result.block.runs}, loss ${result.block.loss!.toFixed(4)} (${((performance.now() - s0) / 1000).toFixed(1)} s)`)
    } catch (e) {
      result.block = { error: errText(e) }
      progress(`${name}: block: failed: ${result.block.error}`)
    }
  } finally {
    try {
      dev.destroy()
    } catch (e) {
      result.notes.push(`destroy failed: ${errText(e)}`)
    }
  }
  return result
}

function runPeer(): PeerResult {
  const venvPython = path.join(REPO_ROOT, ".venv/bin/python")
  const python = existsSync(venvPython) ? venvPython : "python3"
  const args = [PEER_SCRIPT, "--json", "--budget", String(BUDGET_S), "--max-runs", String(MAX_RUNS), ...(QUICK ? ["--quick"] : [])]
  progress(`peer: ${path.relative(REPO_ROOT, python) || python} ${path.relative(REPO_ROOT, PEER_SCRIPT)} ${args.slice(1).join(" ")}`)
  const r = spawnSync(python, args, { cwd: REPO_ROOT, encoding: "utf8", timeout: 10 * 60_000, maxBuffer: 16 << 20 })
  if (r.error) return { available: false, error: errText(r.error) }
  const lines = (r.stdout ?? "").trim().split("\n")
  try {
    const parsed = JSON.parse(lines[lines.length - 1]) as PeerResult
    if (!parsed.available) parsed.error = (parsed.errors ?? []).join("; ") || "neither torch nor numpy importable"
    return parsed
  } catch {
    const why = (r.stderr ?? "").trim().split("\n").slice(-3).join(" ") || `exit status ${r.status}`
    return { available: false, error: `peer script failed: ${why}` }
  }
}

// ---- report -----------------------------------------------------------------------------------------------------

const fmt = (x: number, digits = 2) => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(digits))
const fmtRatio = (r: number) => `${r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toFixed(3)}×`
const clip = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`)

/** Columns aligned to the widest cell; a row of [label, message] (fewer cells than the header) spans the row. */
function table(header: string[], rows: string[][]): string {
  const full = rows.filter((r) => r.length === header.length)
  const widths = header.map((h, c) => Math.max(h.length, ...full.map((r) => r[c].length), ...(c === 0 ? rows.map((r) => r[0].length) : [])))
  const line = (cells: string[]) =>
    cells.length < header.length
      ? `${cells[0].padEnd(widths[0])}  ${clip(cells.slice(1).join("  "), 110)}`
      : cells.map((s, c) => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]))).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

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
  const mode = { quick: QUICK, budget_s: BUDGET_S, max_runs: MAX_RUNS, backends: BACKENDS, shapes: SHAPES.map(shapeKey) }
  progress(`mode: ${QUICK ? "quick" : "full"}, backends ${BACKENDS.join(",")}, ≤ ${MAX_RUNS} runs or ${BUDGET_S} s per measurement after a warm-up`)

  const backends: Partial<Record<BackendName, BackendResult>> = {}
  for (const name of BACKENDS) {
    const b0 = performance.now()
    backends[name] = await benchBackend(name)
    backends[name].notes.push(`total ${((performance.now() - b0) / 1000).toFixed(1)} s`)
  }
  if (backends.webgpu?.device !== undefined) machine.webgpu_adapter = backends.webgpu.device
  if (backends.cpu?.device !== undefined) machine.cpu_backend = backends.cpu.device

  let peer: PeerResult
  if (flags["no-peer"]) peer = { available: false, error: "skipped (--no-peer)" }
  else {
    const p0 = performance.now()
    peer = runPeer()
    progress(`peer: ${peer.available ? `${peer.name} done` : `unavailable: ${peer.error}`} (${((performance.now() - p0) / 1000).toFixed(1)} s)`)
  }

  // Ratios: fraction of the peer's speed (higher is better, 1 = parity).
  const ratios: Record<string, { matmul: Record<string, number | null>; block: number | null }> = {}
  for (const name of BACKENDS) {
    const b = backends[name]!
    const matmul: Record<string, number | null> = {}
    for (const s of SHAPES) {
      const key = shapeKey(s)
      const mine = b.matmul[key]?.gflops
      const theirs = peer.matmul?.[key]?.gflops
      matmul[key] = mine !== undefined && theirs !== undefined ? mine / theirs : null
    }
    const block = b.block_ms !== null && typeof peer.block_ms === "number" ? peer.block_ms / b.block_ms : null
    ratios[name] = { matmul, block }
  }

  // ---- print ----
  const out: string[] = []
  out.push("core-tensor benchmark" + (QUICK ? " (--quick)" : ""))
  out.push(`machine : ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB, ${machine.platform}, node ${machine.node}`)
  out.push(`load    : ${(machine.load_avg as number[]).join(" ")} (1/5/15-min load average at start)`)
  for (const name of BACKENDS) {
    const b = backends[name]!
    out.push(`${name.padEnd(8)}: ${b.device ?? clip(`failed: ${b.error}`, 110)}`)
  }
  out.push(`peer    : ${peer.available ? `${peer.name}, ${peer.threads} threads (python ${peer.python})` : `peer unavailable (${peer.error})`}`)
  out.push(`method  : warm-up, then median of ≤ ${MAX_RUNS} runs (stop after ≥ 1 run and ≥ ${BUDGET_S} s); GPU work flushed inside the timed region`)
  out.push("")

  const header = ["backend", ...SHAPES.map((s) => `matmul ${shapeKey(s)}`), "block fwd+bwd"]
  const CELL = 44
  const rows: string[][] = []
  const detail: string[][] = []
  for (const name of BACKENDS) {
    const b = backends[name]!
    const label = `bdvax ${name}`
    if (b.error !== undefined) {
      rows.push([label, `failed: ${b.error}`])
      continue
    }
    const cells = SHAPES.map((s) => {
      const key = shapeKey(s)
      const r = b.matmul[key]
      if (r === undefined) return "-"
      if (r.error !== undefined) return clip(`failed: ${r.error}`, CELL)
      const ratio = ratios[name].matmul[key]
      return `${fmt(r.gflops!)} GFLOP/s` + (ratio !== null ? ` (${fmtRatio(ratio)})` : "")
    })
    const blk = b.block
    const blockCell =
      blk === undefined ? "-" : blk.error !== undefined ? clip(`failed: ${blk.error}`, CELL) : `${fmt(blk.ms!, 1)} ms` + (ratios[name].block !== null ? ` (${fmtRatio(ratios[name].block!)})` : "")
    rows.push([label, ...cells, blockCell])
    detail.push([
      label,
      ...SHAPES.map((s) => {
        const r = b.matmul[shapeKey(s)]
        return r?.ms !== undefined ? `${fmt(r.ms, 2)} ms ×${r.runs}` : "-"
      }),
      blk?.ms !== undefined ? `${fmt(blk.ms, 1)} ms ×${blk.runs}` : "-",
    ])
  }
  const peerLabel = peer.available ? `peer ${peer.library === "torch" ? "torch" : peer.library ?? ""} cpu` : "peer"
  if (!peer.available) rows.push([peerLabel, `peer unavailable (${peer.error})`])
  else {
    rows.push([
      peerLabel,
      ...SHAPES.map((s) => {
        const r = peer.matmul?.[shapeKey(s)]
        return r !== undefined ? `${fmt(r.gflops)} GFLOP/s` : "-"
      }),
      typeof peer.block_ms === "number" ? `${fmt(peer.block_ms, 1)} ms` : `n/a (${peer.block?.error ?? "not measured"})`,
    ])
    detail.push([
      peerLabel,
      ...SHAPES.map((s) => {
        const r = peer.matmul?.[shapeKey(s)]
        return r !== undefined ? `${fmt(r.ms, 2)} ms ×${r.runs}` : "-"
      }),
      peer.block?.ms !== undefined ? `${fmt(peer.block.ms, 1)} ms ×${peer.block.runs}` : "-",
    ])
  }
  out.push("f32 matmul GFLOP/s (M×K×N) and block step time; (×) = fraction of the peer's speed, 1.00× = parity, higher is better")
  out.push(table(header, rows))
  out.push("")
  out.push("median time × timed runs")
  out.push(table(header, detail))

  const notes: string[] = []
  for (const name of BACKENDS) {
    const b = backends[name]!
    if (b.error !== undefined) notes.push(`${name}: failed: ${b.error}`)
    for (const [key, r] of Object.entries(b.matmul)) if (r.error !== undefined) notes.push(`${name} matmul ${key}: failed: ${r.error}`)
    if (b.block?.error !== undefined) notes.push(`${name} block: failed: ${b.block.error}`)
    if (b.block?.loss !== undefined) notes.push(`${name} block: loss ${b.block.loss.toFixed(5)}`)
    for (const n of b.notes) notes.push(`${name}: ${n}`)
  }
  const totalS = (performance.now() - tStart) / 1000
  machine.load_avg_end = os.loadavg().map((l) => Math.round(l * 100) / 100)
  notes.push(`load average at end ${(machine.load_avg_end as number[]).join(" ")} (figures are noisy when other work shares the cores)`)
  notes.push(`total wall time ${totalS.toFixed(1)} s`)
  out.push("")
  out.push("notes")
  for (const n of notes) out.push(`  - ${n}`)
  console.log(out.join("\n"))

  if (flags.json !== undefined) {
    const report = {
      machine,
      mode,
      block_config: BLOCK,
      backends,
      peer,
      ratios,
      ratio_definition: "backend speed / peer speed: matmul GFLOP/s ÷ peer GFLOP/s; block peer_ms ÷ backend_ms (1 = parity, higher is better)",
      total_s: Math.round(totalS * 10) / 10,
      timestamp: new Date().toISOString(),
    }
    writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`)
    progress(`wrote ${flags.json}`)
  }
}

await main()
