import type { BinaryOp, KernelOf, UnaryOp } from "../../backend.js"
import type { DType } from "../../dtype.js"
import { withHalfCasts } from "./half.js"
import type { KernelTable } from "./kernel.js"
import { pointwise } from "./pointwise.js"
import { SIGMOID_FN, scalarBits, wgslType } from "./wgsl-helpers.js"

/**
 * Element-wise kernels: unary, binary, where, copy, fill, pad, and the SwiGLU pair. copy, where, fill and pad
 * move 32-bit words without interpreting them (bit-exact, one shader for every dtype, like the CPU backend).
 */

/** Expression templates, shared with the fused kernels (fusion-nodes.ts) so that a fused op computes exactly
 *  the same WGSL expression, in the same order, as its stand-alone kernel. */
export const FLOAT_UNARY: Record<Exclude<UnaryOp, "cast">, (v: string) => string> = {
  neg: (v) => `-${v}`,
  reciprocal: (v) => `1.0 / ${v}`,
  exp: (v) => `exp(${v})`,
  log: (v) => `log(${v})`,
  sqrt: (v) => `sqrt(${v})`,
  sin: (v) => `sin(${v})`,
  cos: (v) => `cos(${v})`,
}

export const ZERO: Record<DType, string> = { float32: "0.0", int32: "0i", bool: "0u" }

/** WGSL for storing `v` (of dtype `from`) as `to`. f32→i32 truncates toward zero (WGSL saturates out-of-range
 *  values where the CPU's ToInt32 wraps them; both agree inside the int32 range). */
export function castExpr(v: string, from: DType, to: DType): string {
  if (from === to) return v
  if (to === "bool") return `select(0u, 1u, ${v} != ${ZERO[from]})`
  return `${wgslType(to)}(${v})`
}

/** The value of a unary op applied to `v` (dtype `from`), stored as `to`. */
export function unaryExpr(op: UnaryOp, v: string, from: DType, to: DType): string {
  if (op === "cast") return from === to ? v : castExpr(v, from, to)
  return FLOAT_UNARY[op](v)
}

const unaryBody = ({ op, x, out }: KernelOf<"unary">) => `  out_buf[out_i] = ${unaryExpr(op, "x_buf[x_i]", x.dtype, out.dtype)};`

export const BINARY: Record<BinaryOp, (a: string, b: string) => string> = {
  add: (a, b) => `${a} + ${b}`,
  mul: (a, b) => `${a} * ${b}`, // i32 multiplication wraps mod 2^32, as Math.imul does
  max: (a, b) => `max(${a}, ${b})`,
  cmplt: (a, b) => `select(0u, 1u, ${a} < ${b})`,
  cmpeq: (a, b) => `select(0u, 1u, ${a} == ${b})`,
}

/** cond ? a : b on 0/1 words or typed values alike. */
export const whereExpr = (cond: string, a: string, b: string) => `select(${b}, ${a}, ${cond} != 0u)`

/** SwiGLU forward and backward statements over value expressions and output lvalues. */
export const siluMulStatements = (gate: string, up: string, out: string) => `  let z = ${gate};\n  ${out} = z * sigmoid(z) * ${up};`
export const siluMulBackwardStatements = (gate: string, up: string, g: string, dGate: string, dUp: string) => `  let z = ${gate};
  let s = sigmoid(z);
  let gv = ${g};
  ${dGate} = gv * ${up} * s * (1.0 + z * (1.0 - s));
  ${dUp} = gv * z * s;`

export const elementwiseKernels = {
  // float32 ↔ float16-storage casts have passes of their own (half.ts).
  unary: withHalfCasts(
    pointwise<"unary">({
      inputs: ({ x }) => [["x", x]],
      outputs: ({ out }) => [["out", out]],
      body: unaryBody,
    }),
  ),
  binary: pointwise<"binary">({
    inputs: ({ a, b }) => [
      ["a", a],
      ["b", b],
    ],
    outputs: ({ out }) => [["out", out]],
    body: ({ op }) => `  out_buf[out_i] = ${BINARY[op]("a_buf[a_i]", "b_buf[b_i]")};`,
  }),
  where: pointwise<"where">({
    // cond is a bool (0/1 word) like everything else here, so binding all as words is exact.
    words: true,
    inputs: ({ cond, a, b }) => [
      ["cond", cond],
      ["a", a],
      ["b", b],
    ],
    outputs: ({ out }) => [["out", out]],
    body: () => `  out_buf[out_i] = ${whereExpr("cond_buf[cond_i]", "a_buf[a_i]", "b_buf[b_i]")};`,
  }),
  copy: pointwise<"copy">({
    words: true,
    inputs: ({ x }) => [["x", x]],
    outputs: ({ out }) => [["out", out]],
    body: () => `  out_buf[out_i] = x_buf[x_i];`,
  }),
  fill: pointwise<"fill">({
    words: true,
    inputs: () => [],
    outputs: ({ out }) => [["out", out]],
    extraParams: ({ value, out }, p) => p.u32("value", scalarBits(value, out.dtype)),
    body: () => `  out_buf[out_i] = value;`,
  }),
  pad: {
    ...pointwise<"pad">({
      words: true,
      coords: true,
      inputs: () => [],
      outputs: ({ out }) => [["out", out]],
      extraParams: ({ x, before, value, out }, p) => {
        p.shape("x", x.shape).view("x", x)
        before.forEach((b, d) => p.u32(`before${d}`, b))
        p.u32("value", scalarBits(value, out.dtype))
      },
      body: ({ x }) => padBody(x.shape.length),
    }),
    // pad reads x at shifted coordinates, so x is bound by hand rather than as a pointwise input.
    bindings: ({ x, out }) => [
      { name: "x", view: x, access: "read", words: true },
      { name: "out", view: out, access: "read_write", words: true },
    ],
  },
  siluMul: pointwise<"siluMul">({
    inputs: ({ gate, up }) => [
      ["gate", gate],
      ["up", up],
    ],
    outputs: ({ out }) => [["out", out]],
    decls: SIGMOID_FN,
    body: () => siluMulStatements("gate_buf[gate_i]", "up_buf[up_i]", "out_buf[out_i]"),
  }),
  siluMulBackward: pointwise<"siluMulBackward">({
    inputs: ({ gate, up, g }) => [
      ["gate", gate],
      ["up", up],
      ["g", g],
    ],
    outputs: ({ dGate, dUp }) => [
      ["dGate", dGate],
      ["dUp", dUp],
    ],
    decls: SIGMOID_FN,
    body: () => siluMulBackwardStatements("gate_buf[gate_i]", "up_buf[up_i]", "g_buf[g_i]", "dGate_buf[dGate_i]", "dUp_buf[dUp_i]"),
  }),
} satisfies KernelTable<"unary" | "binary" | "where" | "copy" | "fill" | "pad" | "siluMul" | "siluMulBackward">

/** out coordinate c maps to x coordinate c − before; outside x on any axis → the pad value. */
function padBody(rank: number): string {
  const inside: string[] = []
  const terms = ["x_off"]
  for (let d = 0; d < rank; d++) {
    // u32 wrap-around makes c < before land far above x_sh, so one comparison checks both sides.
    inside.push(`(c${d} - before${d}) < x_sh${d}`)
    terms.push(`(c${d} - before${d}) * x_st${d}`)
  }
  if (rank === 0) return `  out_buf[out_i] = x_buf[x_off];`
  return `  var v = value;
  if (${inside.join(" && ")}) { v = x_buf[${terms.join(" + ")}]; }
  out_buf[out_i] = v;`
}
