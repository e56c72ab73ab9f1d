import type { KernelOf } from "../../backend.js"
import { ELEMENTWISE_THREADS, type KernelTable } from "./kernel.js"
import {
  flatGrid,
  I32_MIN,
  input,
  NEG_INF,
  output,
  ROW_THREADS,
  sizeOfShape,
  stridedIndex,
  threadGrid,
  unravel,
  workgroupReductions,
} from "./wgsl-helpers.js"

/**
 * Reduce along one axis. The axis is a number, hence dynamic (not in the spec key): the shader sees x through
 * the output's shape (x.shape with the axis squeezed to 1, so that coordinate is always 0) plus the axis length
 * and stride as separate parameters. Two variants:
 *  - "thread": one thread per output element walks the axis — right for many short reductions;
 *  - "group":  one workgroup per output element, threads stride the axis and combine in shared memory —
 *              right for a few long reductions (a full sum of 20M elements is one output).
 */

type ReduceCall = KernelOf<"reduce">

const outShapeOf = ({ axis, x }: ReduceCall) => x.shape.map((d, i) => (i === axis ? 1 : d))

function chooseVariant(call: ReduceCall): string {
  const length = call.x.shape[call.axis]
  const outputs = sizeOfShape(outShapeOf(call))
  // A workgroup per output wastes threads when the axis is short; a thread per output starves the device when
  // there are few outputs. Long axes always benefit from the workgroup's parallel, tree-shaped sum.
  return length >= 2048 || (length >= 128 && outputs < 4096) ? "group" : "thread"
}

function shader(call: ReduceCall, variant: string) {
  const { op, x } = call
  const rank = x.shape.length
  const type = x.dtype === "int32" ? "i32" : "f32"
  const identity = op === "sum" ? (type === "f32" ? "0.0" : "0i") : type === "f32" ? NEG_INF : I32_MIN
  const combine = op === "sum" ? "acc + v" : "max(acc, v)"
  const outIndex = variant === "group" ? "wg" : "gi"
  const walk = variant === "group" ? "var t = li; t < red_len; t = t + " + ROW_THREADS + "u" : "var t = 0u; t < red_len; t = t + 1u"
  const lines = [
    `  if (${outIndex} >= n) { return; }`,
    unravel("out", rank, outIndex),
    `  let base = ${stridedIndex("x", rank)};`,
    `  var acc = ${identity};`,
    `  for (${walk}) {`,
    `    let v = x_buf[base + t * red_st];`,
    `    acc = ${combine};`,
    `  }`,
  ]
  if (variant === "group") {
    lines.push(`  let total = ${op === "sum" ? "wg_sum" : "wg_max"}(acc, li);`)
    lines.push(`  if (li == 0u) { out_buf[out_off + wg] = total; }`)
    return { workgroupSize: [ROW_THREADS, 1, 1] as const, decls: workgroupReductions(type), body: lines.join("\n") }
  }
  lines.push(`  out_buf[out_off + gi] = acc;`)
  return { workgroupSize: [ELEMENTWISE_THREADS, 1, 1] as const, body: lines.join("\n") }
}

export const reduceKernels = {
  reduce: {
    bindings: ({ x, out }) => [input("x", x), output("out", out)],
    params: (call, p) => {
      const shape = outShapeOf(call)
      p.u32("n", sizeOfShape(shape)).shape("out", shape).view("x", call.x)
      p.u32("red_len", call.x.shape[call.axis]).u32("red_st", call.x.strides[call.axis]).u32("out_off", call.out.offset)
    },
    variant: chooseVariant,
    shader,
    grid: (call, variant) => {
      const outputs = sizeOfShape(outShapeOf(call))
      return variant === "group" ? flatGrid(outputs) : threadGrid(outputs, ELEMENTWISE_THREADS)
    },
  },
} satisfies KernelTable<"reduce">
