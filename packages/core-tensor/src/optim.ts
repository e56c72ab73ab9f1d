import { flattenTree, type ParamTree } from "./autodiff.js"
import { shapeError } from "./errors.js"
import { tidy } from "./memory.js"
import * as api from "./ops/api.js"
import { sameShape } from "./shape.js"
import { Tensor } from "./tensor.js"

const isTensor = (v: unknown): v is Tensor => v instanceof Tensor

/** Pair parameters with their gradients (same tree structure) and check that they line up. */
function pairs(op: string, params: ParamTree, grads: ParamTree): Array<[Tensor, Tensor]> {
  const ps = flattenTree(params, isTensor)
  const gs = flattenTree(grads, isTensor)
  if (ps.length !== gs.length) throw shapeError(op, [[ps.length], [gs.length]], "parameter and gradient trees differ in size")
  return ps.map((p, i) => {
    const g = gs[i]
    if (!sameShape(p.shape, g.shape)) throw shapeError(op, [p.shape, g.shape], `gradient ${i} does not match its parameter`)
    if (!p.isContiguous || p.dtype !== "float32") throw shapeError(op, [p.shape], `parameter ${i} must be a contiguous float32 tensor to be updated in place`)
    return [p, g]
  })
}

export interface AdamWOptions {
  readonly lr: number
  readonly beta1?: number
  readonly beta2?: number
  readonly eps?: number
  /** Decoupled weight decay (torch.optim.AdamW default 0.01). */
  readonly weightDecay?: number
}

/** AdamW (Loshchilov & Hutter), numerically as torch.optim.AdamW. Updates parameters in place. */
export class AdamW {
  private readonly state = new Map<Tensor, { m: Tensor; v: Tensor }>()
  private t = 0
  constructor(readonly options: AdamWOptions) {}

  get stepCount(): number {
    return this.t
  }

  /** One step. `lr` overrides the configured rate (for schedules). */
  step(params: ParamTree, grads: ParamTree, lr = this.options.lr): void {
    const { beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01 } = this.options
    const checked = pairs("AdamW.step", params, grads) // validate before counting the step
    this.t += 1
    const bc1 = 1 - beta1 ** this.t
    const bc2 = 1 - beta2 ** this.t
    for (const [p, g0] of checked) {
      if (p.size === 0) continue
      let s = this.state.get(p)
      if (s === undefined) {
        s = { m: p.device.zeros(p.shape), v: p.device.zeros(p.shape) }
        this.state.set(p, s)
      }
      const g = g0.isContiguous ? g0 : api.contiguous(g0)
      p.device.run({ kind: "adamw", lr, beta1, beta2, eps, weightDecay, bc1, bc2, p: p.view("adamw"), m: s.m.view("adamw"), v: s.v.view("adamw"), g: g.view("adamw") })
      if (g !== g0) g.dispose()
    }
  }

  dispose(): void {
    for (const { m, v } of this.state.values()) {
      m.dispose()
      v.dispose()
    }
    this.state.clear()
  }
}

export interface SgdOptions {
  readonly lr: number
  readonly momentum?: number
  readonly weightDecay?: number
}

/** SGD with optional momentum and weight decay, as torch.optim.SGD (dampening 0, no Nesterov). */
export class Sgd {
  private readonly buffers = new Map<Tensor, Tensor>()
  constructor(readonly options: SgdOptions) {}

  step(params: ParamTree, grads: ParamTree, lr = this.options.lr): void {
    const { momentum = 0, weightDecay = 0 } = this.options
    for (const [p, g0] of pairs("Sgd.step", params, grads)) {
      if (p.size === 0) continue
      let buf = this.buffers.get(p)
      const first = buf === undefined
      if (buf === undefined) {
        buf = p.device.zeros(p.shape)
        this.buffers.set(p, buf)
      }
      const g = g0.isContiguous ? g0 : api.contiguous(g0)
      p.device.run({ kind: "sgd", lr, momentum, weightDecay, first, p: p.view("sgd"), buf: buf.view("sgd"), g: g.view("sgd") })
      if (g !== g0) g.dispose()
    }
  }

  dispose(): void {
    for (const b of this.buffers.values()) b.dispose()
    this.buffers.clear()
  }
}

/**
 * Scale gradients so their global L2 norm is at most maxNorm (torch.nn.utils.clip_grad_norm_: coefficient
 * maxNorm / (norm + 1e-6), clamped to 1). Stays on the device: no host round-trip. Returns the clipped
 * gradients (new tensors) and the pre-clipping norm.
 */
export function clipGradNorm<P extends ParamTree>(grads: P, maxNorm: number): { grads: P; norm: Tensor } {
  const gs = flattenTree(grads, isTensor)
  if (gs.length === 0) throw new RangeError("clipGradNorm: no gradients")
  return tidy(() => {
    let sq: Tensor = gs[0].device.scalar(0)
    for (const g of gs) sq = api.add(sq, api.sum(api.mul(g, g)))
    const norm = api.sqrt(sq)
    const coef = api.neg(api.maximum(api.neg(api.div(maxNorm, api.add(norm, 1e-6))), -1))
    let i = 0
    const walk = (v: unknown): unknown => {
      if (isTensor(v)) return api.mul(gs[i++], coef)
      if (Array.isArray(v)) return v.map(walk)
      return Object.fromEntries(Object.entries(v as object).map(([k, x]) => [k, walk(x)]))
    }
    return { grads: walk(grads) as P, norm }
  })
}
