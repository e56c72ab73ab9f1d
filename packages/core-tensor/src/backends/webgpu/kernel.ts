import type { KernelKind, KernelOf, View } from "../../backend.js"
import type { WebGpuTuning } from "./tuning.js"
import { type Binding, type Grid, ParamList } from "./wgsl-helpers.js"

/** What generators may know about the device they compile for: fixed for a backend's lifetime. */
export interface KernelContext {
  /** Kernel parameters picked for this adapter (tuning.ts). */
  readonly tuning: WebGpuTuning
  /** The adapter offers `shader-f16` and the device enabled it. */
  readonly f16: boolean
  /** maxComputeWorkgroupStorageSize, bytes. */
  readonly workgroupStorage: number
  /** maxComputeInvocationsPerWorkgroup. */
  readonly maxInvocations: number
}

/**
 * One dispatch of a (possibly multi-pass) kernel. `variant` names the shader together with the spec key: two
 * passes with the same spec key and variant must generate the same WGSL (it is compiled once, on first use).
 */
export interface KernelPass {
  readonly variant: string
  readonly bindings: readonly Binding[]
  readonly params: ParamList
  readonly grid: Grid
  /** The WGSL; only called when the (spec, variant) pipeline is not compiled yet. */
  shader(): ShaderParts
}

/** Temporary device memory for one call (split-K partial sums, attention's row statistics): a contiguous
 *  float32 view of `elements` elements, freed as soon as the call is recorded (stream order keeps it safe). */
export type ScratchAlloc = (elements: number) => View

/**
 * How one kernel kind becomes WGSL and a dispatch. Each family file exports a `KernelTable` for its kinds and
 * kernels.ts joins them into one table typed `{ [K in KernelKind]: … }`, so a missing kind is a type error.
 *
 * The split between static and dynamic matters: `shader` is called once per (spec, variant) and may only look
 * at the static part of the call (kind, op, dtypes, ranks, boolean flags, whether an optional view is present);
 * `bindings`, `params` and `grid` run on every dispatch. `bindings` and `params` are used on both sides — their
 * names, order and types must therefore depend on the static part only, their views and values on the call.
 */
export interface SinglePassGenerator<K extends KernelKind> {
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
 * Multi-pass kernels (split-K matmul, attention backward) and kernels whose variants depend on the device's
 * tuning plan their dispatches: one KernelPass per dispatch, in order (each sees the writes of the ones before).
 */
export interface PlannedGenerator<K extends KernelKind> {
  plan(call: KernelOf<K>, ctx: KernelContext, scratch: ScratchAlloc): KernelPass[]
}

export type KernelGenerator<K extends KernelKind> = SinglePassGenerator<K> | PlannedGenerator<K>

/** The dispatches of one call, whichever form its generator has. */
export function planCall<K extends KernelKind>(g: KernelGenerator<K>, call: KernelOf<K>, ctx: KernelContext, scratch: ScratchAlloc): KernelPass[] {
  if ("plan" in g) return g.plan(call, ctx, scratch)
  const variant = g.variant?.(call) ?? ""
  const params = new ParamList()
  g.params(call, params)
  return [{ variant, bindings: g.bindings(call), params, grid: g.grid(call, variant), shader: () => g.shader(call, variant) }]
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
  /** WGSL extensions to enable (e.g. "f16"). */
  readonly enables?: readonly string[]
}

export type KernelTable<K extends KernelKind> = { readonly [P in K]: KernelGenerator<P> }

/** Threads per workgroup for one-thread-per-element kernels. */
export const ELEMENTWISE_THREADS = 256
