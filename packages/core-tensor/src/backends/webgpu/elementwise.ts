import type { BinaryOp, KernelOf, UnaryOp } from "../../backend.js"
import type { DType } from "../../dtype.js"
import type { KernelTable } from "./kernel.js"
import { pointwise } from "./pointwise.js"
import { SIGMOID_FN, scalarBits, wgslType } from "./wgsl-helpers.js"

/**
 * Element-wise kernels: unary, binary, where, copy, fill, pad, and the SwiGLU pair. copy, where, fill and pad
 * move 32-bit words without interpreting them (bit-exact, one shader for every dtype, like the CPU backend).
 */

const FLOAT_UNARY: Record<Exclude<UnaryOp, "cast">, (v: string) => string> = {
  neg: (v) => `-${v}`,
  reciprocal: (v) => `1.0 / ${v}`,
  exp: (v) => `exp(${v})`,
  log: (v) => `log(${v})`,
  sqrt: (v) => `sqrt(${v})`,
  sin: (v) => `sin(${v})`,
  cos: (v) => `cos(${v})`,
}

const ZERO: Record<DType, string> = { float32: "0.0", int32: "0i", bool: "0u" }

/** WGSL for storing `v` (of dtype `from`) as `to`. f32→i32 truncates toward zero (WGSL saturates out-of-range
 *  values where the CPU's ToInt32 wraps them; both agree inside the int32 range). */
function castExpr(v: string, from: DType, to: DType): string {
  if (from === to) return v
  if (to === "bool") return `select(0u, 1u, ${v} != ${ZERO[from]})`
  return `${wgslType(to)}(${v})`
}

function unaryBody({ op, x, out }: KernelOf<"unary">): string {
  const v = "x_buf[x_i]"
  if (op === "cast") return `  out_buf[out_i] = ${x.dtype === out.dtype ? v : castExpr(v, x.dtype, out.dtype)};`
  return `  out_buf[out_i] = ${FLOAT_UNARY[op](v)};`
}

const BINARY: Record<BinaryOp, (a: string, b: string) => string> = {
  add: (a, b) => `${a} + ${b}`,
  mul: (a, b) => `${a} * ${b}`, // i32 multiplication wraps mod 2^32, as Math.imul does
  max: (a, b) => `max(${a}, ${b})`,
  cmplt: (a, b) => `select(0u, 1u, ${a} < ${b})`,
  cmpeq: (a, b) => `select(0u, 1u, ${a} == ${b})`,
}

export const elementwiseKernels = {
  unary: pointwise<"unary">({
    inputs: ({ x }) => [["x", x]],
    outputs: ({ out }) => [["out", out]],
    body: unaryBody,
  }),
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
    body: () => `  out_buf[out_i] = select(b_buf[b_i], a_buf[a_i], cond_buf[cond_i] != 0u);`,
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
    body: () => `  let z = gate_buf[gate_i];\n  out_buf[out_i] = z * sigmoid(z) * up_buf[up_i];`,
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
    body: () => `  let z = gate_buf[gate_i];
  let s = sigmoid(z);
  let gv = g_buf[g_i];
  dGate_buf[dGate_i] = gv * up_buf[up_i] * s * (1.0 + z * (1.0 - s));
  dUp_buf[dUp_i] = gv * z * s;`,
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
