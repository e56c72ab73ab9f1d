import type { BinaryOp, KernelOf, UnaryOp, View } from "../../backend.js"
import type { DType } from "../../dtype.js"
import { contiguousStrides, isContiguous } from "../../shape.js"
import { elementCount, type Elements, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forEachRow, planRows } from "./strided.js"

/**
 * Element-wise kernels: unary, binary, where, copy, fill, pad. Inputs may be arbitrary strided views; outputs
 * are contiguous. Arithmetic happens in JS doubles and is rounded once when stored into a Float32Array, which
 * for a single add/mul/neg is exactly the float32 result (a double holds an f32 product or sum exactly before
 * the one rounding).
 */

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

const copyView = (x: View, out: View, mem: Memory) =>
  copyWords(x.shape, mem.words(x), x.strides, x.offset, mem.words(out), contiguousStrides(out.shape), out.offset)

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
  const Y = mem.f32(out)
  if (isContiguous(x.shape, x.strides)) return mapRange(op, mem.f32(x), x.offset, Y, out.offset, n)
  // Strided: gather into the output first, then map in place. Two tight loops beat one loop that pays for
  // strided indexing and an op dispatch per element.
  copyView(x, out, mem)
  mapRange(op, Y, out.offset, Y, out.offset, n)
}

function binaryRows(op: BinaryOp, a: View, b: View, out: View, mem: Memory): void {
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

function where({ cond, a, b, out }: KernelOf<"where">, mem: Memory): void {
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
