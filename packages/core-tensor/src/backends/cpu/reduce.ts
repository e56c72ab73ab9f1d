import type { KernelOf } from "../../backend.js"
import { contiguousStrides, isContiguous } from "../../shape.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forEachRow, planRows } from "./strided.js"
import { forElements, forRows } from "./wasm-call.js"

/** Identity of each reduction: what an empty axis reduces to. */
const INT32_MIN = -2147483648
const identityOf = (op: "sum" | "max", dtype: string) => (op === "sum" ? 0 : dtype === "int32" ? INT32_MIN : -Infinity)

/**
 * Reduce x along one axis. Float sums accumulate in doubles and round once on store (more accurate than an f32
 * running sum; the WebGPU backend's tree sum differs in the last bits). Int32 sums wrap mod 2^32 as int32
 * arithmetic does.
 *
 * The walk goes over `out` (x's shape with the axis squeezed to 1). Per output row we either reduce one output
 * element at a time (when the axis is the tighter stride, e.g. a last-axis reduce) or sweep the axis in the
 * outer loop and a whole output row in the inner one (when the axis is the looser stride, e.g. reducing dim 0
 * of a row-major matrix), so that the innermost loop always walks the smaller stride.
 */
function reduce(call: KernelOf<"reduce">, mem: Memory): void {
  if (!reduceWasm(call, mem)) reduceJs(call, mem)
}

/**
 * Float32 reductions of a contiguous x through WASM: x is [outer, len, inner] around the axis; inner = 1 is a
 * row reduction (row_sum / row_max over `outer` rows), else a column reduction (col_sum / col_max). Sums
 * accumulate in f64 lanes, like the JS path. Returns false when the JS path must do it.
 */
function reduceWasm({ op, axis, x, out }: KernelOf<"reduce">, mem: Memory): boolean {
  if (x.dtype !== "float32" || !isContiguous(x.shape, x.strides)) return false
  const len = x.shape[axis]
  const outer = elementCount(x.shape.slice(0, axis))
  const inner = elementCount(x.shape.slice(axis + 1))
  const total = outer * len * inner
  if (len === 0 || total < 64) return false
  const xa = mem.addr(x)
  const oa = mem.addr(out)
  if (inner === 1) {
    forRows(op === "sum" ? "row_sum" : "row_max", outer, len, (r0, r1) => [oa + 4 * r0, xa + 4 * r0 * len, r1 - r0, len])
    return true
  }
  if (inner < 4) return false
  const name = op === "sum" ? "col_sum" : "col_max"
  if (outer >= 4) forRows(name, outer, len * inner, (r0, r1) => [oa + 4 * r0 * inner, xa + 4 * r0 * len * inner, r1 - r0, len, inner, inner])
  else
    for (let o = 0; o < outer; o++)
      forElements(name, inner, len, (start, count) => [oa + 4 * (o * inner + start), xa + 4 * (o * len * inner + start), 1, len, count, inner])
  return true
}

function reduceJs({ op, axis, x, out }: KernelOf<"reduce">, mem: Memory): void {
  const src = mem.elements(x)
  const dst = mem.elements(out)
  const isInt = x.dtype === "int32"
  const identity = identityOf(op, x.dtype)
  const axisLength = x.shape[axis]
  const axisStride = x.strides[axis]
  const outShape = x.shape.map((d, i) => (i === axis ? 1 : d))
  const loop = planRows(outShape, [x.strides, contiguousStrides(outShape)])
  const n = loop.rowLength
  const [xs, os] = loop.rowStrides
  const axisInner = Math.abs(axisStride) <= Math.abs(xs) || n === 1
  const acc = axisInner ? null : new Float64Array(n)

  forEachRow(loop, [x.offset, out.offset], ([xi, oi]) => {
    if (acc === null) {
      for (let j = 0; j < n; j++, xi += xs, oi += os) {
        let a = identity
        let k = xi
        if (op === "max") for (let t = 0; t < axisLength; t++, k += axisStride) a = Math.max(a, src[k])
        else if (isInt) for (let t = 0; t < axisLength; t++, k += axisStride) a = (a + src[k]) | 0
        else for (let t = 0; t < axisLength; t++, k += axisStride) a += src[k]
        dst[oi] = a
      }
      return
    }
    acc.fill(identity)
    for (let t = 0; t < axisLength; t++) {
      let k = xi + t * axisStride
      if (op === "max") for (let j = 0; j < n; j++, k += xs) acc[j] = Math.max(acc[j], src[k])
      else if (isInt) for (let j = 0; j < n; j++, k += xs) acc[j] = (acc[j] + src[k]) | 0
      else for (let j = 0; j < n; j++, k += xs) acc[j] += src[k]
    }
    for (let j = 0; j < n; j++, oi += os) dst[oi] = acc[j]
  })
}

export const reduceKernels = { reduce } satisfies KernelTable<"reduce">
