import type { KernelCall, KernelOf, View } from "../../backend.js"
import { BINARY, siluMulBackwardStatements, siluMulStatements, unaryExpr, whereExpr } from "./elementwise.js"
import { adamwParams, adamwStatements, sgdParams, sgdStatements } from "./optim.js"
import { PHILOX, randomParams, randomStatements } from "./random.js"
import { type ParamList, SIGMOID_FN, scalarBits, wgslType } from "./wgsl-helpers.js"

/**
 * The kernel calls the fuser may merge: one thread per element, element i of every output depending only on
 * element i of every input (read through its own strides), and no cross-thread communication. Each kind says
 * which views it reads, which fresh outputs it writes, which state it updates in place (the optimizers), and
 * its WGSL statements — built from the same templates as its stand-alone kernel (elementwise.ts, optim.ts,
 * random.ts), so a fused op evaluates exactly the same expression.
 */
export type FusibleKind = "unary" | "binary" | "where" | "copy" | "fill" | "random" | "siluMul" | "siluMulBackward" | "adamw" | "sgd"
export type FusibleCall = KernelOf<FusibleKind>

export interface NodeOperands {
  /** Values read, in the order `NodeIo.inputs` names them. */
  readonly inputs: readonly View[]
  /** Fresh contiguous outputs (the tensor layer's contract: never aliasing an input). */
  readonly outputs: readonly View[]
  /** State updated in place at `offset + i` (optimizer buffers), by the names the statements use. */
  readonly state: ReadonlyArray<readonly [string, View]>
}

/** What a node's statements see: identifiers of its input values, lvalues of its outputs, in-place state. */
export interface NodeIo {
  readonly inputs: readonly string[]
  readonly outputs: readonly string[]
  state(name: string): string
  store(name: string, value: string): string
  param(name: string): string
}

export interface FusibleOp<K extends FusibleKind> {
  operands(call: KernelOf<K>): NodeOperands
  /** The static part of the call that shapes its code besides operand dtypes (op, distribution, flags). */
  signature(call: KernelOf<K>): string
  /** Per-call scalars; `name` prefixes them so several nodes can share a uniform block. */
  params?(call: KernelOf<K>, p: ParamList, name: (n: string) => string): void
  /** Module-scope helper functions it calls. */
  readonly decls?: string
  statements(call: KernelOf<K>, io: NodeIo): string
}

const fresh = (inputs: readonly View[], outputs: readonly View[]): NodeOperands => ({ inputs, outputs, state: [] })

export const FUSIBLE: { readonly [K in FusibleKind]: FusibleOp<K> } = {
  unary: {
    operands: ({ x, out }) => fresh([x], [out]),
    signature: ({ op }) => op,
    statements: ({ op, x, out }, io) => `  ${io.outputs[0]} = ${unaryExpr(op, io.inputs[0], x.dtype, out.dtype)};`,
  },
  binary: {
    operands: ({ a, b, out }) => fresh([a, b], [out]),
    signature: ({ op }) => op,
    statements: ({ op }, io) => `  ${io.outputs[0]} = ${BINARY[op](io.inputs[0], io.inputs[1])};`,
  },
  where: {
    operands: ({ cond, a, b, out }) => fresh([cond, a, b], [out]),
    signature: () => "",
    statements: (_c, io) => `  ${io.outputs[0]} = ${whereExpr(io.inputs[0], io.inputs[1], io.inputs[2])};`,
  },
  copy: {
    operands: ({ x, out }) => fresh([x], [out]),
    signature: () => "",
    statements: (_c, io) => `  ${io.outputs[0]} = ${io.inputs[0]};`,
  },
  fill: {
    operands: ({ out }) => fresh([], [out]),
    signature: () => "",
    // The stored bit pattern, as the stand-alone kernel writes it; typed here because values are typed.
    params: ({ value, out }, p, name) => p.u32(name("value"), scalarBits(value, out.dtype)),
    statements: ({ out }, io) => `  ${io.outputs[0]} = ${out.dtype === "bool" ? io.param("value") : `bitcast<${wgslType(out.dtype)}>(${io.param("value")})`};`,
  },
  random: {
    operands: ({ out }) => fresh([], [out]),
    signature: ({ dist }) => dist,
    params: (call, p, name) => randomParams(call, p, name),
    decls: PHILOX,
    statements: ({ dist }, io) => randomStatements(dist, io.outputs[0], io.param),
  },
  siluMul: {
    operands: ({ gate, up, out }) => fresh([gate, up], [out]),
    signature: () => "",
    decls: SIGMOID_FN,
    statements: (_c, io) => siluMulStatements(io.inputs[0], io.inputs[1], io.outputs[0]),
  },
  siluMulBackward: {
    operands: ({ gate, up, g, dGate, dUp }) => fresh([gate, up, g], [dGate, dUp]),
    signature: () => "",
    decls: SIGMOID_FN,
    statements: (_c, io) => siluMulBackwardStatements(io.inputs[0], io.inputs[1], io.inputs[2], io.outputs[0], io.outputs[1]),
  },
  adamw: {
    operands: ({ g, p, m, v }) => ({ inputs: [g], outputs: [], state: [["p", p], ["m", m], ["v", v]] }),
    signature: () => "",
    params: (call, p, name) => adamwParams(call, p, name),
    statements: (_c, io) => adamwStatements({ ...io, g: io.inputs[0] }),
  },
  sgd: {
    operands: ({ g, p, buf }) => ({ inputs: [g], outputs: [], state: [["p", p], ["buf", buf]] }),
    signature: ({ first }) => (first ? "first" : ""),
    params: (call, p, name) => sgdParams(call, p, name),
    statements: ({ first }, io) => sgdStatements(first, { ...io, g: io.inputs[0] }),
  },
}

/** Fusible kinds, except casts of float16 storage (their halves are packed two to a word: half.ts). */
export const isFusible = (call: KernelCall): call is FusibleCall =>
  call.kind in FUSIBLE && !(call.kind === "unary" && (call.x.half === true || call.out.half === true))

/** The op table entry of a fusible call (one cast instead of one per use site). */
export const fusibleOp = (call: FusibleCall) => FUSIBLE[call.kind] as FusibleOp<FusibleKind>
