import type { View } from "../../backend.js"
import type { DType } from "../../dtype.js"

/**
 * Shared WGSL snippets and the little bookkeeping types every kernel generator uses.
 *
 * Naming in generated code (so generators can refer to each other's output without guessing):
 *  - a storage binding named `x` is the WGSL variable `x_buf`;
 *  - a view `x` has parameters `x_off` (element offset) and `x_st0 … x_st{r-1}` (element strides);
 *  - a shape `s` has parameters `s_sh0 … s_sh{r-1}`;
 *  - unravelled coordinates are `c0 … c{r-1}`.
 * The `_buf` / `_off` suffixes also keep tensor names such as `cos`, `sin` or `target` clear of WGSL builtins.
 */

/** Highest rank a strided view may have (shapes of lower rank are handled as-is; ranks are part of the key). */
export const MAX_RANK = 6

/** WGSL caps a grid at 65535 workgroups per dimension. */
export const MAX_GROUPS_PER_DIM = 65535

/** The WGSL type a dtype is stored as (bool is a 0/1 u32 word, see dtype.ts). */
export function wgslType(dtype: DType): "f32" | "i32" | "u32" {
  return dtype === "float32" ? "f32" : dtype === "int32" ? "i32" : "u32"
}

/** A storage buffer bound to one dispatch. `words` binds it as array<u32> whatever the dtype (bit-exact moves);
 *  `type` overrides the WGSL element type outright (e.g. "vec4<f32>" for vectorised loads, "vec4<f16>"). */
export interface Binding {
  readonly name: string
  readonly view: View
  readonly access: "read" | "read_write"
  readonly words?: boolean
  readonly type?: string
}

export const input = (name: string, view: View, words = false): Binding => ({ name, view, access: "read", words })
export const output = (name: string, view: View, words = false): Binding => ({ name, view, access: "read_write", words })

export type ParamType = "u32" | "i32" | "f32"

export interface Param {
  readonly name: string
  readonly type: ParamType
  readonly value: number
}

/** The per-dispatch uniform block holds this many 32-bit words (256 bytes, one uniform-offset alignment unit). */
export const PARAM_WORDS = 64

/**
 * The dynamic scalars of one dispatch, in the order they are packed into the uniform block. Generators build
 * the list from a call; the *names and types* depend only on the static spec (ranks, dtypes, flags), so the
 * same list drives both the WGSL `let` declarations at compile time and the uniform values at dispatch time.
 */
export class ParamList {
  readonly entries: Param[] = []

  u32(name: string, value: number): this {
    this.entries.push({ name, type: "u32", value })
    return this
  }
  i32(name: string, value: number): this {
    this.entries.push({ name, type: "i32", value })
    return this
  }
  f32(name: string, value: number): this {
    this.entries.push({ name, type: "f32", value })
    return this
  }
  /** `name_sh{d}` for every dim. */
  shape(name: string, shape: readonly number[]): this {
    shape.forEach((d, i) => this.u32(`${name}_sh${i}`, d))
    return this
  }
  /** `name_off` and `name_st{d}`. Strides are stored as u32 bit patterns: wrapping u32 arithmetic gives the
   *  right element index even for a negative stride, as long as the final index is in range. */
  view(name: string, view: View): this {
    this.u32(`${name}_off`, view.offset)
    view.strides.forEach((s, i) => this.u32(`${name}_st${i}`, s))
    return this
  }

  /** Pack the values into `words` (a PARAM_WORDS-long slot of the uniform staging array). */
  pack(words: Uint32Array, floats: Float32Array, ints: Int32Array): void {
    if (this.entries.length > PARAM_WORDS) throw new Error(`webgpu: ${this.entries.length} kernel parameters exceed ${PARAM_WORDS}`)
    this.entries.forEach((p, i) => {
      if (p.type === "f32") floats[i] = p.value
      else if (p.type === "i32") ints[i] = p.value
      else words[i] = p.value >>> 0
    })
  }
}

const COMPONENTS = ["x", "y", "z", "w"]

/** `let name = …;` for every parameter, reading the uniform block declared by `shaderModule`. */
export function paramDeclarations(params: ParamList): string {
  return params.entries
    .map((p, i) => {
      const word = `params.w[${i >> 2}].${COMPONENTS[i & 3]}`
      return `  let ${p.name} = ${p.type === "u32" ? word : `bitcast<${p.type}>(${word})`};`
    })
    .join("\n")
}

/** Unravel the flat row-major index `flat` over shape `shapeName` (rank r) into `let c0 … c{r-1}`. */
export function unravel(shapeName: string, rank: number, flat: string, prefix = "c"): string {
  if (rank === 0) return ""
  const lines = [`  var rem_${prefix} = ${flat};`]
  for (let d = rank - 1; d > 0; d--) {
    lines.push(`  let ${prefix}${d} = rem_${prefix} % ${shapeName}_sh${d};`)
    lines.push(`  rem_${prefix} = rem_${prefix} / ${shapeName}_sh${d};`)
  }
  lines.push(`  let ${prefix}0 = rem_${prefix};`)
  return lines.join("\n")
}

/** The element index of coordinates `c0 …` in view `name`: `name_off + c0 * name_st0 + …`. */
export function stridedIndex(name: string, rank: number, prefix = "c"): string {
  const terms = [`${name}_off`]
  for (let d = 0; d < rank; d++) terms.push(`${prefix}${d} * ${name}_st${d}`)
  return terms.join(" + ")
}

/** Product of a shape's parameters, as a WGSL expression. */
export function shapeSize(shapeName: string, rank: number): string {
  if (rank === 0) return "1u"
  return Array.from({ length: rank }, (_, d) => `${shapeName}_sh${d}`).join(" * ")
}

/** Numerically safe logistic: never evaluates exp of a large positive number. */
export const SIGMOID_FN = /* wgsl */ `
fn sigmoid(z: f32) -> f32 {
  if (z >= 0.0) { return 1.0 / (1.0 + exp(-z)); }
  let e = exp(z);
  return e / (1.0 + e);
}`

/**
 * WGSL has no infinity literal, and `bitcast<f32>(0xff800000u)` is a constant expression that Tint rejects
 * ("value -inf cannot be represented as 'f32'"). Bitcasting a private variable instead makes it a runtime value;
 * every module declares the variables (INFINITY_DECLS).
 */
export const NEG_INF = "bitcast<f32>(neg_inf_bits)"
export const POS_INF = "bitcast<f32>(pos_inf_bits)"
export const INFINITY_DECLS = "var<private> neg_inf_bits: u32 = 0xff800000u;\nvar<private> pos_inf_bits: u32 = 0x7f800000u;"
export const I32_MIN = "i32(-2147483647 - 1)"

/** A grid of workgroups. */
export type Grid = readonly [number, number, number]

/**
 * A 1-D launch of `groups` workgroups folded into a 2-D grid when it exceeds 65535. Kernels recover the flat
 * workgroup index as `wid.y * nwg.x + wid.x` (the `wg` let in every shader) and must guard against the
 * overshoot of the last grid row.
 */
export function flatGrid(groups: number): Grid {
  if (groups <= MAX_GROUPS_PER_DIM) return [Math.max(1, groups), 1, 1]
  const rows = Math.ceil(groups / MAX_GROUPS_PER_DIM)
  if (rows > MAX_GROUPS_PER_DIM) throw new RangeError(`webgpu: ${groups} workgroups exceed a 65535² grid`)
  return [Math.ceil(groups / rows), rows, 1]
}

/** Grid for one thread per element, `perGroup` threads per workgroup. */
export const threadGrid = (threads: number, perGroup: number): Grid => flatGrid(Math.ceil(threads / perGroup))

/** The 32-bit pattern of `value` stored as `dtype` (float→int truncates, →bool is != 0), as the CPU backend
 *  stores it: fill and pad move words, so one shader serves every dtype. */
export function scalarBits(value: number, dtype: DType): number {
  if (dtype === "float32") return new Uint32Array(new Float32Array([value]).buffer)[0]
  if (dtype === "int32") return (Math.trunc(value) | 0) >>> 0
  return value !== 0 ? 1 : 0
}

export const sizeOfShape = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** Threads per workgroup for kernels that give a whole row (or one output) to a workgroup. */
export const ROW_THREADS = 256

/**
 * `wg_sum(v, li)` and `wg_max(v, li)`: a shared-memory tree reduction over the `ROW_THREADS` threads of a
 * workgroup, returning the result to every thread. They contain barriers, so call them from uniform control
 * flow with every thread of the workgroup. The leading barrier makes back-to-back calls safe: no thread
 * overwrites the scratch while another is still reading the previous result.
 */
export function workgroupReductions(type: "f32" | "i32"): string {
  const half = ROW_THREADS / 2
  const fn = (name: string, combine: (a: string, b: string) => string) => `
fn ${name}(v: ${type}, li: u32) -> ${type} {
  workgroupBarrier();
  red_scratch[li] = v;
  workgroupBarrier();
  for (var s = ${half}u; s > 0u; s = s >> 1u) {
    if (li < s) { red_scratch[li] = ${combine("red_scratch[li]", "red_scratch[li + s]")}; }
    workgroupBarrier();
  }
  return red_scratch[0];
}`
  return `var<workgroup> red_scratch: array<${type}, ${ROW_THREADS}>;
${fn("wg_sum", (a, b) => `${a} + ${b}`)}
${fn("wg_max", (a, b) => `max(${a}, ${b})`)}`
}
