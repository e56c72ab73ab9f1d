/**
 * Peer for bench-tensor.ts: TensorFlow.js (@tensorflow/tfjs-core) on @tensorflow/tfjs-backend-wasm in Node.
 *
 *   tsx packages/core-tensor/bench/peers/tfjs-wasm.ts [--quick] [--budget S] [--max-runs N] [--min-time S] [--sections …]
 *
 * Threads: `setThreadsCount(availableParallelism)` is called before `setBackend("wasm")`, as the backend's README
 * says, but tfjs-backend-wasm 4.x hard-wires WASM_HAS_MULTITHREAD_SUPPORT to false under Node (tfjs issue #3830),
 * so it loads the SIMD, single-threaded binary; forcing the flag makes Emscripten hand a blob: URL to
 * node:worker_threads, which refuses it (ERR_WORKER_PATH). `getThreadsCount()` is reported as it comes.
 *
 * Transposed matmuls use tfjs's own transposeA/transposeB flags of tf.matMul (its native way; no copy is made
 * outside the kernel).
 *
 * Gradients: tfjs-core registers no gradient functions by itself; the @tensorflow/tfjs union package does, in its
 * bundle, and tfjs-core's ESM build that has `register_all_gradients` cannot be loaded by Node (extensionless
 * imports). So the five gradients the MLP needs are registered here, transcribed from tfjs-core 4.22's own
 * src/gradients/{BatchMatMul,Add,Relu,SquaredDifference,Mean}_grad.ts.
 *
 * Prints the result so far as one JSON line on stdout after every measurement (RowResult, ../shared.ts).
 */
import os from "node:os"
import * as wasm from "@tensorflow/tfjs-backend-wasm"
import * as tf from "@tensorflow/tfjs-core"
import {
  MLP,
  MLP_FLOPS,
  type MatmulShape,
  type Measurement,
  type StepResult,
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
} from "../shared.js"

const args = parsePeerArgs(process.argv.slice(2))
const row = emptyRow("tfjs-wasm", "tfjs wasm")

// ---- gradients (tfjs-core 4.22 src/gradients/*_grad.ts) ------------------------------------------------------

type Grad = tf.GradConfig["gradFunc"]
function registerMlpGradients(): void {
  const reg = (kernelName: string, inputsToSave: string[], gradFunc: Grad) => {
    if (tf.getGradient(kernelName) === undefined) tf.registerGradient({ kernelName, inputsToSave, gradFunc })
  }
  reg("BatchMatMul", ["a", "b"], (dy, saved, attrs) => {
    const [a, b] = saved
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean }
    const d = dy as tf.Tensor
    if (!transposeA && !transposeB) return { a: () => tf.matMul(d, b, false, true), b: () => tf.matMul(a, d, true, false) }
    if (!transposeA && transposeB) return { a: () => tf.matMul(d, b, false, false), b: () => tf.matMul(d, a, true, false) }
    if (transposeA && !transposeB) return { a: () => tf.matMul(b, d, false, true), b: () => tf.matMul(a, d, false, false) }
    return { a: () => tf.matMul(b, d, true, true), b: () => tf.matMul(d, a, true, true) }
  })
  reg("Add", ["a", "b"], (dy, saved) => {
    const [a, b] = saved
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape)
    const der = (x: tf.Tensor) => () => {
      let res = dy as tf.Tensor
      const reduceAxes = tf.backend_util.getReductionAxes(x.shape, outShape)
      if (reduceAxes.length > 0) res = tf.sum(res, reduceAxes)
      return tf.reshape(res, x.shape)
    }
    return { a: der(a), b: der(b) }
  })
  reg("Relu", ["x"], (dy, saved) => {
    const [x] = saved
    return { x: () => tf.mul(dy as tf.Tensor, tf.cast(tf.step(x), "float32")) }
  })
  reg("SquaredDifference", ["a", "b"], (dy, saved) => {
    const [a, b] = saved
    const two = tf.scalar(2)
    return { a: () => tf.mul(dy as tf.Tensor, tf.mul(two, tf.sub(a, b))), b: () => tf.mul(dy as tf.Tensor, tf.mul(two, tf.sub(b, a))) }
  })
  reg("Mean", ["x"], (dy, saved, attrs) => {
    const [x] = saved
    const axes = tf.util.parseAxisParam((attrs as { axis: number | number[] }).axis, x.shape)
    const reduceSize = tf.util.sizeFromShape(tf.backend_util.computeOutAndReduceShapes(x.shape, axes)[1])
    return {
      x: () => {
        const expandedDyShape = x.shape.slice()
        for (const axis of axes) expandedDyShape[axis] = 1
        return tf.div(tf.mul(tf.reshape(dy as tf.Tensor, expandedDyShape), tf.ones(x.shape, "float32")), reduceSize)
      },
    }
  })
}

// ---- measurements -------------------------------------------------------------------------------------------

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

async function benchMatmul(shape: MatmulShape, v: Variant, seed: number): Promise<Measurement> {
  const [aShape, bShape] = operandShapes(shape, v)
  const aHost = hashData(size(aShape), seed)
  const bHost = hashData(size(bShape), seed + 1)
  const a = tf.tensor(aHost, aShape)
  const b = tf.tensor(bHost, bShape)
  const ta = v[0] === "T"
  const tb = v[1] === "T"
  let check = "not checked"
  try {
    const [m, k, n] = shape
    const t = await measure(
      args,
      async () => {
        const c = tf.matMul(a, b, ta, tb)
        await c.data() // the wasm backend computes synchronously; this is the sync point anyway
        return () => c.dispose()
      },
      async () => {
        const c = tf.matMul(a, b, ta, tb)
        try {
          const bad = checkMatmul(aHost, bHost, (await c.data()) as Float32Array, shape, v)
          if (bad !== undefined) throw new Error(bad)
          check = "ok (16 entries)"
        } finally {
          c.dispose()
        }
      },
    )
    return { ...t, gflops: (2 * m * k * n) / (t.ms * 1e6), check }
  } finally {
    a.dispose()
    b.dispose()
  }
}

async function benchMlp(): Promise<StepResult> {
  const { batch: B, din, hidden: H, dout, initStd, seeds, lr, beta1, beta2, eps } = MLP
  const w1 = tf.variable(tf.tensor(hashData(din * H, seeds.w1, initStd), [din, H]), true, "w1")
  const b1 = tf.variable(tf.zeros([H]), true, "b1")
  const w2 = tf.variable(tf.tensor(hashData(H * dout, seeds.w2, initStd), [H, dout]), true, "w2")
  const b2 = tf.variable(tf.zeros([dout]), true, "b2")
  const x = tf.tensor(hashData(B * din, seeds.x), [B, din])
  const target = tf.tensor(hashData(B * dout, seeds.target), [B, dout])
  const optimizer = tf.train.adam(lr, beta1, beta2, eps)
  const lossFn = () => {
    const h = tf.relu(tf.add(tf.matMul(x, w1), b1))
    const y = tf.add(tf.matMul(h, w2), b2)
    return tf.mean(tf.squaredDifference(y, target)) as tf.Scalar
  }
  let steps = 0
  const run = () =>
    tf.tidy(() => {
      steps += 1
      const { value, grads } = tf.variableGrads(lossFn)
      optimizer.applyGradients(grads as Parameters<typeof optimizer.applyGradients>[0])
      return value
    })
  let loss0 = Number.NaN
  let last: tf.Scalar | null = null
  try {
    const timing = await measure(
      args,
      async () => {
        const loss = run()
        await loss.data()
        return () => {
          last?.dispose()
          last = loss
        }
      },
      async () => {
        const loss = run()
        loss0 = (await loss.data())[0]
        loss.dispose()
        if (!Number.isFinite(loss0)) throw new Error(`loss is ${loss0}`)
      },
    )
    const lossLast = last === null ? Number.NaN : (await (last as tf.Scalar).data())[0]
    return { ...timing, gflops: MLP_FLOPS / (timing.ms * 1e6), loss0, loss_last: lossLast, steps }
  } finally {
    ;(last as tf.Scalar | null)?.dispose()
    optimizer.dispose()
    for (const t of [w1, b1, w2, b2, x, target]) t.dispose()
  }
}

async function main(): Promise<void> {
  const t0 = performance.now()
  row.version = tf.version_core
  row.name = `tfjs ${tf.version_core} (backend-wasm ${wasm.version_wasm})`
  try {
    wasm.setThreadsCount(os.availableParallelism())
    if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') returned false")
    await tf.ready()
    if (tf.getBackend() !== "wasm") throw new Error(`backend is ${tf.getBackend()}, not wasm`)
    registerMlpGradients()
  } catch (e) {
    row.available = false
    row.error = errText(e)
    emitRow(row)
    return
  }
  const simd = (await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")) === true
  const mt = (await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT")) === true
  row.threads = wasm.getThreadsCount()
  row.device = `wasm${simd ? " SIMD" : ""}, ${row.threads} thread${row.threads === 1 ? "" : "s"}${mt ? "" : " (multi-threading is off in Node: tfjs#3830)"}`
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
  row.notes.push("MLP gradients: tfjs-core 4.22's own gradient functions for BatchMatMul, Add, Relu, SquaredDifference, Mean, registered by the peer (tfjs-core registers none itself)")
  row.total_s = (performance.now() - t0) / 1000
  emitRow(row)
}

await main()
// Emscripten's runtime keeps handles open; leave as soon as the figures are out.
process.exit(0)
