import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { type Device, type DType, ops, type Tensor, tidy, valueAndGrad } from "../src/index.js"
import { BACKENDS, device } from "./devices.js"
import { ACCUMULATING, assertClose, ELEMENTWISE, EXACT, FINITE_DIFFERENCE, type Tolerance } from "./tolerance.js"

/**
 * helper_test_op in one place: every case of the committed PyTorch fixture (tests/golden/gen_core_tensor_golden.py,
 * torch 2.13.0, float64) runs on every backend and checks
 *   1. the forward output against PyTorch,
 *   2. the gradient of ⟨out, cotangent⟩ w.r.t. every differentiable input against PyTorch autograd,
 *   3. the same gradient against central finite differences of our own forward (directional derivatives).
 */
interface FixtureTensor {
  shape: number[]
  dtype?: DType
  data: number[]
}
interface FixtureInput extends FixtureTensor {
  dtype: DType
  requires_grad: boolean
  view: null | { permute: number[] } | { slice: { starts: number[]; ends: number[] } }
}
interface FixtureCase {
  name: string
  op: string
  attrs: Record<string, any>
  inputs: FixtureInput[]
  output: FixtureTensor
  cotangent: FixtureTensor | null
  grads: Array<FixtureTensor | null>
}

const fixture: { cases: FixtureCase[] } = JSON.parse(
  readFileSync(fileURLToPath(new URL("./fixtures/golden.json", import.meta.url)), "utf8"),
)

type OpFn = (xs: Tensor[], attrs: Record<string, any>) => Tensor
interface OpEntry {
  readonly fn: OpFn
  readonly tol: Tolerance
}

const ew = (fn: OpFn): OpEntry => ({ fn, tol: ELEMENTWISE })
const acc = (fn: OpFn): OpEntry => ({ fn, tol: ACCUMULATING })

/** Fixture op name → bdvax call. Every op the generator emits must be here (checked below). */
const OPS: Record<string, OpEntry> = {
  neg: ew(([x]) => ops.neg(x)),
  reciprocal: ew(([x]) => ops.reciprocal(x)),
  exp: ew(([x]) => ops.exp(x)),
  log: ew(([x]) => ops.log(x)),
  sqrt: ew(([x]) => ops.sqrt(x)),
  sin: ew(([x]) => ops.sin(x)),
  cos: ew(([x]) => ops.cos(x)),
  add: ew(([a, b]) => ops.add(a, b)),
  sub: ew(([a, b]) => ops.sub(a, b)),
  mul: ew(([a, b]) => ops.mul(a, b)),
  div: ew(([a, b]) => ops.div(a, b)),
  maximum: ew(([a, b]) => ops.maximum(a, b)),
  lt: ew(([a, b]) => ops.lt(a, b)),
  eq: ew(([a, b]) => ops.eq(a, b)),
  where: ew(([c, a, b]) => ops.where(c, a, b)),
  sum: acc(([x], a) => ops.sum(x, a.axis, a.keepdim)),
  max: ew(([x], a) => ops.max(x, a.axis, a.keepdim)),
  mean: acc(([x], a) => ops.mean(x, a.axis, a.keepdim)),
  reshape: ew(([x], a) => ops.reshape(x, a.shape)),
  permute: ew(([x], a) => ops.permute(x, a.perm)),
  expand: ew(([x], a) => ops.expand(x, a.shape)),
  slice: ew(([x], a) => ops.slice(x, a.starts, a.ends)),
  pad: ew(([x], a) => ops.pad(x, a.before, a.after, a.value)),
  contiguous: ew(([x]) => ops.contiguous(x)),
  matmul: acc(([a, b]) => ops.matmul(a, b)),
  gather: ew(([t, i]) => ops.gather(t, i)),
  scatter_add: acc(([s, i], a) => ops.scatterAdd(s, i, a.num_rows)),
  rms_norm: acc(([x, w], a) => ops.rmsNorm(x, w, a.eps)),
  rope: acc(([x, c, s]) => ops.rope(x, c, s)),
  silu_mul: ew(([g, u]) => ops.siluMul(g, u)),
  softmax: acc(([x]) => ops.softmax(x)),
  log_softmax: acc(([x]) => ops.logSoftmax(x)),
  softmax_cross_entropy: acc(([l, t], a) => ops.softmaxCrossEntropy(l, t, { ignoreIndex: a.ignore_index })),
  attention: acc(([q, k, v], a) => ops.attention(q, k, v, { causal: a.causal, window: a.window, scale: a.scale })),
  cast: ew(([x], a) => ops.cast(x, a.dtype)),
}

function upload(dev: Device, inputs: FixtureInput[]): Tensor[] {
  return inputs.map((x) => dev.tensor(x.data, x.shape, x.dtype))
}

function applyView(x: Tensor, view: FixtureInput["view"]): Tensor {
  if (view === null) return x
  if ("permute" in view) return ops.permute(x, view.permute)
  return ops.slice(x, view.slice.starts, view.slice.ends)
}

/** Run the case's op on base tensors (views applied inside, so gradients are w.r.t. the bases). */
function runCase(c: FixtureCase, bases: Tensor[]): Tensor {
  const entry = OPS[c.op]
  return entry.fn(
    bases.map((b, i) => applyView(b, c.inputs[i].view)),
    c.attrs,
  )
}

/** A small deterministic normal generator for finite-difference directions (independent of the library RNG). */
function directions(seed: number, n: number): Float64Array {
  let s = seed >>> 0
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return (s + 0.5) / 4294967296
  }
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next())
  return out
}

async function lossOnHost(dev: Device, c: FixtureCase, bases: Tensor[]): Promise<number> {
  const out = tidy(() => runCase(c, bases))
  const values = await out.data()
  out.dispose()
  let l = 0
  c.cotangent!.data.forEach((ct, i) => (l += ct * values[i]))
  return l
}

const STEP = 5e-3

describe("golden fixture", () => {
  it("covers every op the generator emits, and every op has at least one case", () => {
    const emitted = new Set(fixture.cases.map((c) => c.op))
    for (const op of emitted) expect(OPS[op], `no bdvax mapping for fixture op ${op}`).toBeDefined()
    for (const op of Object.keys(OPS)) expect(emitted.has(op), `no fixture case for ${op}`).toBe(true)
    expect(fixture.cases.length).toBeGreaterThan(50)
  })
})

for (const backend of BACKENDS) {
  describe(`golden vs PyTorch and finite differences [${backend}]`, () => {
    for (const c of fixture.cases) {
      it(c.name, async () => {
        const dev = await device(backend)
        if (dev === null) return
        const entry = OPS[c.op]
        const liveBefore = dev.memory().liveTensors
        const bases = upload(dev, c.inputs)
        try {
          // 1. forward
          const out = tidy(() => runCase(c, bases))
          expect(out.shape).toEqual(c.output.shape)
          const outTol = out.dtype === "float32" ? entry.tol : EXACT
          if (c.output.dtype !== undefined) expect(out.dtype).toBe(c.output.dtype)
          assertClose(`${c.name} [${backend}] forward`, await out.data(), c.output.data, outTol)
          out.dispose()
          if (c.cotangent === null) return

          // 2. backward vs PyTorch
          const gradIdx = c.inputs.map((x, i) => (x.requires_grad ? i : -1)).filter((i) => i >= 0)
          const cot = dev.tensor(c.cotangent.data, c.cotangent.shape)
          const loss = (params: Tensor[]) => {
            const all = bases.slice()
            gradIdx.forEach((k, j) => (all[k] = params[j]))
            return ops.sum(ops.mul(runCase(c, all), cot))
          }
          const [value, grads] = valueAndGrad(loss)(gradIdx.map((k) => bases[k]))
          value.dispose()
          const ours: Float32Array[] = []
          for (const [j, k] of gradIdx.entries()) {
            const expected = c.grads[k]
            expect(expected, `fixture has no gradient for input ${k}`).not.toBeNull()
            expect(grads[j].shape).toEqual(expected!.shape)
            const g = (await grads[j].data()) as Float32Array
            ours.push(g)
            assertClose(`${c.name} [${backend}] grad of input ${k}`, g, expected!.data, entry.tol)
            grads[j].dispose()
          }
          cot.dispose()

          // 3. backward vs central finite differences (directional derivative along a random direction)
          for (const [j, k] of gradIdx.entries()) {
            const base = c.inputs[k]
            if (base.data.length === 0) continue
            const dir = directions(1000 + k, base.data.length)
            const shifted = (sign: number) => dev.tensor(base.data.map((x, i) => x + sign * STEP * dir[i]), base.shape)
            const plus = bases.slice()
            const minus = bases.slice()
            plus[k] = shifted(+1)
            minus[k] = shifted(-1)
            const fd = ((await lossOnHost(dev, c, plus)) - (await lossOnHost(dev, c, minus))) / (2 * STEP)
            plus[k].dispose()
            minus[k].dispose()
            let analytic = 0
            ours[j].forEach((g, i) => (analytic += g * dir[i]))
            assertClose(`${c.name} [${backend}] finite difference of input ${k}`, [analytic], [fd], FINITE_DIFFERENCE)
          }
        } finally {
          for (const b of bases) b.dispose()
        }
        expect(dev.memory().liveTensors, "tensors leaked by the case").toBe(liveBefore)
      })
    }
  })
}
