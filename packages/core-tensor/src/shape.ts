import { shapeError } from "./errors.js"

export type Shape = readonly number[]

export const sizeOf = (shape: Shape): number => shape.reduce((a, b) => a * b, 1)

/** Row-major strides, in elements. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length)
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s
    s *= shape[i]
  }
  return strides
}

export const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i])

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length)
  const out = new Array<number>(n)
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1
    const db = b[b.length - n + i] ?? 1
    if (da !== db && da !== 1 && db !== 1) throw shapeError(op, [a, b], `cannot broadcast dim ${i}: ${da} vs ${db}`)
    out[i] = da === 1 ? db : da
  }
  return out
}

export function normalizeAxis(op: string, shape: Shape, axis: number): number {
  const r = shape.length
  const a = axis < 0 ? axis + r : axis
  if (a < 0 || a >= r) throw shapeError(op, [shape], `axis ${axis} out of range for rank ${r}`)
  return a
}

export function validateShape(op: string, shape: Shape): void {
  for (const d of shape)
    if (!Number.isInteger(d) || d < 0) throw shapeError(op, [shape], `dimensions must be non-negative integers`)
}

export const isContiguous = (shape: Shape, strides: readonly number[]) => {
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== s) return false
    s *= shape[i]
  }
  return true
}
