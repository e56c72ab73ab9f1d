import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { AdamW, clipGradNorm, type Device, type ParamTree, Sgd, ShapeError, type Tensor } from "../src/index.js"
import { BACKENDS, device } from "./devices.js"
import { assertClose, type Tolerance } from "./tolerance.js"

/**
 * Optimizers against PyTorch: every case of the committed fixture (tests/golden/gen_core_tensor_golden.py writes
 * fixtures/optim_golden.json with torch 2.13.0 in float64) is replayed on every backend.
 *  - adamw / sgd: torch.optim.AdamW / torch.optim.SGD trajectories, parameters compared after every step;
 *  - clip_grad_norm: torch.nn.utils.clip_grad_norm_'s total norm and clipped gradients.
 */

/**
 * atol 1e-5, rtol 1e-5: our parameters and optimizer state (m, v, momentum buffer) are float32 and rounded at every
 * write, the reference keeps everything in float64. Over 5 steps each parameter element accumulates a handful of
 * float32 roundings (unit roundoff 6e-8, parameters of magnitude ≤ 2), i.e. errors of order 1e-6 at most, an
 * order of magnitude inside the bound. The clip norm reduces 17 squares, well within the same bound.
 */
const OPTIM: Tolerance = { atol: 1e-5, rtol: 1e-5 }

interface FixtureTensor {
  shape: number[]
  data: number[]
}
interface TrajectoryCase {
  name: string
  kind: "adamw" | "sgd"
  options: { lr: number; betas?: [number, number]; eps?: number; momentum?: number; weight_decay: number }
  lrs: number[] | null
  params: FixtureTensor[]
  grads: FixtureTensor[][]
  trajectory: FixtureTensor[][]
}
interface ClipCase {
  name: string
  kind: "clip_grad_norm"
  max_norm: number
  grads: FixtureTensor[]
  total_norm: number
  clipped: FixtureTensor[]
}
type OptimCase = TrajectoryCase | ClipCase

const fixture: { cases: OptimCase[]; torch: string } = JSON.parse(
  readFileSync(fileURLToPath(new URL("./fixtures/optim_golden.json", import.meta.url)), "utf8"),
)
const trajectories = fixture.cases.filter((c): c is TrajectoryCase => c.kind === "adamw" || c.kind === "sgd")
const clips = fixture.cases.filter((c): c is ClipCase => c.kind === "clip_grad_norm")

/** The fixture's two parameters ([3, 4] and [5]) as a named tree, so that tree flattening is exercised too. */
type Params = { w: Tensor; b: Tensor }
const upload = (dev: Device, ts: FixtureTensor[]): Params => {
  expect(ts.length).toBe(2)
  return { w: dev.tensor(ts[0].data, ts[0].shape), b: dev.tensor(ts[1].data, ts[1].shape) }
}
const disposeAll = (p: Params) => Object.values(p).forEach((t) => t.dispose())

function makeOptimizer(c: TrajectoryCase): AdamW | Sgd {
  const o = c.options
  if (c.kind === "adamw") return new AdamW({ lr: o.lr, beta1: o.betas![0], beta2: o.betas![1], eps: o.eps!, weightDecay: o.weight_decay })
  return new Sgd({ lr: o.lr, momentum: o.momentum!, weightDecay: o.weight_decay })
}

describe("optimizer fixture", () => {
  it("has AdamW (incl. an lr override), SGD (with and without momentum) and clip cases, clipping and not", () => {
    expect(fixture.torch).toBe("2.13.0")
    expect(trajectories.filter((c) => c.kind === "adamw" && c.lrs === null).length).toBeGreaterThanOrEqual(2)
    expect(trajectories.some((c) => c.kind === "adamw" && c.lrs !== null)).toBe(true)
    expect(trajectories.some((c) => c.kind === "sgd" && c.options.momentum! > 0)).toBe(true)
    expect(trajectories.some((c) => c.kind === "sgd" && c.options.momentum === 0)).toBe(true)
    expect(clips.some((c) => c.max_norm < c.total_norm)).toBe(true)
    expect(clips.some((c) => c.max_norm > c.total_norm)).toBe(true)
    for (const c of trajectories) {
      expect(c.grads.length).toBe(5)
      expect(c.trajectory.length).toBe(5)
      if (c.lrs !== null) expect(c.lrs.length).toBe(5)
    }
  })
})

for (const backend of BACKENDS) {
  describe(`optimizers vs PyTorch [${backend}]`, () => {
    for (const c of trajectories) {
      it(`${c.name}: parameters after each of ${c.trajectory.length} steps`, async () => {
        const dev = await device(backend)
        if (dev === null) return
        const liveBefore = dev.memory().liveTensors
        const params = upload(dev, c.params)
        const opt = makeOptimizer(c)
        try {
          for (const [k, expected] of c.trajectory.entries()) {
            const grads = upload(dev, c.grads[k])
            if (c.lrs === null) opt.step(params, grads)
            else opt.step(params, grads, c.lrs[k])
            disposeAll(grads)
            if (opt instanceof AdamW) expect(opt.stepCount).toBe(k + 1)
            for (const [j, key] of (["w", "b"] as const).entries()) {
              expect(params[key].shape).toEqual(expected[j].shape)
              assertClose(`${c.name} [${backend}] step ${k + 1} parameter ${key}`, await params[key].data(), expected[j].data, OPTIM)
            }
          }
        } finally {
          opt.dispose()
          disposeAll(params)
        }
        expect(dev.memory().liveTensors, "tensors leaked").toBe(liveBefore)
      })
    }

    for (const c of clips) {
      it(`${c.name}: total norm and clipped gradients (max_norm ${c.max_norm})`, async () => {
        const dev = await device(backend)
        if (dev === null) return
        const liveBefore = dev.memory().liveTensors
        const grads = upload(dev, c.grads)
        const { grads: clipped, norm } = clipGradNorm(grads, c.max_norm)
        try {
          expect(norm.shape).toEqual([])
          assertClose(`${c.name} [${backend}] total norm`, await norm.data(), [c.total_norm], OPTIM)
          expect(Object.keys(clipped).sort()).toEqual(["b", "w"])
          for (const [j, key] of (["w", "b"] as const).entries()) {
            expect(clipped[key].shape).toEqual(c.clipped[j].shape)
            assertClose(`${c.name} [${backend}] clipped ${key}`, await clipped[key].data(), c.clipped[j].data, OPTIM)
            // the inputs are left alone (unlike torch's in-place clip_grad_norm_)
            assertClose(`${c.name} [${backend}] input ${key} untouched`, await grads[key].data(), c.grads[j].data, { atol: 0, rtol: 0 })
          }
        } finally {
          norm.dispose()
          disposeAll(clipped)
          disposeAll(grads)
        }
        expect(dev.memory().liveTensors, "tensors leaked (intermediates of the norm?)").toBe(liveBefore)
      })
    }

    it("dispose() frees the optimizer state (AdamW m/v, SGD momentum buffers)", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const c = trajectories.find((t) => t.kind === "adamw")!
      const params = upload(dev, c.params)
      const grads = upload(dev, c.grads[0])
      try {
        const optimizers = [
          new AdamW({ lr: 1e-2 }),
          new Sgd({ lr: 0.1, momentum: 0.9 }),
          new Sgd({ lr: 0.1 }), // momentum 0 still keeps a buffer per parameter
        ]
        for (const opt of optimizers) {
          const live = dev.memory().liveTensors
          const bytes = dev.memory().liveBytes
          opt.step(params, grads)
          opt.step(params, grads) // the second step reuses the state, it allocates none
          expect(dev.memory().liveTensors, `${opt.constructor.name} holds state after step`).toBeGreaterThan(live)
          opt.dispose()
          expect(dev.memory().liveTensors, `${opt.constructor.name}.dispose() frees its state`).toBe(live)
          expect(dev.memory().liveBytes).toBe(bytes)
          opt.dispose() // idempotent
          expect(dev.memory().liveTensors).toBe(live)
        }
      } finally {
        disposeAll(grads)
        disposeAll(params)
      }
    })

    it("a gradient tree that does not match the parameters throws a ShapeError naming AdamW.step", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const c = trajectories.find((t) => t.kind === "adamw")!
      const liveBefore = dev.memory().liveTensors
      const params = upload(dev, c.params)
      const opt = new AdamW({ lr: 1e-2 })
      const wrongShape = { w: dev.zeros([4, 3]), b: dev.zeros([5]) }
      const wrongSize = { w: dev.zeros([3, 4]) }
      const badTrees: ParamTree[] = [wrongShape, wrongSize]
      try {
        for (const bad of badTrees) {
          let err: unknown
          try {
            opt.step(params, bad)
          } catch (e) {
            err = e
          }
          expect(err).toBeInstanceOf(ShapeError)
          expect((err as ShapeError).op).toBe("AdamW.step")
          expect((err as ShapeError).message).toContain("AdamW.step")
        }
        // nothing was updated by the failed steps
        assertClose(`[${backend}] parameter w after failed steps`, await params.w.data(), c.params[0].data, { atol: 0, rtol: 0 })
        assertClose(`[${backend}] parameter b after failed steps`, await params.b.data(), c.params[1].data, { atol: 0, rtol: 0 })
      } finally {
        opt.dispose()
        disposeAll(wrongShape)
        wrongSize.w.dispose()
        disposeAll(params)
      }
      expect(dev.memory().liveTensors, "tensors leaked").toBe(liveBefore)
    })
  })
}
