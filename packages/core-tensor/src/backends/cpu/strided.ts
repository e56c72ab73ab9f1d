import type { View } from "../../backend.js"

/**
 * N-d iteration over strided operands without a div/mod per element.
 *
 * A loop is planned once per dispatch: size-1 dims are dropped and adjacent dims that every operand walks
 * contiguously relative to each other are merged, so a contiguous tensor becomes one long row and a transposed
 * one two dims. The last remaining dim is the "row", which kernels walk with a tight inner loop; the outer
 * dims are walked by an odometer that updates each operand's offset incrementally.
 */
export interface RowLoop {
  /** Elements per row (0 when the iteration space is empty). */
  readonly rowLength: number
  /** Per operand: its stride along the row. */
  readonly rowStrides: readonly number[]
  /** Outer dims, outermost first. */
  readonly outerShape: readonly number[]
  /** Per operand, per outer dim: its stride. */
  readonly outerStrides: readonly (readonly number[])[]
}

/** Plan a loop over `shape`, with one strides array (same rank as `shape`) per operand. */
export function planRows(shape: readonly number[], operandStrides: readonly (readonly number[])[]): RowLoop {
  const operands = operandStrides.length
  if (shape.some((d) => d === 0)) {
    return { rowLength: 0, rowStrides: new Array(operands).fill(0), outerShape: [], outerStrides: operandStrides.map(() => []) }
  }
  // Merge from the innermost dim outwards; `dims` is built innermost first.
  const sizes: number[] = []
  const strides: number[][] = []
  for (let d = shape.length - 1; d >= 0; d--) {
    const size = shape[d]
    if (size === 1) continue
    const last = sizes.length - 1
    if (last >= 0 && operandStrides.every((s, k) => s[d] === strides[last][k] * sizes[last])) {
      sizes[last] *= size
      continue
    }
    sizes.push(size)
    strides.push(operandStrides.map((s) => s[d]))
  }
  if (sizes.length === 0) {
    // A scalar (or all-ones shape): one row of one element.
    return { rowLength: 1, rowStrides: new Array(operands).fill(0), outerShape: [], outerStrides: operandStrides.map(() => []) }
  }
  sizes.reverse()
  strides.reverse()
  const outer = sizes.length - 1
  return {
    rowLength: sizes[outer],
    rowStrides: strides[outer],
    outerShape: sizes.slice(0, outer),
    outerStrides: operandStrides.map((_, k) => strides.slice(0, outer).map((s) => s[k])),
  }
}

/**
 * Call `visit(offsets)` once per row, in row-major order, with each operand's offset at the row's start.
 * `offsets` is a scratch array owned by the walker: read it, don't keep it.
 */
export function forEachRow(loop: RowLoop, start: readonly number[], visit: (offsets: readonly number[]) => void): void {
  if (loop.rowLength === 0) return
  const operands = start.length
  const offsets = start.slice()
  const rank = loop.outerShape.length
  if (rank === 0) {
    visit(offsets)
    return
  }
  const counter = new Array<number>(rank).fill(0)
  for (;;) {
    visit(offsets)
    // Odometer: bump the innermost outer dim; on wrap-around, rewind it and carry outwards.
    let d = rank - 1
    for (; d >= 0; d--) {
      const size = loop.outerShape[d]
      if (++counter[d] < size) {
        for (let k = 0; k < operands; k++) offsets[k] += loop.outerStrides[k][d]
        break
      }
      counter[d] = 0
      for (let k = 0; k < operands; k++) offsets[k] -= loop.outerStrides[k][d] * (size - 1)
    }
    if (d < 0) return
  }
}

/** Element offset of batch number `batch` (row-major over the batch dims) in a strided view. */
export function batchOffset(view: View, batch: number, batchRank: number): number {
  let offset = 0
  for (let d = batchRank - 1; d >= 0; d--) {
    const size = view.shape[d]
    offset += (batch % size) * view.strides[d]
    batch = Math.floor(batch / size)
  }
  return offset
}

