import type { KernelKind, KernelOf, View } from "../../backend.js"
import { ELEMENTWISE_THREADS, type KernelGenerator } from "./kernel.js"
import { input, output, type ParamList, sizeOfShape, stridedIndex, threadGrid, unravel } from "./wgsl-helpers.js"

/**
 * A generator for kernels with one thread per output element. The iteration space is the shape of the first
 * output; every input has that shape too (broadcasting is stride 0) and is read through its own strides, so
 * transposed, broadcast and offset views need no copy. Outputs are contiguous and written at `off + gi`.
 *
 * The body sees, for every operand `name`: `name_buf` (the binding) and `name_i` (this element's index).
 */
export interface PointwiseSpec<K extends KernelKind> {
  inputs(call: KernelOf<K>): ReadonlyArray<readonly [string, View]>
  /** Written (read_write, so in-place optimizer state can be read too). The first one sets the shape. */
  outputs(call: KernelOf<K>): ReadonlyArray<readonly [string, View]>
  /** Bind every operand as array<u32>: for kernels that move bits without interpreting them. */
  readonly words?: boolean
  /** Extra scalars, appended after the shape and view parameters. */
  extraParams?(call: KernelOf<K>, params: ParamList): void
  /** Unravel coordinates `c0 …` even without inputs (kernels that index something by hand). */
  readonly coords?: boolean
  readonly decls?: string
  body(call: KernelOf<K>): string
}

export function pointwise<K extends KernelKind>(spec: PointwiseSpec<K>): KernelGenerator<K> {
  const shapeOf = (call: KernelOf<K>) => spec.outputs(call)[0][1].shape
  const words = spec.words ?? false
  return {
    bindings: (call) => [
      ...spec.inputs(call).map(([name, view]) => input(name, view, words)),
      ...spec.outputs(call).map(([name, view]) => output(name, view, words)),
    ],
    params: (call, p) => {
      const shape = shapeOf(call)
      p.u32("n", sizeOfShape(shape)).shape("out", shape)
      for (const [name, view] of spec.inputs(call)) p.view(name, view)
      for (const [name, view] of spec.outputs(call)) p.u32(`${name}_off`, view.offset)
      spec.extraParams?.(call, p)
    },
    shader: (call) => {
      const rank = shapeOf(call).length
      const inputs = spec.inputs(call)
      // Coordinates are only needed when some input is indexed through strides.
      const lines = ["  if (gi >= n) { return; }", inputs.length > 0 || spec.coords ? unravel("out", rank, "gi") : ""]
      for (const [name] of inputs) lines.push(`  let ${name}_i = ${stridedIndex(name, rank)};`)
      for (const [name] of spec.outputs(call)) lines.push(`  let ${name}_i = ${name}_off + gi;`)
      lines.push(spec.body(call))
      return { workgroupSize: [ELEMENTWISE_THREADS, 1, 1], decls: spec.decls, body: lines.join("\n") }
    },
    grid: (call) => threadGrid(sizeOfShape(shapeOf(call)), ELEMENTWISE_THREADS),
  }
}
