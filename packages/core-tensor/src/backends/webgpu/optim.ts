import type { KernelTable } from "./kernel.js"
import { pointwise } from "./pointwise.js"

/**
 * Optimizer steps, in place: the state views are bound once, read_write (as outputs of the pointwise
 * generator, which indexes them contiguously from their offset). Products of hyper-parameters are formed on the
 * host in double precision and passed as f32, so the shader does no more roundings than necessary.
 */
export const optimKernels = {
  adamw: pointwise<"adamw">({
    inputs: ({ g }) => [["g", g]],
    outputs: ({ p, m, v }) => [
      ["p", p],
      ["m", m],
      ["v", v],
    ],
    extraParams: (c, params) =>
      params
        .f32("lr", c.lr)
        .f32("lr_wd", c.lr * c.weightDecay)
        .f32("beta1", c.beta1)
        .f32("one_minus_beta1", 1 - c.beta1)
        .f32("beta2", c.beta2)
        .f32("one_minus_beta2", 1 - c.beta2)
        .f32("eps", c.eps)
        .f32("bc1", c.bc1)
        .f32("bc2", c.bc2),
    body: () => `  let gv = g_buf[g_i];
  let decayed = p_buf[p_i] - lr_wd * p_buf[p_i];
  let mv = beta1 * m_buf[m_i] + one_minus_beta1 * gv;
  let vv = beta2 * v_buf[v_i] + one_minus_beta2 * gv * gv;
  m_buf[m_i] = mv;
  v_buf[v_i] = vv;
  p_buf[p_i] = decayed - lr * (mv / bc1) / (sqrt(vv / bc2) + eps);`,
  }),
  sgd: pointwise<"sgd">({
    inputs: ({ g }) => [["g", g]],
    outputs: ({ p, buf }) => [
      ["p", p],
      ["buf", buf],
    ],
    extraParams: (c, params) => params.f32("lr", c.lr).f32("momentum", c.momentum).f32("wd", c.weightDecay),
    // `first` is static (part of the key): the first step has no momentum buffer to read.
    body: ({ first }) => `  let pv = p_buf[p_i];
  let d = g_buf[g_i] + wd * pv;
  let b = ${first ? "d" : "momentum * buf_buf[buf_i] + d"};
  buf_buf[buf_i] = b;
  p_buf[p_i] = pv - lr * select(d, b, momentum > 0.0);`,
  }),
} satisfies KernelTable<"adamw" | "sgd">
