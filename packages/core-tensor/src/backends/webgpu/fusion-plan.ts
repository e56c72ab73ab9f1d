import type { DeviceBuffer, View } from "../../backend.js"
import { isContiguous, sameShape, sizeOf } from "../../shape.js"
import { type FusibleCall, fusibleOp, type NodeOperands } from "./fusion-nodes.js"
import { ParamList } from "./wgsl-helpers.js"

/**
 * Partitions the calls waiting in the backend's window (see pending-window.ts) into dispatches.
 *
 * A window is the calls recorded since the last sync point, in order: fusible nodes and barriers (every other
 * kernel). The planner knows, for every buffer, which later calls read it and whether the tensor layer has
 * freed it already — so it can tell an intermediate that no one will ever read again from one that must land
 * in memory. It walks the window once, greedily growing a kernel from consecutive nodes:
 *
 *  - a node joins the kernel unless it reads a value the kernel computes through anything but the same element
 *    (same offset, contiguous, no larger) — element i is computed by thread i, and threads do not talk; one-
 *    element values are the exception: every thread computes them, so broadcasts of them read a register —
 *    or touches a buffer that a node of the kernel updates in place (or updates a buffer the kernel
 *    touches), or the kernel would exceed the device's storage bindings, the uniform block or `maxNodes`;
 *  - a value read inside the kernel comes from a register; it is written to memory only if some call outside
 *    the kernel reads it or the tensor layer still holds it (not freed): otherwise it is never materialised;
 *  - nodes of different sizes may share a kernel (each guarded by its own size), so the many small, independent
 *    updates of an optimizer step or a backward pass become one dispatch.
 *
 * Before that, nodes whose results are all freed unread (and that update nothing in place) are dropped.
 * A kernel of one node is dispatched with its ordinary stand-alone program.
 */

export type WindowEntry =
  | { readonly kind: "node"; readonly call: FusibleCall; readonly operands: NodeOperands }
  | { readonly kind: "barrier"; readonly handles: readonly DeviceBuffer[] }

export interface FusionLimits {
  /** Storage buffers a kernel may bind (maxStorageBuffersPerShaderStage). */
  readonly maxBindings: number
  /** 32-bit words of the uniform block. */
  readonly maxParamWords: number
  /** Nodes per fused kernel: bounds shader size and compile time. */
  readonly maxNodes: number
}

/** How a fused kernel reads an input that lives in memory. */
export type OperandAccess = "aligned" | "scalar" | "strided"

export interface PlannedOperand {
  readonly binding: number
  readonly view: View
  /** The slot whose coordinates a strided operand uses (−1: read by a uniform node, always "scalar"). */
  readonly slot: number
  readonly access: OperandAccess
}

/** An input's value: another node's output (a register) or an operand in memory. */
export type Source = { readonly node: number; readonly output: number } | { readonly operand: number }

export interface PlannedNode {
  readonly call: FusibleCall
  readonly operands: NodeOperands
  /** Index into `slots`, or −1 for a uniform node (one element, evaluated by every thread). */
  readonly slot: number
  readonly sources: readonly Source[]
  /** Binding of each fresh output, or null when it stays in a register. */
  readonly outputBindings: readonly (number | null)[]
  /** Binding of each in-place state view. */
  readonly stateBindings: readonly number[]
}

/** A shape that some nodes iterate over; coordinates are unravelled only when a strided operand needs them. */
export interface PlannedSlot {
  readonly shape: readonly number[]
  readonly coords: boolean
}

export interface FusedKernelPlan {
  readonly nodes: readonly PlannedNode[]
  readonly slots: readonly PlannedSlot[]
  readonly operands: readonly PlannedOperand[]
  /** Bound buffers, read-only ones first. */
  readonly buffers: ReadonlyArray<{ readonly handle: DeviceBuffer; readonly access: "read" | "read_write" }>
}

export type PlanStep =
  | { readonly kind: "barrier"; readonly entry: number }
  | { readonly kind: "single"; readonly entry: number }
  | { readonly kind: "fused"; readonly kernel: FusedKernelPlan; readonly entries: readonly number[] }

export interface WindowPlan {
  readonly steps: readonly PlanStep[]
  /** Calls dropped because nothing reads what they compute. */
  readonly dropped: number
  /** Outputs of fused nodes that never reach memory. */
  readonly elided: number
}

/** Buffers an entry reads (or, for a barrier, touches at all). */
function readsOf(e: WindowEntry): DeviceBuffer[] {
  if (e.kind === "barrier") return [...e.handles]
  return [...e.operands.inputs.map((v) => v.buffer), ...e.operands.state.map(([, v]) => v.buffer)]
}

export function planWindow(entries: readonly WindowEntry[], freed: ReadonlySet<DeviceBuffer>, limits: FusionLimits): WindowPlan {
  // Dead nodes, back to front: everything they write is freed and read by no live call.
  const liveReads = new Map<DeviceBuffer, number>()
  const dead = new Set<number>()
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i]
    if (e.kind === "node" && e.operands.state.length === 0 && e.operands.outputs.every((v) => freed.has(v.buffer) && !liveReads.has(v.buffer))) {
      dead.add(i)
      continue
    }
    for (const h of new Set(readsOf(e))) liveReads.set(h, (liveReads.get(h) ?? 0) + 1)
  }
  const readers = new Map<DeviceBuffer, number[]>()
  entries.forEach((e, i) => {
    if (dead.has(i)) return
    for (const h of new Set(readsOf(e))) {
      const list = readers.get(h)
      if (list === undefined) readers.set(h, [i])
      else list.push(i)
    }
  })

  const steps: PlanStep[] = []
  let elided = 0
  let kernel: KernelBuilder | null = null
  const close = () => {
    if (kernel === null) return
    if (kernel.size === 1) steps.push({ kind: "single", entry: kernel.entries[0] })
    else {
      const plan = kernel.finish()
      elided += plan.nodes.reduce((n, node) => n + node.outputBindings.filter((b) => b === null).length, 0)
      steps.push({ kind: "fused", kernel: plan, entries: kernel.entries })
    }
    kernel = null
  }
  entries.forEach((e, i) => {
    if (dead.has(i)) return
    if (e.kind === "barrier") {
      close()
      steps.push({ kind: "barrier", entry: i })
      return
    }
    if (kernel !== null && kernel.tryAdd(i, e)) return
    close()
    kernel = new KernelBuilder(limits, freed, readers)
    kernel.tryAdd(i, e)
  })
  close()
  return { steps, dropped: dead.size, elided }
}

/**
 * Whether `view` reads, in thread i, a value the kernel computed in the same thread: element i of a value
 * (same offset, contiguous, no larger), or any broadcast of a uniform node's single value.
 */
function readsInThread(view: View, p: Produced): boolean {
  if (view.dtype !== p.view.dtype || view.offset !== p.view.offset) return false
  if (p.uniform) return view.shape.every((d, i) => d === 1 || view.strides[i] === 0)
  return isContiguous(view.shape, view.strides) && sizeOf(view.shape) <= sizeOf(p.view.shape)
}

function accessOf(view: View): OperandAccess {
  if (isContiguous(view.shape, view.strides)) return "aligned"
  if (view.shape.every((d, i) => d === 1 || view.strides[i] === 0)) return "scalar"
  return "strided"
}

/** The iteration shape of a node: its first output, or its first in-place state. */
const shapeOf = (ops: NodeOperands) => (ops.outputs[0] ?? ops.state[0][1]).shape

/**
 * A node of one element that every thread evaluates (the same value everywhere), so that element-wise nodes
 * can read it through a broadcast: e.g. the negated scalar of `x − 2`. Not for in-place updates (each must
 * happen once) nor random draws (whose counter is the thread index).
 */
const isUniform = (e: Extract<WindowEntry, { kind: "node" }>) =>
  e.operands.state.length === 0 && e.call.kind !== "random" && sizeOf(shapeOf(e.operands)) === 1

interface Produced {
  readonly node: number
  readonly output: number
  readonly view: View
  readonly uniform: boolean
  /** Live readers not (yet) in this kernel. */
  outside: number
  readonly freed: boolean
}

const materialised = (p: Produced) => !p.freed || p.outside > 0

/** One kernel under construction: `tryAdd` either takes a node with every limit still met, or changes nothing. */
class KernelBuilder {
  readonly entries: number[] = []
  private readonly nodes: Array<Omit<PlannedNode, "outputBindings" | "stateBindings">> = []
  private readonly produced = new Map<DeviceBuffer, Produced>()
  private readonly external: DeviceBuffer[] = []
  private readonly externalSet = new Set<DeviceBuffer>()
  private readonly stateful = new Set<DeviceBuffer>()
  private readonly touched = new Set<DeviceBuffer>()
  private readonly operands: PlannedOperand[] = []
  private readonly operandKeys = new Map<string, number>()
  private readonly slots: Array<{ shape: readonly number[]; coords: boolean }> = []
  private readonly handleIds = new Map<DeviceBuffer, number>()
  /** Uniform words apart from the offsets of materialised outputs, which `materialisedCount` tracks. */
  private words = 2 // n_all, zero
  private materialisedCount = 0

  constructor(
    private readonly limits: FusionLimits,
    private readonly freed: ReadonlySet<DeviceBuffer>,
    private readonly readers: ReadonlyMap<DeviceBuffer, readonly number[]>,
  ) {}

  get size(): number {
    return this.nodes.length
  }

  /** Always takes the first node (a kernel of one node runs its stand-alone program). */
  tryAdd(entry: number, e: Extract<WindowEntry, { kind: "node" }>): boolean {
    const first = this.nodes.length === 0
    if (!first && this.nodes.length >= this.limits.maxNodes) return false
    const { inputs, outputs, state } = e.operands
    const uniform = isUniform(e)

    // Hazards: a value the kernel computes, read through another element; state updated in place.
    const readProduced = new Set<Produced>()
    for (const v of inputs) {
      if (this.stateful.has(v.buffer)) return false
      const p = this.produced.get(v.buffer)
      if (p !== undefined) {
        if (!readsInThread(v, p) || (uniform && !p.uniform)) return false
        readProduced.add(p)
      }
    }
    for (const [, v] of state) if (this.touched.has(v.buffer) || (!first && inputs.some((x) => x.buffer === v.buffer))) return false
    for (const v of outputs) if (this.touched.has(v.buffer)) return false

    // Resources with this node in: uniform words and storage bindings. A uniform node has no slot: it runs
    // unguarded and reads element 0 of its operands.
    const shape = shapeOf(e.operands)
    let slot = uniform ? -1 : this.slots.findIndex((s) => sameShape(s.shape, shape))
    const newSlot = !uniform && slot < 0
    if (newSlot) slot = this.slots.length
    let words = this.words + (newSlot ? 1 : 0) // s_n
    const hadCoords = !uniform && !newSlot && this.slots[slot].coords
    let coords = hadCoords
    const newOperands = new Map<string, { view: View; access: OperandAccess }>()
    const newExternal = new Set<DeviceBuffer>()
    const sourceKeys: Array<string | null> = []
    for (const v of inputs) {
      if (this.produced.has(v.buffer)) {
        sourceKeys.push(null)
        continue
      }
      const access = uniform ? "scalar" : accessOf(v)
      const key = this.operandKey(v, slot, access)
      sourceKeys.push(key)
      if (this.operandKeys.has(key) || newOperands.has(key)) continue
      newOperands.set(key, { view: v, access })
      words += 1 + (access === "strided" ? v.strides.length : 0)
      if (access === "strided") coords = true
      if (!this.externalSet.has(v.buffer)) newExternal.add(v.buffer)
    }
    if (coords && !hadCoords) words += shape.length
    const params = new ParamList()
    fusibleOp(e.call).params?.(e.call, params, (n) => n)
    words += params.entries.length + state.length
    let bindings = this.external.length + newExternal.size + this.stateful.size + state.length + this.materialisedCount
    let outputWords = this.materialisedCount
    for (const p of readProduced)
      if (p.freed && p.outside === 1) {
        bindings -= 1
        outputWords -= 1
      }
    const newProduced = outputs.map((v, j): Produced => ({
      node: this.nodes.length,
      output: j,
      view: v,
      uniform,
      outside: this.readers.get(v.buffer)?.length ?? 0,
      freed: this.freed.has(v.buffer),
    }))
    for (const p of newProduced)
      if (materialised(p)) {
        bindings += 1
        outputWords += 1
      }
    if (!first && (bindings > this.limits.maxBindings || words + outputWords > this.limits.maxParamWords)) return false

    // Commit.
    if (newSlot) this.slots.push({ shape, coords })
    else if (!uniform) this.slots[slot].coords = coords
    this.words = words
    for (const p of readProduced) p.outside -= 1
    for (const [key, { view, access }] of newOperands) {
      if (!this.externalSet.has(view.buffer)) {
        this.externalSet.add(view.buffer)
        this.external.push(view.buffer)
      }
      this.operandKeys.set(key, this.operands.length)
      this.operands.push({ binding: this.external.indexOf(view.buffer), view, slot, access })
    }
    const sources: Source[] = inputs.map((v, i) => {
      const key = sourceKeys[i]
      if (key !== null) return { operand: this.operandKeys.get(key)! }
      const p = this.produced.get(v.buffer)!
      return { node: p.node, output: p.output }
    })
    for (const p of newProduced) this.produced.set(p.view.buffer, p)
    for (const [, v] of state) this.stateful.add(v.buffer)
    for (const v of [...inputs, ...outputs, ...state.map(([, s]) => s)]) this.touched.add(v.buffer)
    this.materialisedCount = [...this.produced.values()].filter(materialised).length
    this.nodes.push({ call: e.call, operands: e.operands, slot, sources })
    this.entries.push(entry)
    return true
  }

  /** Bindings: external inputs (read), then state and materialised outputs (read_write) in node order. */
  finish(): FusedKernelPlan {
    const buffers: Array<{ handle: DeviceBuffer; access: "read" | "read_write" }> = this.external.map((handle) => ({ handle, access: "read" }))
    const bind = (handle: DeviceBuffer) => buffers.push({ handle, access: "read_write" }) - 1
    const nodes = this.nodes.map(
      (n): PlannedNode => ({
        ...n,
        stateBindings: n.operands.state.map(([, v]) => bind(v.buffer)),
        outputBindings: n.operands.outputs.map((v) => (materialised(this.produced.get(v.buffer)!) ? bind(v.buffer) : null)),
      }),
    )
    return { nodes, slots: this.slots, operands: this.operands, buffers }
  }

  /** Operands are shared by nodes that read the same view of the same buffer over the same slot. */
  private operandKey(v: View, slot: number, access: OperandAccess): string {
    let id = this.handleIds.get(v.buffer)
    if (id === undefined) {
      id = this.handleIds.size
      this.handleIds.set(v.buffer, id)
    }
    const geometry = access === "strided" ? v.strides.join(",") : ""
    return `${id}|${v.dtype}|${slot}|${access}|${v.offset}|${geometry}`
  }
}
