import type { KernelKind, KernelOf } from "../../backend.js"
import type { Binding, Grid, ParamList } from "./wgsl-helpers.js"

/**
 * How one kernel kind becomes WGSL and a dispatch. Each family file exports a `KernelTable` for its kinds and
 * kernels.ts joins them into one table typed `{ [K in KernelKind]: … }`, so a missing kind is a type error.
 *
 * The split between static and dynamic matters: `shader` is called once per (spec, variant) and may only look
 * at the static part of the call (kind, op, dtypes, ranks, boolean flags, whether an optional view is present);
 * `bindings`, `params` and `grid` run on every dispatch. `bindings` and `params` are used on both sides — their
 * names, order and types must therefore depend on the static part only, their views and values on the call.
 */
export interface KernelGenerator<K extends KernelKind> {
  /** Storage buffers in binding order (binding 0 is the uniform block). */
  bindings(call: KernelOf<K>): Binding[]
  /** Dynamic scalars (shapes, strides, offsets, constants) in uniform order. */
  params(call: KernelOf<K>, params: ParamList): void
  /** A shape-dependent choice between compiled variants (e.g. a thread vs a workgroup per output). */
  variant?(call: KernelOf<K>): string
  /** The WGSL for this spec and variant. */
  shader(call: KernelOf<K>, variant: string): ShaderParts
  /** Workgroups to launch. */
  grid(call: KernelOf<K>, variant: string): Grid
}

/**
 * The kernel-specific parts of a shader. The module around them declares the uniform block, the bindings and
 * `main`, whose body starts with the parameter `let`s and these values:
 *   wid, nwg, lid: vec3<u32> (workgroup id, number of workgroups, local id), li: u32 (local index),
 *   wg: u32 = wid.y * nwg.x + wid.x (flat workgroup index over a folded 2-D grid),
 *   gi: u32 = wg * threads-per-workgroup + li (flat invocation index).
 */
export interface ShaderParts {
  readonly workgroupSize: readonly [number, number, number]
  /** Module-scope declarations: helper functions, `var<workgroup>` arrays, constants. */
  readonly decls?: string
  readonly body: string
}

export type KernelTable<K extends KernelKind> = { readonly [P in K]: KernelGenerator<P> }

/** Threads per workgroup for one-thread-per-element kernels. */
export const ELEMENTWISE_THREADS = 256
