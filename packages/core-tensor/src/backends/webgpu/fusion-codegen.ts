import type { DType } from "../../dtype.js"
import type { FusedKernelPlan, PlannedNode, Source } from "./fusion-plan.js"
import { fusibleOp, type NodeIo } from "./fusion-nodes.js"
import { ELEMENTWISE_THREADS, type ShaderParts } from "./kernel.js"
import { type Binding, type Grid, ParamList, sizeOfShape, stridedIndex, threadGrid, wgslType } from "./wgsl-helpers.js"

/**
 * WGSL for a fused kernel (fusion-plan.ts). One thread per element of the largest node; every node runs under
 * its own size guard (uniform one-element nodes run in every thread, thread 0 stores them), in window order, with its inputs as `let`s (registers of earlier nodes, or loads) and its
 * outputs in function-scope `var`s, stored only when the plan binds them. Every buffer is bound as array<u32>
 * and values are bitcast on load and store: a buffer may hold any dtype, and bitcasts move bits exactly.
 *
 * `key` serialises exactly what the WGSL depends on (slot ranks, operand access modes and dtypes, node kinds,
 * ops, dtypes, sources and bindings); shapes, strides, offsets and scalars are uniforms, so a training loop
 * that emits the same chain every step compiles it once.
 *
 * Uniform names: `n_all`, `zero` (see `opaque`); per slot s: `s{s}_n`, `s{s}_sh{d}`; per operand o: `o{o}_off`, `o{o}_st{d}`; per node k:
 * `n{k}o{j}_off` (stored outputs), `n{k}s_{name}_off` (state), `n{k}_{name}` (the op's scalars).
 */

export interface FusedKernel {
  readonly key: string
  /** For pipelines and error messages: "fused 3: binary.mul binary.add unary.exp". */
  readonly label: string
  readonly bindings: readonly Binding[]
  readonly params: ParamList
  readonly grid: Grid
  shader(): ShaderParts
}

const load = (word: string, dtype: DType) => (dtype === "bool" ? word : `bitcast<${wgslType(dtype)}>(${word})`)
const store = (value: string, dtype: DType) => (dtype === "bool" ? value : `bitcast<u32>(${value})`)

export function fusedKernel(plan: FusedKernelPlan): FusedKernel {
  const params = new ParamList()
  const slotSizes = plan.slots.map((s) => sizeOfShape(s.shape))
  const total = Math.max(1, ...slotSizes) // a kernel of uniform nodes alone has no slot: one thread
  params.u32("n_all", total).u32("zero", 0)
  plan.slots.forEach((s, i) => {
    params.u32(`s${i}_n`, slotSizes[i])
    if (s.coords) params.shape(`s${i}`, s.shape)
  })
  plan.operands.forEach((o, i) => {
    params.u32(`o${i}_off`, o.view.offset)
    if (o.access === "strided") o.view.strides.forEach((st, d) => params.u32(`o${i}_st${d}`, st))
  })
  plan.nodes.forEach((n, k) => {
    n.operands.state.forEach(([name, v]) => params.u32(`n${k}s_${name}_off`, v.offset))
    n.outputBindings.forEach((b, j) => {
      if (b !== null) params.u32(`n${k}o${j}_off`, n.operands.outputs[j].offset)
    })
    fusibleOp(n.call).params?.(n.call, params, (name) => `n${k}_${name}`)
  })

  const bindings: Binding[] = plan.buffers.map((b, i) => {
    const view = viewOf(plan, i)
    return { name: `b${i}`, view, access: b.access, words: true }
  })
  return {
    key: keyOf(plan),
    label: `fused ${plan.nodes.length}: ${plan.nodes.map((n) => `${n.call.kind}.${fusibleOp(n.call).signature(n.call)}`).join(" ")}`.slice(0, 200),
    bindings,
    params,
    grid: threadGrid(total, ELEMENTWISE_THREADS),
    shader: () => shaderOf(plan),
  }
}

/** Any view of binding i (a binding only needs its buffer; it is bound as words whatever the dtype). */
function viewOf(plan: FusedKernelPlan, i: number) {
  const handle = plan.buffers[i].handle
  for (const o of plan.operands) if (o.view.buffer === handle) return o.view
  for (const n of plan.nodes) {
    for (const [, v] of n.operands.state) if (v.buffer === handle) return v
    for (const v of n.operands.outputs) if (v.buffer === handle) return v
  }
  throw new Error("webgpu fusion: a bound buffer has no view (planner bug)")
}

function keyOf(plan: FusedKernelPlan): string {
  const slots = plan.slots.map((s) => `${s.shape.length}${s.coords ? "c" : ""}`).join(",")
  const operands = plan.operands.map((o) => `${o.binding}:${o.slot}:${o.access[0]}${o.access === "strided" ? o.view.strides.length : ""}:${o.view.dtype[0]}`).join(",")
  const nodes = plan.nodes.map((n) => {
    const sources = n.sources.map((s, i) => `${"node" in s ? `r${s.node}.${s.output}` : `o${s.operand}`}${n.operands.inputs[i].dtype[0]}`).join(" ")
    const outputs = n.outputBindings.map((b, j) => `${n.operands.outputs[j].dtype[0]}${b ?? "-"}`).join(" ")
    const state = n.stateBindings.join(" ")
    return `${n.call.kind}.${fusibleOp(n.call).signature(n.call)}@${n.slot}(${sources})>(${outputs})[${state}]`
  })
  return `fused|${plan.buffers.map((b) => (b.access === "read" ? "r" : "w")).join("")}|${slots}|${operands}|${nodes.join(";")}`
}

/**
 * A register value passed through an integer XOR with a uniform that is 0 at run time. The shader compiler
 * cannot see through it, so it cannot contract or reassociate across the boundary between two ops (lavapipe
 * otherwise folds `x = a·a` into the fma of exp's range reduction, and exp(a·a) moves by an ulp or two): each
 * op rounds exactly as in its stand-alone kernel, which makes fused results bitwise equal to unfused ones.
 */
function opaque(value: string, dtype: DType): string {
  if (dtype === "bool") return `(${value} ^ zero)`
  return `bitcast<${wgslType(dtype)}>(bitcast<u32>(${value}) ^ zero)`
}

function sourceExpr(plan: FusedKernelPlan, node: PlannedNode, s: Source, dtype: DType): string {
  if ("node" in s) return opaque(`v${s.node}_${s.output}`, dtype)
  const o = plan.operands[s.operand]
  const name = `o${s.operand}`
  const index = o.access === "aligned" ? `${name}_off + gi` : o.access === "scalar" ? `${name}_off` : stridedIndex(name, o.view.strides.length, `s${node.slot}c`)
  return load(`b${o.binding}_buf[${index}]`, dtype)
}

function shaderOf(plan: FusedKernelPlan): ShaderParts {
  const lines = ["  if (gi >= n_all) { return; }"]
  // Coordinates of the slots with strided operands, computed only by the threads inside the slot.
  plan.slots.forEach((s, i) => {
    if (!s.coords || s.shape.length === 0) return
    const rank = s.shape.length
    lines.push(`  var s${i}c0 = 0u;`)
    for (let d = 1; d < rank; d++) lines.push(`  var s${i}c${d} = 0u;`)
    lines.push(`  if (gi < s${i}_n) {`, `    var rem = gi;`)
    for (let d = rank - 1; d > 0; d--) lines.push(`    s${i}c${d} = rem % s${i}_sh${d};`, `    rem = rem / s${i}_sh${d};`)
    lines.push(`    s${i}c0 = rem;`, "  }")
  })
  plan.nodes.forEach((n, k) => n.operands.outputs.forEach((v, j) => lines.push(`  var v${k}_${j}: ${wgslType(v.dtype)};`)))
  const decls = new Set<string>()
  plan.nodes.forEach((n, k) => {
    const op = fusibleOp(n.call)
    if (op.decls !== undefined) decls.add(op.decls)
    const io: NodeIo = {
      inputs: n.sources.map((_, i) => `i${i}`),
      outputs: n.operands.outputs.map((_, j) => `v${k}_${j}`),
      state: (name) => load(`b${stateBinding(n, name)}_buf[n${k}s_${name}_off + gi]`, "float32"),
      store: (name, value) => `b${stateBinding(n, name)}_buf[n${k}s_${name}_off + gi] = ${store(value, "float32")};`,
      param: (name) => `n${k}_${name}`,
    }
    const uniform = n.slot < 0
    const stores = n.outputBindings.flatMap((b, j) =>
      b === null ? [] : [`b${b}_buf[n${k}o${j}_off${uniform ? "" : " + gi"}] = ${store(`v${k}_${j}`, n.operands.outputs[j].dtype)};`],
    )
    const body = [...n.sources.map((s, i) => `  let i${i} = ${sourceExpr(plan, n, s, n.operands.inputs[i].dtype)};`), op.statements(n.call, io)]
    // A uniform node runs in every thread (same value everywhere); thread 0 stores it.
    if (uniform) lines.push("  {", ...body, ...(stores.length > 0 ? [`  if (gi == 0u) { ${stores.join(" ")} }`] : []), "  }")
    else lines.push(`  if (gi < s${n.slot}_n) {`, ...body, ...stores.map((l) => `  ${l}`), "  }")
  })
  return { workgroupSize: [ELEMENTWISE_THREADS, 1, 1], decls: [...decls].join("\n"), body: lines.join("\n") }
}

function stateBinding(n: PlannedNode, name: string): number {
  const i = n.operands.state.findIndex(([s]) => s === name)
  if (i < 0) throw new Error(`webgpu fusion: ${n.call.kind} has no state ${name}`)
  return n.stateBindings[i]
}
