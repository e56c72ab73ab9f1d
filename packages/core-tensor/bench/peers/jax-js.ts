/**
 * Peer for bench-tensor.ts: jax-js (@jax-js/jax) on its "wasm" device in Node, every workload jit-compiled.
 *
 *   tsx packages/core-tensor/bench/peers/jax-js.ts [--quick] [--budget S] [--max-runs N] [--min-time S] [--sections …] [--option threads=none]
 *
 * jax-js spreads its wasm kernels over Web Workers when `SharedArrayBuffer` and a global `Worker` exist. Node has
 * no global `Worker`, so out of the box jax-js runs single-threaded there; by default this peer installs a small
 * Web Worker shim over node:worker_threads (./web-worker-shim.ts) first, so it gets navigator.hardwareConcurrency
 * workers as in a browser. `--option threads=none` measures the out-of-the-box single-threaded Node behaviour.
 * (jax-js's WebGPU and WebGL devices do not run in Node: its README lists Node.js as Wasm-only.)
 *
 * Prints the result so far as one JSON line on stdout after every measurement (RowResult, ../shared.ts).
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import {
  MLP,
  MLP_FLOPS,
  type MatmulShape,
  T_VARIANTS,
  TRANSPOSE_SHAPES,
  type Variant,
  checkMatmul,
  emitRow,
  emptyRow,
  errText,
  hashData,
  measure,
  operandShapes,
  parsePeerArgs,
  peerProgress,
  peerShapes,
  shapeKey,
  type Measurement,
  type StepResult,
} from "../shared.js"
import { installWebWorkerShim, shimWorkersStarted, terminateShimWorkers } from "./web-worker-shim.js"

const args = parsePeerArgs(process.argv.slice(2))
const useShim = args.options.get("threads") !== "none"
const row = emptyRow(useShim ? "jax-js" : "jax-js-1t", useShim ? "jax-js wasm" : "jax-js wasm 1t")
const shimInstalled = useShim ? installWebWorkerShim() : false

const jax = await import("@jax-js/jax")
const { numpy: np, nn, jit, valueAndGrad, blockUntilReady, tree } = jax
type JArray = InstanceType<typeof jax.Array>

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)
const fromHost = (data: Float32Array<ArrayBuffer>, shape: readonly number[]) => np.array(data).reshape([...shape])

async function benchMatmul(shape: MatmulShape, v: Variant, seed: number): Promise<Measurement> {
  const [aShape, bShape] = operandShapes(shape, v)
  const aHost = hashData(size(aShape), seed)
  const bHost = hashData(size(bShape), seed + 1)
  const a = fromHost(aHost, aShape)
  const b = fromHost(bHost, bShape)
  // Transposes inside the jit'd function: jax-js folds them into the one matmul kernel's indexing (no copy;
  // checked with setDebug(4): a single fused `dot` kernel with strided operand views).
  const f = jit((x: JArray, y: JArray) => np.matmul(v[0] === "T" ? np.transpose(x) : x, v[1] === "T" ? np.transpose(y) : y))
  let check = "not checked"
  try {
    await blockUntilReady([a, b])
    const [m, k, n] = shape
    const t = await measure(
      args,
      async () => {
        const c = f(a.ref, b.ref)
        await c.blockUntilReady()
        return () => c.dispose()
      },
      async () => {
        const c = f(a.ref, b.ref)
        const bad = checkMatmul(aHost, bHost, (await c.data()) as Float32Array, shape, v) // data() consumes c
        if (bad !== undefined) throw new Error(bad)
        check = "ok (16 entries)"
      },
    )
    return { ...t, gflops: (2 * m * k * n) / (t.ms * 1e6), check }
  } finally {
    a.dispose()
    b.dispose()
    f.dispose()
  }
}

type Params = { w1: JArray; b1: JArray; w2: JArray; b2: JArray }
const KEYS = ["w1", "b1", "w2", "b2"] as const

async function benchMlp(): Promise<StepResult> {
  const { batch: B, din, hidden: H, dout, initStd, seeds, lr, beta1, beta2, eps } = MLP
  let p: Params = {
    w1: fromHost(hashData(din * H, seeds.w1, initStd), [din, H]),
    b1: np.zeros([H]),
    w2: fromHost(hashData(H * dout, seeds.w2, initStd), [H, dout]),
    b2: np.zeros([dout]),
  }
  const zeros = (): Params => ({ w1: np.zeros([din, H]), b1: np.zeros([H]), w2: np.zeros([H, dout]), b2: np.zeros([dout]) })
  let m = zeros()
  let v = zeros()
  const x = fromHost(hashData(B * din, seeds.x), [B, din])
  const target = fromHost(hashData(B * dout, seeds.target), [B, dout])

  const lossFn = (q: Params, xs: JArray, ts: JArray) => {
    const h = nn.relu(np.matmul(xs, q.w1).add(q.b1))
    const y = np.matmul(h, q.w2).add(q.b2)
    return np.mean(np.square(y.sub(ts)))
  }
  // One jit'd step: value and gradient, then Adam (torch.optim.Adam's formula) written with jax-js ops.
  // bc1 = 1 − β1^t and bc2 = 1 − β2^t come in as 0-d arrays so that the step count does not force a recompile.
  const step = jit((q: Params, mq: Params, vq: Params, xs: JArray, ts: JArray, bc1: JArray, bc2: JArray) => {
    const [loss, g] = valueAndGrad(lossFn)(tree.ref(q) as Params, xs, ts)
    const nq = {} as Params
    const nm = {} as Params
    const nv = {} as Params
    for (const key of KEYS) {
      const gk = g[key]
      const mk = mq[key].mul(beta1).add(gk.ref.mul(1 - beta1))
      const vk = vq[key].mul(beta2).add(np.square(gk).mul(1 - beta2))
      const update = mk.ref.div(bc1.ref).div(np.sqrt(vk.ref.div(bc2.ref)).add(eps))
      nq[key] = q[key].sub(update.mul(lr))
      nm[key] = mk
      nv[key] = vk
    }
    bc1.dispose()
    bc2.dispose()
    return [loss, nq, nm, nv] as [JArray, Params, Params, Params]
  })
  let t = 0
  let lastLoss: JArray | null = null
  const run = async (): Promise<JArray> => {
    t += 1
    const [loss, nq, nm, nv] = step(p, m, v, x.ref, target.ref, np.array(1 - beta1 ** t), np.array(1 - beta2 ** t))
    p = nq
    m = nm
    v = nv
    await blockUntilReady([loss, p, m, v])
    return loss
  }
  let loss0 = Number.NaN
  try {
    await blockUntilReady([p, m, v, x, target])
    const timing = await measure(
      args,
      async () => {
        const loss = await run()
        return () => {
          lastLoss?.dispose()
          lastLoss = loss
        }
      },
      async () => {
        loss0 = ((await (await run()).data()) as Float32Array)[0]
        if (!Number.isFinite(loss0)) throw new Error(`loss is ${loss0}`)
      },
    )
    const lossLast = lastLoss === null ? Number.NaN : ((await (lastLoss as JArray).data()) as Float32Array)[0]
    lastLoss = null
    return { ...timing, gflops: MLP_FLOPS / (timing.ms * 1e6), loss0, loss_last: lossLast, steps: t }
  } finally {
    ;(lastLoss as JArray | null)?.dispose()
    for (const q of [p, m, v]) tree.dispose(q)
    x.dispose()
    target.dispose()
    step.dispose()
  }
}

async function main(): Promise<void> {
  const t0 = performance.now()
  try {
    const pkgPath = fileURLToPath(new URL("../package.json", import.meta.resolve("@jax-js/jax")))
    row.version = (JSON.parse(readFileSync(pkgPath, "utf8")) as { version: string }).version
  } catch {
    row.version = "?"
  }
  row.name = `jax-js ${row.version}`
  try {
    const devices = await jax.init("wasm")
    if (!devices.includes("wasm")) throw new Error(`jax-js could not start its wasm device (devices: ${devices.join(", ") || "none"})`)
    jax.defaultDevice("wasm")
  } catch (e) {
    row.available = false
    row.error = errText(e)
    emitRow(row)
    return
  }
  const workers = typeof SharedArrayBuffer !== "undefined" && typeof (globalThis as { Worker?: unknown }).Worker !== "undefined" ? navigator.hardwareConcurrency : 0
  row.threads = Math.max(1, workers)
  row.device =
    workers > 0
      ? `wasm, ${workers} Web Workers${shimInstalled ? " (node:worker_threads shim)" : ""}, jit`
      : "wasm, single-threaded (Node has no global Worker), jit"
  row.setup_s = (performance.now() - t0) / 1000
  emitRow(row)
  const seedOf = (s: MatmulShape) => 1000 + s[0] + s[1] + s[2]
  if (args.sections.has("matmul"))
    for (const shape of peerShapes(args.quick)) {
      const key = shapeKey(shape)
      try {
        row.matmul[key] = await benchMatmul(shape, "NN", seedOf(shape))
        peerProgress(`matmul ${key}: ${row.matmul[key].gflops!.toFixed(2)} GFLOP/s`)
      } catch (e) {
        row.matmul[key] = { error: errText(e) }
        peerProgress(`matmul ${key}: failed: ${row.matmul[key].error}`)
      }
      emitRow(row)
    }
  if (args.sections.has("transposed"))
    for (const shape of TRANSPOSE_SHAPES) {
      const key = shapeKey(shape)
      row.transposed[key] = {}
      for (const v of T_VARIANTS) {
        try {
          row.transposed[key][v] = await benchMatmul(shape, v, seedOf(shape))
          peerProgress(`matmul ${key} ${v}: ${row.transposed[key][v].gflops!.toFixed(2)} GFLOP/s`)
        } catch (e) {
          row.transposed[key][v] = { error: errText(e) }
          peerProgress(`matmul ${key} ${v}: failed: ${row.transposed[key][v].error}`)
        }
        emitRow(row)
      }
    }
  if (args.sections.has("mlp")) {
    try {
      row.mlp = await benchMlp()
      peerProgress(`mlp step: ${row.mlp.ms!.toFixed(1)} ms`)
    } catch (e) {
      row.mlp = { error: errText(e) }
      peerProgress(`mlp: failed: ${row.mlp.error}`)
    }
  }
  if (useShim) row.notes.push(`web-worker shim started ${shimWorkersStarted()} worker thread(s)`)
  row.total_s = (performance.now() - t0) / 1000
  emitRow(row)
}

try {
  await main()
} finally {
  await terminateShimWorkers()
}
