import type { BinaryOp, KernelOf, UnaryOp, View } from "../../backend.js"
import type { DType } from "../../dtype.js"
import { contiguousStrides, isContiguous } from "../../shape.js"
import { elementCount, type Elements, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forEachRow, planRows } from "./strided.js"
import { forCalls, forElements } from "./wasm-call.js"

/**
 * Element-wise kernels: unary, binary, where, copy, fill, pad. Inputs may be arbitrary strided views; outputs
 * are contiguous. Float32 neg/reciprocal/sqrt/exp, add/mul/max and cmplt/cmpeq, and `where` (any dtype, bit-exact)
 * over rows that are contiguous or broadcast (stride 0) run as WASM SIMD (wasm-elementwise.ts; exp within 2 ulp,
 * the others exact f32 results), split over the threads when large; copies of transposed views use a tiled WASM
 * 2-D copy. The JS paths (strided rows, int32, bool, log/sin/cos) compute in doubles and round once
 * when stored into a Float32Array, which for a single add/mul/neg is exactly the float32 result.
 */

/** Unary ops with a WASM kernel (same name), and their per-element cost weight. */
const WASM_UNARY: Partial<Record<UnaryOp, number>> = { neg: 1, reciprocal: 2, sqrt: 2, exp: 4 }
/** Rows shorter than this go through JS (a WASM call per row costs more than the row). */
const MIN_WASM_ROW = 16

/** Copy 32-bit words between two strided layouts of the same shape (bit-exact for every dtype). */
export function copyWords(
  shape: readonly number[],
  src: Uint32Array,
  srcStrides: readonly number[],
  srcOffset: number,
  dst: Uint32Array,
  dstStrides: readonly number[],
  dstOffset: number,
): void {
  const loop = planRows(shape, [srcStrides, dstStrides])
  const n = loop.rowLength
  const [ss, ds] = loop.rowStrides
  forEachRow(loop, [srcOffset, dstOffset], ([si, di]) => {
    if (ss === 1 && ds === 1 && n >= 32) {
      dst.set(src.subarray(si, si + n), di)
      return
    }
    for (let j = 0; j < n; j++, si += ss, di += ds) dst[di] = src[si]
  })
}

/**
 * x materialised into the contiguous `out`. A source whose rows are strided (a transpose) is copied by the WASM
 * tiled 2-D copy, one call per 2-D slab of its two innermost (merged) dims; anything else by `copyWords`.
 */
function copyView(x: View, out: View, mem: Memory): void {
  const outStrides = contiguousStrides(out.shape)
  const loop = planRows(x.shape, [x.strides, outStrides])
  const n = loop.rowLength
  const [ss, ds] = loop.rowStrides
  const outer = loop.outerShape.length
  const total = elementCount(x.shape)
  if (ss !== 1 && ds === 1 && n > 1 && outer >= 1 && total >= 1024 && loop.outerStrides[1][outer - 1] === n) {
    // Rows of the 2-D slab: the innermost outer dim (whose output stride is n, dst being contiguous).
    const rows = loop.outerShape[outer - 1]
    const srcRow = loop.outerStrides[0][outer - 1]
    const slabLoop = { ...loop, rowLength: rows, rowStrides: [srcRow, n], outerShape: loop.outerShape.slice(0, -1), outerStrides: loop.outerStrides.map((s) => s.slice(0, -1)) }
    const xBase = mem.addr(x) - 4 * x.offset
    const oBase = mem.addr(out) - 4 * out.offset
    const slabs: number[] = []
    forEachRow({ ...slabLoop, rowLength: 1, rowStrides: [0, 0] }, [x.offset, out.offset], ([xi, oi]) => {
      slabs.push(xBase + 4 * xi, oBase + 4 * oi)
    })
    forCalls("copy_2d", slabs.length / 2, total, (i) => [slabs[2 * i + 1], slabs[2 * i], 0, rows, n, srcRow, ss])
    return
  }
  copyWords(x.shape, mem.words(x), x.strides, x.offset, mem.words(out), outStrides, out.offset)
}

/** A number converted to what storing it in a `dtype` buffer means (float→int truncates, →bool is != 0). */
export function castScalar(value: number, dtype: DType): number {
  switch (dtype) {
    case "float32":
      return Math.fround(value)
    case "int32":
      return Math.trunc(value) | 0
    case "bool":
      return value !== 0 ? 1 : 0
  }
}

function cast(x: View, out: View, mem: Memory): void {
  if (x.dtype === out.dtype) return copyView(x, out, mem)
  const src = mem.elements(x)
  const dst = mem.elements(out)
  // Three conversions cover every dtype pair; choose once, not per element.
  const mode = out.dtype === "bool" ? "truthy" : x.dtype === "float32" && out.dtype === "int32" ? "truncate" : "assign"
  const loop = planRows(x.shape, [x.strides, contiguousStrides(out.shape)])
  const n = loop.rowLength
  const [xs, os] = loop.rowStrides
  forEachRow(loop, [x.offset, out.offset], ([xi, oi]) => {
    if (mode === "truthy") for (let j = 0; j < n; j++, xi += xs, oi += os) dst[oi] = src[xi] !== 0 ? 1 : 0
    // `| 0` wraps to int32 the way ToInt32 does (NaN and ±Infinity become 0).
    else if (mode === "truncate") for (let j = 0; j < n; j++, xi += xs, oi += os) dst[oi] = Math.trunc(src[xi]) | 0
    // int/bool → float rounds on store; bool → int is already 0/1.
    else for (let j = 0; j < n; j++, xi += xs, oi += os) dst[oi] = src[xi]
  })
}

/** dst[d + i] = op(src[s + i]) for i < n; one tight loop per op (src may be dst, for in-place use). */
function mapRange(op: Exclude<UnaryOp, "cast">, src: Float32Array, s: number, dst: Float32Array, d: number, n: number): void {
  const shift = s - d
  const end = d + n
  switch (op) {
    case "neg":
      for (let i = d; i < end; i++) dst[i] = -src[i + shift]
      return
    case "reciprocal":
      for (let i = d; i < end; i++) dst[i] = 1 / src[i + shift]
      return
    case "exp":
      for (let i = d; i < end; i++) dst[i] = Math.exp(src[i + shift])
      return
    case "log":
      for (let i = d; i < end; i++) dst[i] = Math.log(src[i + shift])
      return
    case "sqrt":
      for (let i = d; i < end; i++) dst[i] = Math.sqrt(src[i + shift])
      return
    case "sin":
      for (let i = d; i < end; i++) dst[i] = Math.sin(src[i + shift])
      return
    case "cos":
      for (let i = d; i < end; i++) dst[i] = Math.cos(src[i + shift])
      return
  }
}

function unary({ op, x, out }: KernelOf<"unary">, mem: Memory): void {
  if (op === "cast") return cast(x, out, mem)
  const n = elementCount(out.shape)
  const cost = WASM_UNARY[op]
  if (cost !== undefined && n >= MIN_WASM_ROW) {
    // Strided: gather into the output first, then map it in place.
    const contiguous = isContiguous(x.shape, x.strides)
    if (!contiguous) copyView(x, out, mem)
    const src = contiguous ? mem.addr(x) : mem.addr(out)
    const dst = mem.addr(out)
    forElements(op, n, cost, (start, count) => [dst + 4 * start, src + 4 * start, count])
    return
  }
  const Y = mem.f32(out)
  if (isContiguous(x.shape, x.strides)) return mapRange(op, mem.f32(x), x.offset, Y, out.offset, n)
  // Strided: gather into the output first, then map in place. Two tight loops beat one loop that pays for
  // strided indexing and an op dispatch per element.
  copyView(x, out, mem)
  mapRange(op, Y, out.offset, Y, out.offset, n)
}

/** Float32 add/mul/max through WASM when every row is contiguous or broadcast in each input; false if not. */
function binaryWasm(op: BinaryOp, a: View, b: View, out: View, mem: Memory): boolean {
  const arithmetic = out.dtype === "float32" && (op === "add" || op === "mul" || op === "max")
  const comparison = a.dtype === "float32" && (op === "cmplt" || op === "cmpeq")
  if (!arithmetic && !comparison) return false
  const loop = planRows(out.shape, [a.strides, b.strides, contiguousStrides(out.shape)])
  const n = loop.rowLength
  const [as, bs, os] = loop.rowStrides
  if (n < MIN_WASM_ROW || os !== 1 || (as !== 0 && as !== 1) || (bs !== 0 && bs !== 1) || (as === 0 && bs === 0)) return false
  const name = `${op}_${as === 1 ? "v" : "s"}${bs === 1 ? "v" : "s"}`
  const aBase = mem.addr(a) - 4 * a.offset
  const bBase = mem.addr(b) - 4 * b.offset
  const oBase = mem.addr(out) - 4 * out.offset
  const total = elementCount(out.shape)
  if (loop.outerShape.length === 0) {
    // One contiguous run: split it into chunks.
    forElements(name, n, 1, (start, count) => [oBase + 4 * (out.offset + start), aBase + 4 * (a.offset + as * start), bBase + 4 * (b.offset + bs * start), count])
    return true
  }
  const rows: number[] = []
  forEachRow(loop, [a.offset, b.offset, out.offset], ([ai, bi, oi]) => {
    rows.push(oBase + 4 * oi, aBase + 4 * ai, bBase + 4 * bi)
  })
  forCalls(name, rows.length / 3, total, (i) => [rows[3 * i], rows[3 * i + 1], rows[3 * i + 2], n])
  return true
}

function binaryRows(op: BinaryOp, a: View, b: View, out: View, mem: Memory): void {
  if (binaryWasm(op, a, b, out, mem)) return
  const av = mem.elements(a)
  const bv = mem.elements(b)
  const y = mem.elements(out)
  const intMul = op === "mul" && out.dtype === "int32"
  const loop = planRows(out.shape, [a.strides, b.strides, contiguousStrides(out.shape)])
  const n = loop.rowLength
  const [as, bs, os] = loop.rowStrides
  forEachRow(loop, [a.offset, b.offset, out.offset], ([ai, bi, oi]) => {
    switch (op) {
      case "add":
        // int32: the double sum of two int32s is exact and the Int32Array store wraps it mod 2^32.
        for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = av[ai] + bv[bi]
        return
      case "mul":
        // int32: a double product can exceed 2^53 and lose low bits, so wrap with Math.imul instead.
        if (intMul) for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = Math.imul(av[ai], bv[bi])
        else for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = av[ai] * bv[bi]
        return
      case "max":
        for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = Math.max(av[ai], bv[bi])
        return
      case "cmplt":
        for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = av[ai] < bv[bi] ? 1 : 0
        return
      case "cmpeq":
        for (let j = 0; j < n; j++, ai += as, bi += bs, oi += os) y[oi] = av[ai] === bv[bi] ? 1 : 0
        return
    }
  })
}

/** where through WASM (bit-exact word selects) when cond's rows are contiguous and a, b's contiguous or broadcast. */
function whereWasm({ cond, a, b, out }: KernelOf<"where">, mem: Memory): boolean {
  const loop = planRows(out.shape, [cond.strides, a.strides, b.strides, contiguousStrides(out.shape)])
  const n = loop.rowLength
  const [cs, as, bs, os] = loop.rowStrides
  if (n < MIN_WASM_ROW || os !== 1 || cs !== 1 || (as !== 0 && as !== 1) || (bs !== 0 && bs !== 1)) return false
  const name = `where_v${as === 1 ? "v" : "s"}${bs === 1 ? "v" : "s"}`
  const bases = [cond, a, b, out].map((v) => mem.addr(v) - 4 * v.offset)
  const [cBase, aBase, bBase, oBase] = bases
  const total = elementCount(out.shape)
  if (loop.outerShape.length === 0) {
    forElements(name, n, 1, (start, count) => [
      oBase + 4 * (out.offset + start),
      cBase + 4 * (cond.offset + start),
      aBase + 4 * (a.offset + as * start),
      bBase + 4 * (b.offset + bs * start),
      count,
    ])
    return true
  }
  const rows: number[] = []
  forEachRow(loop, [cond.offset, a.offset, b.offset, out.offset], ([ci, ai, bi, oi]) => {
    rows.push(oBase + 4 * oi, cBase + 4 * ci, aBase + 4 * ai, bBase + 4 * bi)
  })
  forCalls(name, rows.length / 4, total, (i) => [rows[4 * i], rows[4 * i + 1], rows[4 * i + 2], rows[4 * i + 3], n])
  return true
}

function where(call: KernelOf<"where">, mem: Memory): void {
  if (whereWasm(call, mem)) return
  const { cond, a, b, out } = call
  const c = mem.bool(cond)
  // Words, not values: `where` selects, it must not touch the bits (NaN payloads, -0).
  const av = mem.words(a)
  const bv = mem.words(b)
  const y = mem.words(out)
  const loop = planRows(out.shape, [cond.strides, a.strides, b.strides, contiguousStrides(out.shape)])
  const n = loop.rowLength
  const [cs, as, bs, os] = loop.rowStrides
  forEachRow(loop, [cond.offset, a.offset, b.offset, out.offset], ([ci, ai, bi, oi]) => {
    for (let j = 0; j < n; j++, ci += cs, ai += as, bi += bs, oi += os) y[oi] = c[ci] !== 0 ? av[ai] : bv[bi]
  })
}

function fillElements(out: View, value: number, mem: Memory): void {
  const y: Elements = mem.elements(out)
  y.fill(castScalar(value, out.dtype), out.offset, out.offset + elementCount(out.shape))
}

function pad({ x, before, value, out }: KernelOf<"pad">, mem: Memory): void {
  // Fill everything, then copy x into the interior: the interior is just a strided window of `out`.
  fillElements(out, value, mem)
  const outStrides = contiguousStrides(out.shape)
  let interior = out.offset
  for (let d = 0; d < before.length; d++) interior += before[d] * outStrides[d]
  copyWords(x.shape, mem.words(x), x.strides, x.offset, mem.words(out), outStrides, interior)
}

export const elementwiseKernels = {
  unary,
  binary: ({ op, a, b, out }, mem) => binaryRows(op, a, b, out, mem),
  where,
  copy: ({ x, out }, mem) => copyView(x, out, mem),
  fill: ({ value, out }, mem) => fillElements(out, value, mem),
  pad,
} satisfies KernelTable<"unary" | "binary" | "where" | "copy" | "fill" | "pad">
