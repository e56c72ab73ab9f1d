import type { BinaryOp, UnaryOp } from "../backend.js"
import type { CreateDType, DType } from "../dtype.js"
import { contiguousStrides } from "../shape.js"
import type { Tensor } from "../tensor.js"
import type { OpRule } from "./apply.js"
import * as api from "./api.js"

/**
 * The primitive set. Every op is declared once, with its forward (a kernel call or a strided view) and its
 * vector-Jacobian product side by side. The mapped type below makes the compiler reject a missing entry.
 * Front-end functions in api.ts validate, broadcast and normalise arguments before reaching these rules, so a
 * rule may assume: binary inputs share a shape and dtype, axes are normalised, reduce keeps the reduced dim.
 */
export interface PrimitiveAttrs {
  neg: {}
  reciprocal: {}
  exp: {}
  log: {}
  sqrt: {}
  sin: {}
  cos: {}
  cast: { readonly dtype: CreateDType }
  add: {}
  mul: {}
  max: {}
  cmplt: {}
  cmpeq: {}
  where: {}
  sum: { readonly axis: number }
  reduceMax: { readonly axis: number }
  reshape: { readonly shape: readonly number[] }
  permute: { readonly perm: readonly number[] }
  expand: { readonly shape: readonly number[] }
  slice: { readonly starts: readonly number[]; readonly ends: readonly number[] }
  pad: { readonly before: readonly number[]; readonly after: readonly number[]; readonly value: number }
  contiguous: {}
  matmul: {}
  gather: {}
  scatterAdd: { readonly numRows: number }
}

export type PrimitiveName = keyof PrimitiveAttrs

// ---- kernel launchers -----------------------------------------------------------------------------------------

function unary(op: UnaryOp, x: Tensor, dtype: DType = x.dtype): Tensor {
  const out = x.device.empty(x.shape, dtype, op)
  if (out.size > 0) x.device.run({ kind: "unary", op, x: x.view(op), out: out.view(op) })
  return out
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const dtype = op === "cmplt" || op === "cmpeq" ? "bool" : a.dtype
  const out = a.device.empty(a.shape, dtype, op)
  if (out.size > 0) a.device.run({ kind: "binary", op, a: a.view(op), b: b.view(op), out: out.view(op) })
  return out
}

function reduce(op: "sum" | "max", x: Tensor, axis: number): Tensor {
  const shape = x.shape.map((d, i) => (i === axis ? 1 : d))
  const out = x.device.empty(shape, x.dtype, op)
  if (out.size > 0) x.device.run({ kind: "reduce", op, axis, x: x.view(op), out: out.view(op) })
  return out
}

export function copyContiguous(x: Tensor): Tensor {
  const out = x.device.empty(x.shape, x.dtype, "contiguous")
  if (out.size > 0) x.device.run({ kind: "copy", x: x.view("contiguous"), out: out.view("contiguous") })
  return out
}

/**
 * float32 → float16 storage (`toHalf`) or float16 storage → float32: a `cast` kernel whose half side has
 * `View.half`. Without float16 storage on the device, "float16" is a float32 copy.
 */
function castFloat16(x: Tensor, toHalf: boolean): Tensor {
  const device = x.device
  if (toHalf && !device.float16Storage) return copyContiguous(x)
  const out = toHalf ? device.emptyHalf(x.shape, "cast") : device.empty(x.shape, "float32", "cast")
  if (out.size > 0) device.run({ kind: "unary", op: "cast", x: x.storageView("cast"), out: out.storageView("cast") })
  return out
}

/** An elementwise op whose gradient is g·f'(x), written with front-end ops. */
const elementwise = (forward: (x: Tensor) => Tensor, dfdx: (x: Tensor, out: Tensor) => Tensor): OpRule<{}> => ({
  forward: ([x]) => forward(x),
  vjp: (g, { inputs: [x], out }) => [api.mul(g, dfdx(x, out))],
})

// ---- the table ------------------------------------------------------------------------------------------------

export const primitives: { readonly [P in PrimitiveName]: OpRule<PrimitiveAttrs[P]> } = {
  neg: { forward: ([x]) => unary("neg", x), vjp: (g) => [api.neg(g)] },
  reciprocal: elementwise((x) => unary("reciprocal", x), (_x, y) => api.neg(api.mul(y, y))),
  exp: elementwise((x) => unary("exp", x), (_x, y) => y),
  log: elementwise((x) => unary("log", x), (x) => api.reciprocal(x)),
  sqrt: elementwise((x) => unary("sqrt", x), (_x, y) => api.div(0.5, y)),
  sin: elementwise((x) => unary("sin", x), (x) => api.cos(x)),
  cos: elementwise((x) => unary("cos", x), (x) => api.neg(api.sin(x))),

  cast: {
    forward: ([x], { dtype }) => (dtype === "float16" || x.half ? castFloat16(x, dtype === "float16") : unary("cast", x, dtype)),
    // Only float → float (float16 storage included) carries a gradient; integer and boolean results are
    // piecewise constant.
    vjp: (g, { inputs: [x], attrs }) => [x.dtype === "float32" && attrs.dtype !== "int32" && attrs.dtype !== "bool" ? g : null],
  },

  add: { forward: ([a, b]) => binary("add", a, b), vjp: (g) => [g, g] },
  mul: { forward: ([a, b]) => binary("mul", a, b), vjp: (g, { inputs: [a, b] }) => [api.mul(g, b), api.mul(g, a)] },
  max: {
    forward: ([a, b]) => binary("max", a, b),
    // Ties split the gradient evenly, as torch.maximum does.
    vjp: (g, { inputs: [a, b] }) => {
      const wa = api.where(api.lt(b, a), 1, api.where(api.eq(a, b), 0.5, 0))
      return [api.mul(g, wa), api.mul(g, api.sub(1, wa))]
    },
  },
  cmplt: { forward: ([a, b]) => binary("cmplt", a, b), vjp: () => [null, null] },
  cmpeq: { forward: ([a, b]) => binary("cmpeq", a, b), vjp: () => [null, null] },
  where: {
    forward: ([cond, a, b]) => {
      const out = a.device.empty(a.shape, a.dtype, "where")
      if (out.size > 0) a.device.run({ kind: "where", cond: cond.view("where"), a: a.view("where"), b: b.view("where"), out: out.view("where") })
      return out
    },
    vjp: (g, { inputs: [cond] }) => [null, api.where(cond, g, 0), api.where(cond, 0, g)],
  },

  sum: {
    forward: ([x], { axis }) => reduce("sum", x, axis),
    vjp: (g, { inputs: [x] }) => [api.expand(g, x.shape)],
  },
  reduceMax: {
    forward: ([x], { axis }) => reduce("max", x, axis),
    // Ties share the gradient evenly (torch's amax convention).
    vjp: (g, { inputs: [x], out, attrs }) => {
      const hit = api.cast(api.eq(x, api.expand(out, x.shape)), "float32")
      const count = api.sum(hit, attrs.axis, true)
      return [api.mul(api.expand(api.div(g, count), x.shape), hit)]
    },
  },

  reshape: {
    forward: ([x], { shape }) => {
      const src = x.isContiguous ? x : copyContiguous(x)
      const view = src.withGeometry(shape, contiguousStrides(shape), 0)
      if (src !== x) src.dispose()
      return view
    },
    vjp: (g, { inputs: [x] }) => [api.reshape(g, x.shape)],
  },
  permute: {
    forward: ([x], { perm }) =>
      x.withGeometry(
        perm.map((p) => x.shape[p]),
        perm.map((p) => x.strides[p]),
        x.offset,
      ),
    vjp: (g, { attrs: { perm } }) => {
      const inverse = new Array<number>(perm.length)
      perm.forEach((p, i) => (inverse[p] = i))
      return [api.permute(g, inverse)]
    },
  },
  expand: {
    forward: ([x], { shape }) =>
      x.withGeometry(
        shape,
        shape.map((d, i) => (x.shape[i] === d ? x.strides[i] : 0)),
        x.offset,
      ),
    vjp: (g, { inputs: [x] }) => {
      let r = g
      x.shape.forEach((d, i) => {
        if (d !== g.shape[i]) r = api.sum(r, i, true)
      })
      return [r]
    },
  },
  slice: {
    forward: ([x], { starts, ends }) =>
      x.withGeometry(
        starts.map((s, i) => ends[i] - s),
        x.strides,
        x.offset + starts.reduce((acc, s, i) => acc + s * x.strides[i], 0),
      ),
    vjp: (g, { inputs: [x], attrs: { starts, ends } }) => [api.pad(g, starts, ends.map((e, i) => x.shape[i] - e))],
  },
  pad: {
    forward: ([x], { before, after, value }) => {
      const out = x.device.empty(x.shape.map((d, i) => before[i] + d + after[i]), x.dtype, "pad")
      if (out.size > 0) x.device.run({ kind: "pad", x: x.view("pad"), before, value, out: out.view("pad") })
      return out
    },
    vjp: (g, { inputs: [x], attrs: { before } }) => [api.slice(g, before, before.map((b, i) => b + x.shape[i]))],
  },
  contiguous: { forward: ([x]) => copyContiguous(x), vjp: (g) => [g] },

  matmul: {
    forward: ([a, b]) => {
      const r = a.rank
      const out = a.device.empty([...a.shape.slice(0, r - 1), b.shape[r - 1]], "float32", "matmul")
      // Either operand may be float16 storage (WebGPU): read as halves, accumulated in f32.
      if (out.size > 0) a.device.run({ kind: "matmul", a: a.storageView("matmul"), b: b.storageView("matmul"), out: out.view("matmul") })
      return out
    },
    // Only the cotangents the tape needs: with a frozen weight (LoRA) its gradient is never formed.
    vjp: (g, { inputs: [a, b], needs }) => [
      needs[0] ? api.matmul(g, api.transpose(b)) : null,
      needs[1] ? api.matmul(api.transpose(a), g) : null,
    ],
  },

  gather: {
    forward: ([table, index]) => {
      const out = table.device.empty([index.shape[0], table.shape[1]], "float32", "gather")
      if (out.size > 0) table.device.run({ kind: "gather", table: table.view("gather"), index: index.view("gather"), out: out.view("gather") })
      return out
    },
    vjp: (g, { inputs: [table, index] }) => [api.scatterAdd(g, index, table.shape[0]), null],
  },
  scatterAdd: {
    forward: ([src, index], { numRows }) => {
      const out = src.device.empty([numRows, src.shape[1]], "float32", "scatterAdd")
      if (out.size > 0) src.device.run({ kind: "scatterAdd", src: src.view("scatterAdd"), index: index.view("scatterAdd"), out: out.view("scatterAdd") })
      return out
    },
    vjp: (g, { inputs: [, index] }) => [api.gather(g, index), null],
  },
}
