import { flattenTree, mapTree, type ParamTree, popTape, pushTape, Tape, withoutRecording } from "./autodiff.js"
import { GradientError } from "./errors.js"
import { keep, tidy } from "./memory.js"
import { Tensor } from "./tensor.js"

const isTensor = (v: unknown): v is Tensor => v instanceof Tensor

export { flattenTree, mapTree, type ParamTree }

/**
 * `valueAndGrad(f)(params, ...args)` → [f's value, d value / d params with the same tree structure].
 * `f` must return a scalar (one-element float32) tensor. Everything `f` and the backward pass allocate is
 * disposed before returning, except the value and the gradients (which the caller owns). Parameters not in the
 * tree (a frozen base) are constants: nothing is recorded for ops that only touch them.
 */
export function valueAndGrad<P extends ParamTree, A extends unknown[]>(
  f: (params: P, ...args: A) => Tensor,
): (params: P, ...args: A) => [Tensor, P] {
  return (params: P, ...args: A) => {
    const leaves = flattenTree(params, isTensor)
    const tape = new Tape()
    for (const leaf of leaves) {
      if (leaf.dtype !== "float32") throw new GradientError({ op: "valueAndGrad", message: `valueAndGrad: parameter ${leaf} is ${leaf.dtype}; only float32 tensors have gradients` })
      tape.watch(leaf)
    }
    try {
      return tidy(() => {
        pushTape(tape)
        let value: Tensor
        try {
          // A scope of its own: f's intermediates lose this handle as soon as f returns, so each lives on only
          // through the tape's aliases, which the backward pass drops node by node (Tape.backward).
          value = tidy(() => f(params, ...args))
        } finally {
          popTape()
        }
        if (!isTensor(value) || value.size !== 1 || value.dtype !== "float32")
          throw new GradientError({ op: "valueAndGrad", message: `valueAndGrad: f must return a one-element float32 tensor, got ${String(value)}` })
        const grads = withoutRecording(() => {
          const seed = value.device.ones(value.shape)
          const map = tape.backward(value, seed)
          const tree = mapTree(params, isTensor, (leaf) => {
            const g = map.get(leaf)
            if (g === undefined) return leaf.device.zeros(leaf.shape)
            map.delete(leaf)
            return g === seed ? seed.detach() : g
          })
          return tree
        })
        return [value, grads] as [Tensor, P]
      })
    } finally {
      tape.release()
    }
  }
}

/** `grad(f)(params, ...args)`: the gradients only (the value is disposed). */
export function grad<P extends ParamTree, A extends unknown[]>(f: (params: P, ...args: A) => Tensor): (params: P, ...args: A) => P {
  const vg = valueAndGrad(f)
  return (params: P, ...args: A) => {
    const [value, grads] = vg(params, ...args)
    value.dispose()
    return grads
  }
}

export { keep }
