import { GradientError } from "./errors.js"
import { tidy } from "./memory.js"
import type { Tensor } from "./tensor.js"

/**
 * Reverse-mode autodiff over a tape. Ops record a node only while a tape is active and one of their inputs is
 * tracked (watched by the tape, or produced by a recorded op): a frozen base model therefore records nothing and
 * keeps no activations for backward beyond what its trainable parts need.
 */
export interface GradNode {
  readonly op: string
  /** The op's inputs as the graph sees them (identity matters: gradients are keyed by these objects). */
  readonly inputs: readonly Tensor[]
  /** Cotangent of the output → cotangents of the inputs (null: no gradient flows to that input). */
  readonly vjp: (g: Tensor) => ReadonlyArray<Tensor | null>
  /** Tensors kept alive for vjp (aliases and saved intermediates), disposed when the tape is released. */
  readonly owned: readonly Tensor[]
}

export class Tape {
  private readonly watched = new Set<Tensor>()
  private readonly nodes: GradNode[] = []

  watch(t: Tensor): void {
    this.watched.add(t)
  }

  tracks(t: Tensor): boolean {
    return this.watched.has(t) || (t.node !== null && this.nodesSet.has(t.node))
  }

  private readonly nodesSet = new Set<GradNode>()

  record(out: Tensor, node: GradNode): void {
    out.node = node
    this.nodes.push(node)
    this.nodesSet.add(node)
  }

  /**
   * Gradients of `out` (seeded with `seed`, which the caller owns) with respect to every watched tensor that
   * `out` depends on. Intermediate cotangents are disposed as soon as they have been propagated, and each node's
   * kept tensors as soon as its vjp has run: a tape runs `backward` once (valueAndGrad), then is released.
   */
  backward(out: Tensor, seed: Tensor): Map<Tensor, Tensor> {
    const order = this.topologicalOrder(out)
    const grads = new Map<Tensor, Tensor>([[out, seed]])
    const accumulate = (t: Tensor, g: Tensor) => {
      const prev = grads.get(t)
      if (prev === undefined) grads.set(t, g)
      else {
        grads.set(t, prev.add(g))
        if (prev !== seed) prev.dispose()
        g.dispose()
      }
    }
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]
      const node = t.node!
      const g = grads.get(t)
      if (g === undefined) continue
      const inputGrads = withoutRecording(() => tidy(() => [...node.vjp(g)]))
      // A vjp may pass its cotangent through (add → [g, g]); every accumulated gradient needs its own handle.
      const handed = new Set<Tensor>([g])
      node.inputs.forEach((input, k) => {
        let gi = inputGrads[k]
        if (gi === null || gi === undefined) return
        if (handed.has(gi)) gi = gi.detach()
        handed.add(gi)
        if (!this.tracks(input)) {
          gi.dispose()
          return
        }
        if (gi.shape.length !== input.shape.length || gi.shape.some((d, j) => d !== input.shape[j]))
          throw new GradientError({ op: node.op, message: `${node.op}: gradient for input ${k} has shape [${gi.shape}] but the input has [${input.shape}]` })
        accumulate(input, gi)
      })
      if (!this.watched.has(t) && g !== seed) {
        grads.delete(t)
        g.dispose()
      }
      // This node's vjp has run, and it runs once: what the node kept for it (input/output aliases, saved
      // intermediates) can go now rather than when the tape is released, so activations are freed in reverse
      // order during the backward pass, as their last reader finishes.
      this.releaseNode(node)
    }
    return grads
  }

  private topologicalOrder(out: Tensor): Tensor[] {
    const order: Tensor[] = []
    const visited = new Set<Tensor>()
    // Iterative DFS: transformer graphs are deep enough to overflow a recursive walk.
    const stack: Array<[Tensor, number]> = [[out, 0]]
    while (stack.length > 0) {
      const top = stack[stack.length - 1]
      const [t, i] = top
      const node = t.node
      if (i === 0) {
        if (visited.has(t) || node === null || !this.nodesSet.has(node)) {
          stack.pop()
          continue
        }
        visited.add(t)
      }
      if (node !== null && i < node.inputs.length) {
        top[1] = i + 1
        const child = node.inputs[i]
        if (!visited.has(child)) stack.push([child, 0])
      } else {
        stack.pop()
        order.push(t)
      }
    }
    return order
  }

  private releaseNode(node: GradNode): void {
    for (const t of node.owned) t.dispose()
  }

  /** Dispose every tensor the tape kept for backward, and cut the graph. */
  release(): void {
    for (const node of this.nodes) this.releaseNode(node)
    this.nodes.length = 0
    this.nodesSet.clear()
    this.watched.clear()
  }
}

const tapeStack: Array<Tape | null> = []

export function activeTape(): Tape | null {
  return tapeStack.length === 0 ? null : tapeStack[tapeStack.length - 1]
}

export function pushTape(tape: Tape): void {
  tapeStack.push(tape)
}

export function popTape(): void {
  tapeStack.pop()
}

/** Run `fn` with recording switched off (inference, optimizer updates, vjp bodies). */
export function withoutRecording<R>(fn: () => R): R {
  tapeStack.push(null)
  try {
    return fn()
  } finally {
    tapeStack.pop()
  }
}

/** Alias of withoutRecording for user code: nothing inside contributes to gradients. */
export const noGrad = withoutRecording

// ---- functional API over parameter trees ---------------------------------------------------------------------

/**
 * A tree of tensors: a tensor, an array of trees, or a plain object (or interface-typed record) of trees.
 * Typed as `object` so that interfaces like `LlamaParams` qualify; the walk checks the leaves at run time.
 */
export type ParamTree = Tensor | readonly ParamTree[] | object

export function flattenTree(tree: ParamTree, isTensor: (v: unknown) => v is Tensor): Tensor[] {
  const out: Tensor[] = []
  const walk = (v: unknown) => {
    if (isTensor(v)) out.push(v)
    else if (Array.isArray(v)) v.forEach(walk)
    else if (v !== null && typeof v === "object") for (const key of Object.keys(v)) walk((v as { [k: string]: unknown })[key])
    else throw new TypeError(`parameter tree: expected tensors, arrays or objects, found ${String(v)}`)
  }
  walk(tree)
  return out
}

export function mapTree<T extends ParamTree>(tree: T, isTensor: (v: unknown) => v is Tensor, f: (t: Tensor) => Tensor): T {
  const walk = (v: unknown): unknown => {
    if (isTensor(v)) return f(v)
    if (Array.isArray(v)) return v.map(walk)
    const o: { [k: string]: unknown } = {}
    for (const key of Object.keys(v as object)) o[key] = walk((v as { [k: string]: unknown })[key])
    return o
  }
  return walk(tree) as T
}
