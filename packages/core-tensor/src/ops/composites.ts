import type { Tensor } from "../tensor.js"
import type { OpRule } from "./apply.js"
import * as api from "./api.js"

/**
 * Fused composites: one kernel forward, one (or a few) backward, instead of the dozen primitives they would
 * otherwise record. Each rule may assume what api.ts guarantees: contiguous inputs, 2-D row layouts where noted.
 */
export interface CompositeAttrs {
  /** x: [R, D], weight: [D]. */
  rmsNorm: { readonly eps: number }
  /** x: [B, H, T, Dh], cos/sin: [1 or B, T, Dh]. */
  rope: {}
  /** gate, up: same shape. */
  siluMul: {}
  /** x: [R, C], softmax over C. */
  softmax: {}
  /** logits: [N, V], target: [N] int32 → per-row loss [N]. */
  crossEntropy: { readonly ignoreIndex: number }
  /** q: [B, Hq, T, D], k/v: [B, Hkv, Tk, D], optional keyMask [B, Tk] (bool). */
  attention: { readonly causal: boolean; readonly window: number; readonly scale: number; readonly hasKeyMask: boolean }
}

export type CompositeName = keyof CompositeAttrs

function softmaxRows(
  x: Tensor,
  opts: { scale: number; causal: boolean; window: number; tq: number; heads: number; qOffset: number; keyMask: Tensor | null },
): Tensor {
  const out = x.device.empty(x.shape, "float32", "softmax")
  if (out.size > 0)
    x.device.run({
      kind: "softmax",
      ...opts,
      x: x.view("softmax"),
      keyMask: opts.keyMask === null ? null : opts.keyMask.view("softmax"),
      out: out.view("softmax"),
    })
  return out
}

function softmaxRowsBackward(p: Tensor, g: Tensor, scale: number): Tensor {
  const dx = p.device.empty(p.shape, "float32", "softmaxBackward")
  if (dx.size > 0) p.device.run({ kind: "softmaxBackward", scale, p: p.view("softmaxBackward"), g: g.view("softmaxBackward"), dx: dx.view("softmaxBackward") })
  return dx
}

export const composites: { readonly [C in CompositeName]: OpRule<CompositeAttrs[C]> } = {
  rmsNorm: {
    forward: ([x, weight], { eps }) => {
      const out = x.device.empty(x.shape, "float32", "rmsNorm")
      const rstd = x.device.empty([x.shape[0]], "float32", "rmsNorm")
      if (out.size > 0)
        x.device.run({ kind: "rmsNorm", eps, x: x.view("rmsNorm"), weight: weight.view("rmsNorm"), out: out.view("rmsNorm"), rstd: rstd.view("rmsNorm") })
      return { out, saved: [rstd] }
    },
    vjp: (g0, { inputs: [x, weight], saved: [rstd], needs }) => {
      const g = api.contiguous(g0)
      const dx = x.device.empty(x.shape, "float32", "rmsNormBackward")
      if (dx.size > 0)
        x.device.run({
          kind: "rmsNormBackward",
          x: x.view("rmsNormBackward"),
          weight: weight.view("rmsNormBackward"),
          rstd: rstd.view("rmsNormBackward"),
          g: g.view("rmsNormBackward"),
          dx: dx.view("rmsNormBackward"),
        })
      // a frozen norm weight (LoRA training) needs no gradient
      if (!needs[1]) return [dx, null]
      const normed = api.mul(x, api.reshape(rstd, [x.shape[0], 1]))
      return [dx, api.sum(api.mul(g, normed), 0)]
    },
  },

  rope: {
    forward: ([x, cos, sin]) => {
      const out = x.device.empty(x.shape, "float32", "rope")
      if (out.size > 0) x.device.run({ kind: "rope", backward: false, x: x.view("rope"), cos: cos.view("rope"), sin: sin.view("rope"), out: out.view("rope") })
      return out
    },
    // Tables are constants (positions, not parameters): no gradient for cos/sin.
    vjp: (g0, { inputs: [, cos, sin] }) => {
      const g = api.contiguous(g0)
      const dx = g.device.empty(g.shape, "float32", "rope")
      if (dx.size > 0) g.device.run({ kind: "rope", backward: true, x: g.view("rope"), cos: cos.view("rope"), sin: sin.view("rope"), out: dx.view("rope") })
      return [dx, null, null]
    },
  },

  siluMul: {
    forward: ([gate, up]) => {
      const out = gate.device.empty(gate.shape, "float32", "siluMul")
      if (out.size > 0) gate.device.run({ kind: "siluMul", gate: gate.view("siluMul"), up: up.view("siluMul"), out: out.view("siluMul") })
      return out
    },
    vjp: (g0, { inputs: [gate, up] }) => {
      const g = api.contiguous(g0)
      const dGate = gate.device.empty(gate.shape, "float32", "siluMulBackward")
      const dUp = gate.device.empty(gate.shape, "float32", "siluMulBackward")
      if (g.size > 0)
        gate.device.run({
          kind: "siluMulBackward",
          gate: gate.view("siluMulBackward"),
          up: up.view("siluMulBackward"),
          g: g.view("siluMulBackward"),
          dGate: dGate.view("siluMulBackward"),
          dUp: dUp.view("siluMulBackward"),
        })
      return [dGate, dUp]
    },
  },

  softmax: {
    forward: ([x]) => softmaxRows(x, { scale: 1, causal: false, window: 0, tq: 1, heads: 1, qOffset: 0, keyMask: null }),
    vjp: (g, { out }) => [softmaxRowsBackward(out, api.contiguous(g), 1)],
  },

  crossEntropy: {
    forward: ([logits, target], { ignoreIndex }) => {
      const n = logits.shape[0]
      const loss = logits.device.empty([n], "float32", "crossEntropy")
      const lse = logits.device.empty([n], "float32", "crossEntropy")
      if (n > 0)
        logits.device.run({
          kind: "crossEntropy",
          ignoreIndex,
          logits: logits.view("crossEntropy"),
          target: target.view("crossEntropy"),
          loss: loss.view("crossEntropy"),
          lse: lse.view("crossEntropy"),
        })
      return { out: loss, saved: [lse] }
    },
    vjp: (g0, { inputs: [logits, target], saved: [lse], attrs: { ignoreIndex } }) => {
      const g = api.contiguous(g0)
      const dlogits = logits.device.empty(logits.shape, "float32", "crossEntropyBackward")
      if (dlogits.size > 0)
        logits.device.run({
          kind: "crossEntropyBackward",
          ignoreIndex,
          logits: logits.view("crossEntropyBackward"),
          target: target.view("crossEntropyBackward"),
          lse: lse.view("crossEntropyBackward"),
          g: g.view("crossEntropyBackward"),
          dlogits: dlogits.view("crossEntropyBackward"),
        })
      return [dlogits, null]
    },
  },

  /**
   * Grouped-query attention on the fused kernels: forward writes out and the per-row logsumexp (saved instead of
   * the T × Tk probabilities, so memory is O(T), not O(T²)); backward recomputes P from lse inside the kernel and
   * returns dq, dk, dv — dk/dv summed over the G = Hq/Hkv query heads that share a KV head.
   */
  attention: {
    forward: ([q, k, v, keyMask], { causal, window, scale }) => {
      const [b, hq, t] = q.shape
      const out = q.device.empty(q.shape, "float32", "attention")
      const lse = q.device.empty([b, hq, t], "float32", "attention")
      if (out.size > 0)
        q.device.run({
          kind: "attention",
          scale,
          causal,
          window,
          q: q.view("attention"),
          k: k.view("attention"),
          v: v.view("attention"),
          keyMask: keyMask === undefined ? null : keyMask.view("attention"),
          out: out.view("attention"),
          lse: lse.view("attention"),
        })
      return { out, saved: [lse] }
    },
    vjp: (g, { inputs: [q, k, v, keyMask], out, saved: [lse], attrs: { causal, window, scale } }) => {
      const dOut = api.contiguous(g)
      const dq = q.device.empty(q.shape, "float32", "attentionBackward")
      // No queries (T = 0) or an empty head dim: nothing flows; dk/dv are zeros (a kernel never runs with an
      // empty output).
      if (dq.size === 0) return [dq, q.device.zeros(k.shape), q.device.zeros(v.shape), null]
      const dk = q.device.empty(k.shape, "float32", "attentionBackward")
      const dv = q.device.empty(v.shape, "float32", "attentionBackward")
      q.device.run({
        kind: "attentionBackward",
        scale,
        causal,
        window,
        q: q.view("attentionBackward"),
        k: k.view("attentionBackward"),
        v: v.view("attentionBackward"),
        keyMask: keyMask === undefined ? null : keyMask.view("attentionBackward"),
        out: out.view("attentionBackward"),
        lse: lse.view("attentionBackward"),
        dOut: dOut.view("attentionBackward"),
        dq: dq.view("attentionBackward"),
        dk: dk.view("attentionBackward"),
        dv: dv.view("attentionBackward"),
      })
      return [dq, dk, dv, null]
    },
  },
}
