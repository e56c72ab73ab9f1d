import type { CreateDType } from "../dtype.js"
import { dtypeError, shapeError } from "../errors.js"
import { tidy } from "../memory.js"
import { broadcastShapes, normalizeAxis, sameShape, type Shape, sizeOf } from "../shape.js"
import { Tensor, type TensorLike } from "../tensor.js"
import { apply, checkInputs } from "./apply.js"
import { composites } from "./composites.js"
import { primitives } from "./primitives.js"

/**
 * The front end: validation with typed errors, broadcasting, axis normalisation, scalars → tensors, then the
 * rules in primitives.ts / composites.ts. Every function returns a new tensor the caller owns; temporaries
 * (scalar constants, broadcast views) are released here.
 */

const fmtShape = (s: Shape) => `[${s.join(", ")}]`

function requireFloat(op: string, ...xs: Tensor[]): void {
  for (const x of xs) if (x.dtype !== "float32") throw dtypeError(op, xs.map((t) => t.dtype), "expects float32 inputs")
}

function anchor(op: string, a: TensorLike, b: TensorLike): Tensor {
  if (a instanceof Tensor) return a
  if (b instanceof Tensor) return b
  throw new TypeError(`${op}: at least one argument must be a Tensor`)
}

function lift(x: TensorLike, like: Tensor): Tensor {
  return x instanceof Tensor ? x : like.device.scalar(x, like.dtype === "bool" ? "float32" : like.dtype)
}

/** Broadcast to `shape` as a view (no copy); returns x itself when the shape already matches. */
function broadcastTo(op: string, x: Tensor, shape: Shape): Tensor {
  if (sameShape(x.shape, shape)) return x
  if (x.rank > shape.length) throw shapeError(op, [x.shape, shape], `cannot broadcast rank ${x.rank} to rank ${shape.length}`)
  const padded = x.rank < shape.length ? reshape(x, [...new Array(shape.length - x.rank).fill(1), ...x.shape]) : x
  padded.shape.forEach((d, i) => {
    if (d !== shape[i] && d !== 1) throw shapeError(op, [x.shape, shape], `cannot broadcast dim ${i} (${d}) to ${shape[i]}`)
  })
  return apply("expand", primitives.expand, [padded], { shape: [...shape] })
}

function binaryOp(op: "add" | "mul" | "max" | "cmplt" | "cmpeq", name: string, a0: TensorLike, b0: TensorLike): Tensor {
  const like = anchor(name, a0, b0)
  return tidy(() => {
    const a = lift(a0, like)
    const b = lift(b0, like)
    checkInputs(name, [a, b])
    if (a.dtype !== b.dtype) throw dtypeError(name, [a.dtype, b.dtype], "operands must share a dtype (cast one first)")
    if ((op === "add" || op === "mul" || op === "max") && a.dtype === "bool") throw dtypeError(name, [a.dtype], "arithmetic on bool is not defined; cast first")
    const shape = broadcastShapes(name, a.shape, b.shape)
    return apply(op, primitives[op], [broadcastTo(name, a, shape), broadcastTo(name, b, shape)], {})
  })
}

// ---- elementwise ----------------------------------------------------------------------------------------------

const unaryOp = (op: "neg" | "reciprocal" | "exp" | "log" | "sqrt" | "sin" | "cos") => (x: Tensor): Tensor => {
  if (op !== "neg" || x.dtype !== "int32") requireFloat(op, x)
  return apply(op, primitives[op], [x], {})
}

export const neg = unaryOp("neg")
export const reciprocal = unaryOp("reciprocal")
export const exp = unaryOp("exp")
export const log = unaryOp("log")
export const sqrt = unaryOp("sqrt")
export const sin = unaryOp("sin")
export const cos = unaryOp("cos")

export const add = (a: TensorLike, b: TensorLike) => binaryOp("add", "add", a, b)
export const mul = (a: TensorLike, b: TensorLike) => binaryOp("mul", "mul", a, b)
export const maximum = (a: TensorLike, b: TensorLike) => binaryOp("max", "maximum", a, b)
export const lt = (a: TensorLike, b: TensorLike) => binaryOp("cmplt", "lt", a, b)
export const eq = (a: TensorLike, b: TensorLike) => binaryOp("cmpeq", "eq", a, b)
export const gt = (a: TensorLike, b: TensorLike) => lt(b, a)
export const sub = (a: TensorLike, b: TensorLike): Tensor => {
  const like = anchor("sub", a, b)
  return tidy(() => add(lift(a, like), neg(lift(b, like))))
}
export const div = (a: TensorLike, b: TensorLike): Tensor => {
  const like = anchor("div", a, b)
  return tidy(() => mul(lift(a, like), reciprocal(lift(b, like))))
}

/**
 * Convert to `dtype`. "float16" keeps float32 values as IEEE halves (nearest even) where the device computes on
 * them (`Device.float16Storage`; matmul reads them, accumulating in f32) and is a float32 copy elsewhere;
 * `cast(h, "float32")` brings float16 storage back. Gradients pass through float ↔ float16 casts unchanged.
 */
export function cast(x: Tensor, dtype: CreateDType): Tensor {
  if (dtype === "float16" && x.dtype !== "float32") throw dtypeError("cast", [x.dtype], "only float32 tensors can be stored as float16")
  if (x.half && dtype !== "float32") throw dtypeError("cast", ["float16", dtype], 'float16 storage converts to float32 only (cast to "float32" first)')
  return apply("cast", primitives.cast, [x], { dtype })
}

/** cond ? a : b, with broadcasting; cond must be bool. */
export function where(cond: Tensor, a0: TensorLike, b0: TensorLike): Tensor {
  if (cond.dtype !== "bool") throw dtypeError("where", [cond.dtype], "condition must be bool")
  return tidy(() => {
    const like = a0 instanceof Tensor ? a0 : b0 instanceof Tensor ? b0 : cond.device.scalar(0)
    const a = lift(a0, like)
    const b = lift(b0, like)
    checkInputs("where", [cond, a, b])
    if (a.dtype !== b.dtype) throw dtypeError("where", [a.dtype, b.dtype], "branches must share a dtype")
    const shape = broadcastShapes("where", broadcastShapes("where", cond.shape, a.shape), b.shape)
    return apply("where", primitives.where, [broadcastTo("where", cond, shape), broadcastTo("where", a, shape), broadcastTo("where", b, shape)], {})
  })
}

export const sigmoid = (x: Tensor): Tensor => tidy(() => reciprocal(add(exp(neg(x)), 1)))
export const silu = (x: Tensor): Tensor => tidy(() => mul(x, sigmoid(x)))
export const relu = (x: Tensor): Tensor => maximum(x, 0)
export const square = (x: Tensor): Tensor => mul(x, x)

// ---- reductions -----------------------------------------------------------------------------------------------

function axesOf(op: string, x: Tensor, axis?: number | readonly number[]): number[] {
  const list = axis === undefined ? x.shape.map((_, i) => i) : typeof axis === "number" ? [axis] : [...axis]
  const norm = list.map((a) => normalizeAxis(op, x.shape, a))
  if (new Set(norm).size !== norm.length) throw shapeError(op, [x.shape], `repeated axis in [${list.join(", ")}]`)
  return norm.sort((a, b) => a - b)
}

function reduceOp(op: "sum" | "reduceMax", name: string, x: Tensor, axis: number | readonly number[] | undefined, keepdim: boolean): Tensor {
  if (x.dtype === "bool") throw dtypeError(name, [x.dtype], "cast bool to a number type first")
  const axes = axesOf(name, x, axis)
  return tidy(() => {
    let r = x
    for (const a of axes) r = apply(op, primitives[op], [r], { axis: a })
    if (r === x) r = reshape(x, x.shape)
    return keepdim ? r : reshape(r, x.shape.filter((_, i) => !axes.includes(i)))
  })
}

export const sum = (x: Tensor, axis?: number | readonly number[], keepdim = false) => reduceOp("sum", "sum", x, axis, keepdim)
export const max = (x: Tensor, axis?: number | readonly number[], keepdim = false) => reduceOp("reduceMax", "max", x, axis, keepdim)
export function mean(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  requireFloat("mean", x)
  const count = axesOf("mean", x, axis).reduce((n, a) => n * x.shape[a], 1)
  return tidy(() => div(sum(x, axis, keepdim), count))
}

// ---- movement -------------------------------------------------------------------------------------------------

/** Reshape; one dim may be -1 (inferred). A view when x is contiguous, else a copy. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const holes = shape.filter((d) => d === -1).length
  if (holes > 1 || shape.some((d) => d < -1 || !Number.isInteger(d))) throw shapeError("reshape", [x.shape, shape], "invalid target shape")
  let target = [...shape]
  if (holes === 1) {
    const known = sizeOf(shape.filter((d) => d !== -1))
    if (known === 0 || x.size % known !== 0) throw shapeError("reshape", [x.shape, shape], `cannot infer -1 for ${x.size} elements`)
    target = shape.map((d) => (d === -1 ? x.size / known : d))
  }
  if (sizeOf(target) !== x.size) throw shapeError("reshape", [x.shape, target], `${x.size} elements cannot take shape ${fmtShape(target)}`)
  return apply("reshape", primitives.reshape, [x], { shape: target })
}

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const norm = perm.map((p) => normalizeAxis("permute", x.shape, p))
  if (norm.length !== x.rank || new Set(norm).size !== x.rank) throw shapeError("permute", [x.shape], `[${perm.join(", ")}] is not a permutation of ${x.rank} axes`)
  return apply("permute", primitives.permute, [x], { perm: norm })
}

/** Swap two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const perm = x.shape.map((_, i) => i)
  const i = normalizeAxis("transpose", x.shape, a)
  const j = normalizeAxis("transpose", x.shape, b)
  ;[perm[i], perm[j]] = [perm[j], perm[i]]
  return permute(x, perm)
}

/** Broadcast to `shape` as a strided view (NumPy rules; new leading dims allowed). */
export function expand(x: Tensor, shape: Shape): Tensor {
  return tidy(() => {
    const r = broadcastTo("expand", x, shape)
    return r === x ? reshape(x, x.shape) : r
  })
}

/** x[starts[d] : ends[d]] along every dim (step 1; negative indices count from the end). A view. */
export function slice(x: Tensor, starts: readonly number[], ends: readonly number[]): Tensor {
  if (starts.length !== x.rank || ends.length !== x.rank) throw shapeError("slice", [x.shape], `needs ${x.rank} starts and ends, got ${starts.length} and ${ends.length}`)
  const s = starts.map((v, i) => (v < 0 ? v + x.shape[i] : v))
  const e = ends.map((v, i) => (v < 0 ? v + x.shape[i] : v))
  s.forEach((v, i) => {
    if (v < 0 || v > e[i] || e[i] > x.shape[i]) throw shapeError("slice", [x.shape], `range ${starts[i]}:${ends[i]} is outside dim ${i} of size ${x.shape[i]}`)
  })
  return apply("slice", primitives.slice, [x], { starts: s, ends: e })
}

/** Constant padding: `before[d]` and `after[d]` elements of `value` around every dim. */
export function pad(x: Tensor, before: readonly number[], after: readonly number[], value = 0): Tensor {
  if (before.length !== x.rank || after.length !== x.rank || [...before, ...after].some((p) => p < 0 || !Number.isInteger(p)))
    throw shapeError("pad", [x.shape], `needs ${x.rank} non-negative before/after pads`)
  return apply("pad", primitives.pad, [x], { before: [...before], after: [...after], value })
}

/** A contiguous copy (a free view when x is already contiguous). */
export function contiguous(x: Tensor): Tensor {
  return x.isContiguous ? reshape(x, x.shape) : apply("contiguous", primitives.contiguous, [x], {})
}

/** Join tensors along an axis (built from pad + add, so it differentiates for free). */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new RangeError("concat: needs at least one tensor")
  const a = normalizeAxis("concat", xs[0].shape, axis)
  for (const x of xs)
    if (x.rank !== xs[0].rank || x.shape.some((d, i) => i !== a && d !== xs[0].shape[i]))
      throw shapeError("concat", xs.map((t) => t.shape), `shapes differ outside axis ${a}`)
  const total = xs.reduce((n, x) => n + x.shape[a], 0)
  return tidy(() => {
    let offset = 0
    let acc: Tensor | null = null
    for (const x of xs) {
      const before = x.shape.map((_, i) => (i === a ? offset : 0))
      const after = x.shape.map((d, i) => (i === a ? total - offset - d : 0))
      const p = pad(x, before, after)
      acc = acc === null ? p : add(acc, p)
      offset += x.shape[a]
    }
    return acc!
  })
}

// ---- linear algebra -------------------------------------------------------------------------------------------

/** Batched matrix product with torch.matmul broadcasting over batch dims (both operands rank ≥ 2). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkInputs("matmul", [a, b])
  requireFloat("matmul", a, b)
  if (a.rank < 2 || b.rank < 2) throw shapeError("matmul", [a.shape, b.shape], "operands must have rank ≥ 2")
  const [m, k] = a.shape.slice(-2)
  const [k2, n] = b.shape.slice(-2)
  if (k !== k2) throw shapeError("matmul", [a.shape, b.shape], `inner dimensions differ (${k} vs ${k2})`)
  const batch = broadcastShapes("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2))
  if (batch.length > 4) throw shapeError("matmul", [a.shape, b.shape], "at most 4 batch dims")
  // A stack of row-major A matrices against one B (a linear layer over [batch, T, in]) is one [batch·m, k]
  // product. The forward GEMM is the same (the CPU driver folds it anyway), but recorded this way B's cotangent
  // is one [k, n] product, not a [batch, k, n] stack that the broadcast's vjp then sums (13.5 MiB of temporaries
  // for one SmolLM2 MLP projection at batch 4).
  if (a.rank > 2 && b.rank === 2 && a.isContiguous)
    return tidy(() => reshape(apply("matmul", primitives.matmul, [reshape(a, [-1, k]), b], {}), [...batch, m, n]))
  return tidy(() => apply("matmul", primitives.matmul, [broadcastTo("matmul", a, [...batch, m, k]), broadcastTo("matmul", b, [...batch, k, n])], {}))
}

/** x·Wᵀ (+ bias), with W in Hugging Face's [out_features, in_features] layout. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  return tidy(() => {
    const y = matmul(x, transpose(weight))
    return bias === undefined ? y : add(y, bias)
  })
}

// ---- indexing -------------------------------------------------------------------------------------------------

/** table[index]: index (int32, any shape) → shape index.shape + [D]. */
export function gather(table: Tensor, index: Tensor): Tensor {
  checkInputs("gather", [table, index])
  requireFloat("gather", table)
  if (index.dtype !== "int32") throw dtypeError("gather", [index.dtype], "index must be int32")
  if (table.rank !== 2) throw shapeError("gather", [table.shape, index.shape], "table must be 2-D [V, D]")
  return tidy(() => {
    const flat = contiguous(reshape(index, [index.size]))
    const rows = apply("gather", primitives.gather, [contiguous(table), flat], {})
    return reshape(rows, [...index.shape, table.shape[1]])
  })
}

/** zeros([numRows, D]) with src rows added at index (in order): the adjoint of gather. */
export function scatterAdd(src: Tensor, index: Tensor, numRows: number): Tensor {
  checkInputs("scatterAdd", [src, index])
  requireFloat("scatterAdd", src)
  if (index.dtype !== "int32") throw dtypeError("scatterAdd", [index.dtype], "index must be int32")
  const d = src.shape[src.rank - 1]
  if (src.rank < 1 || src.size / Math.max(d, 1) !== index.size || (d === 0 && src.size !== 0))
    throw shapeError("scatterAdd", [src.shape, index.shape], "src must be index.shape + [D]")
  return tidy(() =>
    apply("scatterAdd", primitives.scatterAdd, [contiguous(reshape(src, [index.size, d])), contiguous(reshape(index, [index.size]))], { numRows }),
  )
}

// ---- fused composites -----------------------------------------------------------------------------------------

/** RMSNorm over the last axis, as Hugging Face's LlamaRMSNorm. */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  checkInputs("rmsNorm", [x, weight])
  requireFloat("rmsNorm", x, weight)
  const d = x.shape[x.rank - 1]
  if (weight.rank !== 1 || weight.shape[0] !== d) throw shapeError("rmsNorm", [x.shape, weight.shape], "weight must be [D] with D the last dim of x")
  return tidy(() => reshape(apply("rmsNorm", composites.rmsNorm, [contiguous(reshape(x, [-1, d])), contiguous(weight)], { eps }), x.shape))
}

/** Rotary position embedding (Hugging Face rotate-half). x: [B, H, T, Dh]; cos, sin: [T, Dh] or [1|B, T, Dh]. */
export function rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  checkInputs("rope", [x, cos, sin])
  requireFloat("rope", x, cos, sin)
  if (x.rank !== 4 || x.shape[3] % 2 !== 0) throw shapeError("rope", [x.shape], "x must be [B, H, T, Dh] with Dh even")
  const [b, , t, dh] = x.shape
  const table = (c: Tensor) => (c.rank === 2 ? reshape(c, [1, ...c.shape]) : c)
  return tidy(() => {
    const c = table(cos)
    const s = table(sin)
    for (const tab of [c, s])
      if (tab.rank !== 3 || (tab.shape[0] !== 1 && tab.shape[0] !== b) || tab.shape[1] !== t || tab.shape[2] !== dh)
        throw shapeError("rope", [x.shape, cos.shape, sin.shape], "cos/sin must be [T, Dh] or [1|B, T, Dh]")
    return apply("rope", composites.rope, [contiguous(x), contiguous(c), contiguous(s)], {})
  })
}

/** silu(gate)·up, the SwiGLU core of Llama's MLP. */
export function siluMul(gate: Tensor, up: Tensor): Tensor {
  checkInputs("siluMul", [gate, up])
  requireFloat("siluMul", gate, up)
  if (!sameShape(gate.shape, up.shape)) throw shapeError("siluMul", [gate.shape, up.shape], "gate and up must have the same shape")
  return tidy(() => apply("siluMul", composites.siluMul, [contiguous(gate), contiguous(up)], {}))
}

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  requireFloat("softmax", x)
  if (x.rank === 0) throw shapeError("softmax", [x.shape], "needs rank ≥ 1")
  return tidy(() => reshape(apply("softmax", composites.softmax, [contiguous(reshape(x, [-1, x.shape[x.rank - 1]]))], {}), x.shape))
}

/** log-softmax over the last axis (x − max − log Σ exp(x − max)). */
export function logSoftmax(x: Tensor): Tensor {
  requireFloat("logSoftmax", x)
  return tidy(() => {
    const shifted = sub(x, noGradConst(max(x, -1, true)))
    return sub(shifted, log(sum(exp(shifted), -1, true)))
  })
}

/** The max is a constant shift (it cancels in log-softmax), so no gradient needs to flow through it. */
function noGradConst(t: Tensor): Tensor {
  return t.detach()
}

export interface CrossEntropyOptions {
  readonly ignoreIndex?: number
  /** "mean" over non-ignored targets (torch's default), "sum", or "none" (per position). */
  readonly reduction?: "mean" | "sum" | "none"
}

/** Cross-entropy of logits [..., V] against int32 targets [...], as torch.nn.functional.cross_entropy. */
export function softmaxCrossEntropy(logits: Tensor, target: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const { ignoreIndex = -100, reduction = "mean" } = options
  checkInputs("softmaxCrossEntropy", [logits, target])
  requireFloat("softmaxCrossEntropy", logits)
  if (target.dtype !== "int32") throw dtypeError("softmaxCrossEntropy", [target.dtype], "targets must be int32")
  const v = logits.shape[logits.rank - 1]
  if (!sameShape(logits.shape.slice(0, -1), target.shape))
    throw shapeError("softmaxCrossEntropy", [logits.shape, target.shape], "targets must have the logits' shape without the class dim")
  return tidy(() => {
    const flatTarget = contiguous(reshape(target, [target.size]))
    const perRow = apply("crossEntropy", composites.crossEntropy, [contiguous(reshape(logits, [-1, v])), flatTarget], { ignoreIndex })
    if (reduction === "none") return reshape(perRow, target.shape)
    const total = sum(perRow)
    if (reduction === "sum") return total
    const counted = sum(cast(logicalNot(eq(flatTarget, ignoreIndex)), "float32"))
    return div(total, counted)
  })
}

function logicalNot(b: Tensor): Tensor {
  return eq(cast(b, "int32"), 0)
}

export interface AttentionOptions {
  readonly causal?: boolean
  /** Sliding window (Mistral): query i sees keys j with i − window < j ≤ i. 0 = unlimited. */
  readonly window?: number
  /** Default 1/√D. */
  readonly scale?: number
  /** [B, Tk] bool: false marks padding keys. */
  readonly keyMask?: Tensor
}

/**
 * Scaled dot-product attention with grouped-query heads. q: [B, Hq, T, D]; k, v: [B, Hkv, Tk, D] with Hkv
 * dividing Hq; Tk ≥ T (a KV cache: the T queries are the last T positions). Returns [B, Hq, T, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const inputs = options.keyMask ? [q, k, v, options.keyMask] : [q, k, v]
  checkInputs("attention", inputs)
  requireFloat("attention", q, k, v)
  if (q.rank !== 4 || k.rank !== 4 || !sameShape(k.shape, v.shape)) throw shapeError("attention", [q.shape, k.shape, v.shape], "q, k, v must be [B, H, T, D] with k and v alike")
  const [b, hq, t, d] = q.shape
  const [bk, hkv, tk, dk] = k.shape
  if (bk !== b || dk !== d || hkv === 0 || hq % hkv !== 0 || tk < t)
    throw shapeError("attention", [q.shape, k.shape], "batch and head dims must agree, Hkv must divide Hq, and Tk ≥ T")
  const mask = options.keyMask
  if (mask !== undefined && (mask.dtype !== "bool" || !sameShape(mask.shape, [b, tk])))
    throw shapeError("attention", [mask.shape], `keyMask must be bool [${b}, ${tk}]`)
  const window = options.window ?? 0
  if (!Number.isInteger(window) || window < 0) throw new RangeError(`attention: window must be a non-negative integer, got ${window}`)
  return tidy(() =>
    apply(
      "attention",
      composites.attention,
      [contiguous(q), contiguous(k), contiguous(v), ...(mask ? [contiguous(mask)] : [])],
      { causal: options.causal ?? true, window, scale: options.scale ?? 1 / Math.sqrt(d), hasKeyMask: mask !== undefined },
    ),
  )
}
