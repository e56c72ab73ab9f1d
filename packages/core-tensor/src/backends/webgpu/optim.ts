import type { KernelOf } from "../../backend.js"
import type { KernelTable } from "./kernel.js"
import { pointwise } from "./pointwise.js"
import type { ParamList } from "./wgsl-helpers.js"

/**
 * Optimizer steps, in place: the state views are bound once, read_write (as outputs of the pointwise
 * generator, which indexes them contiguously from their offset). Products of hyper-parameters are formed on the
 * host in double precision and passed as f32, so the shader does no more roundings than necessary.
 *
 * The parameters and statements are templates shared with the fused kernels (fusion-nodes.ts): `name` maps a
 * parameter to its WGSL identifier, `state` gives the read expression of an in-place operand and `store` the
 * statement that writes it, so a fused update runs exactly the same arithmetic as the stand-alone kernel.
 */
export interface InPlaceIo {
  readonly g: string
  state(name: string): string
  store(name: string, value: string): string
  param(name: string): string
}

export function adamwParams(c: KernelOf<"adamw">, params: ParamList, name: (n: string) => string = (n) => n): void {
  params
    .f32(name("lr"), c.lr)
    .f32(name("lr_wd"), c.lr * c.weightDecay)
    .f32(name("beta1"), c.beta1)
    .f32(name("one_minus_beta1"), 1 - c.beta1)
    .f32(name("beta2"), c.beta2)
    .f32(name("one_minus_beta2"), 1 - c.beta2)
    .f32(name("eps"), c.eps)
    .f32(name("bc1"), c.bc1)
    .f32(name("bc2"), c.bc2)
}

export function adamwStatements({ g, state, store, param: $ }: InPlaceIo): string {
  return `  let gv = ${g};
  let decayed = ${state("p")} - ${$("lr_wd")} * ${state("p")};
  let mv = ${$("beta1")} * ${state("m")} + ${$("one_minus_beta1")} * gv;
  let vv = ${$("beta2")} * ${state("v")} + ${$("one_minus_beta2")} * gv * gv;
  ${store("m", "mv")}
  ${store("v", "vv")}
  ${store("p", `decayed - ${$("lr")} * (mv / ${$("bc1")}) / (sqrt(vv / ${$("bc2")}) + ${$("eps")})`)}`
}

export function sgdParams(c: KernelOf<"sgd">, params: ParamList, name: (n: string) => string = (n) => n): void {
  params.f32(name("lr"), c.lr).f32(name("momentum"), c.momentum).f32(name("wd"), c.weightDecay)
}

/** `first` is static (part of the key): the first step has no momentum buffer to read. */
export function sgdStatements(first: boolean, { g, state, store, param: $ }: InPlaceIo): string {
  return `  let pv = ${state("p")};
  let d = ${g} + ${$("wd")} * pv;
  let b = ${first ? "d" : `${$("momentum")} * ${state("buf")} + d`};
  ${store("buf", "b")}
  ${store("p", `pv - ${$("lr")} * select(d, b, ${$("momentum")} > 0.0)`)}`
}

/** The stand-alone kernels' operands: `name_buf[name_i]`. */
const standalone: Omit<InPlaceIo, "g"> = {
  state: (name) => `${name}_buf[${name}_i]`,
  store: (name, value) => `${name}_buf[${name}_i] = ${value};`,
  param: (name) => name,
}

export const optimKernels = {
  adamw: pointwise<"adamw">({
    inputs: ({ g }) => [["g", g]],
    outputs: ({ p, m, v }) => [
      ["p", p],
      ["m", m],
      ["v", v],
    ],
    extraParams: (c, params) => adamwParams(c, params),
    body: () => adamwStatements({ ...standalone, g: "g_buf[g_i]" }),
  }),
  sgd: pointwise<"sgd">({
    inputs: ({ g }) => [["g", g]],
    outputs: ({ p, buf }) => [
      ["p", p],
      ["buf", buf],
    ],
    extraParams: (c, params) => sgdParams(c, params),
    body: ({ first }) => sgdStatements(first, { ...standalone, g: "g_buf[g_i]" }),
  }),
} satisfies KernelTable<"adamw" | "sgd">
