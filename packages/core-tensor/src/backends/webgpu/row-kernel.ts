import type { KernelKind, KernelOf } from "../../backend.js"
import type { KernelGenerator } from "./kernel.js"
import { type Binding, flatGrid, type ParamList, ROW_THREADS, workgroupReductions } from "./wgsl-helpers.js"

/**
 * A generator for kernels that give one workgroup to each row of an [R, C] problem (softmax, rmsNorm,
 * cross-entropy): threads stride along the row, combine with `wg_sum` / `wg_max` from shared memory, then
 * stride again to write. Rows may be long (a 49152-word vocabulary), which a thread per row would crawl through.
 *
 * The body runs after `if (wg >= R) { return; }` with `row = wg`; it may use `li`, `wg_sum`, `wg_max` and
 * `ROW_THREADS` (a WGSL const).
 */
export interface RowSpec<K extends KernelKind> {
  bindings(call: KernelOf<K>): Binding[]
  /** Number of rows. */
  rows(call: KernelOf<K>): number
  /** Scalars after `R`. */
  params(call: KernelOf<K>, params: ParamList): void
  readonly decls?: string
  body(call: KernelOf<K>): string
}

export function rowKernel<K extends KernelKind>(spec: RowSpec<K>): KernelGenerator<K> {
  return {
    bindings: spec.bindings,
    params: (call, p) => {
      p.u32("R", spec.rows(call))
      spec.params(call, p)
    },
    shader: (call) => ({
      workgroupSize: [ROW_THREADS, 1, 1],
      decls: `const ROW_THREADS = ${ROW_THREADS}u;\n${workgroupReductions("f32")}\n${spec.decls ?? ""}`,
      body: `  if (wg >= R) { return; }\n  let row = wg;\n${spec.body(call)}`,
    }),
    grid: (call) => flatGrid(spec.rows(call)),
  }
}

/** `for (var j = li; j < len; j += ROW_THREADS)`: this thread's share of a row. */
export const rowLoop = (index: string, length: string) =>
  `for (var ${index} = li; ${index} < ${length}; ${index} = ${index} + ROW_THREADS)`
