import { activeTape, type GradNode, withoutRecording } from "../autodiff.js"
import { BackendMismatchError } from "../errors.js"
import { keep, tidy } from "../memory.js"
import { Tensor } from "../tensor.js"

/** What a forward pass returns: the output, plus intermediates its vjp needs (owned by the tape if recorded). */
export interface ForwardResult {
  readonly out: Tensor
  readonly saved?: readonly Tensor[]
}

export interface VjpContext<A> {
  /** Aliases of the op's inputs, alive until the tape is released even if the caller disposed them. */
  readonly inputs: readonly Tensor[]
  readonly out: Tensor
  readonly saved: readonly Tensor[]
  readonly attrs: A
  /** Which inputs are tracked by the tape: a rule may skip (return null for) the cotangents nobody needs,
   *  e.g. matmul's gradient w.r.t. a frozen weight in LoRA training. */
  readonly needs: readonly boolean[]
}

/**
 * One op, declared once: how to compute it, and its vector-Jacobian product beside it. `vjp` returns one
 * cotangent per input (null where no gradient flows: indices, masks, constant tables). It runs with recording off
 * and inside a tidy scope, so it may freely use the front-end ops.
 */
export interface OpRule<A> {
  readonly forward: (inputs: readonly Tensor[], attrs: A) => Tensor | ForwardResult
  readonly vjp: (g: Tensor, ctx: VjpContext<A>) => ReadonlyArray<Tensor | null>
}

export function checkInputs(op: string, inputs: readonly Tensor[]): void {
  for (const t of inputs) t.assertAlive(op)
  const device = inputs[0]?.device
  for (const t of inputs)
    if (t.device !== device)
      throw new BackendMismatchError({ op, backends: inputs.map((x) => x.device.name), message: `${op}: inputs live on different devices (${inputs.map((x) => x.device.name).join(", ")})` })
}

/** Run an op's forward and, when an input is tracked by the active tape, record its node. */
export function apply<A>(op: string, rule: OpRule<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  checkInputs(op, inputs)
  const tape = activeTape()
  const record = tape !== null && inputs.some((t) => tape.tracks(t))
  // tidy: a composite's forward may allocate temporaries; only its output and saved tensors survive.
  const result = tidy(() => withoutRecording(() => rule.forward(inputs, attrs)))
  const { out, saved = [] } = result instanceof Tensor ? { out: result } : result
  if (!record) {
    for (const s of saved) s.dispose()
    return out
  }
  const needs = inputs.map((t) => tape!.tracks(t))
  const aliases = inputs.map((t) => keep(t.detach()))
  const outAlias = keep(out.detach())
  for (const s of saved) keep(s)
  const node: GradNode = {
    op,
    inputs,
    vjp: (g) => rule.vjp(g, { inputs: aliases, out: outAlias, saved, attrs, needs }),
    owned: [...aliases, outAlias, ...saved],
  }
  tape!.record(out, node)
  return out
}
