import type { KernelOf, View } from "../../backend.js"
import type { KernelTable } from "./kernel.js"
import { pointwise } from "./pointwise.js"
import { rowKernel, rowLoop } from "./row-kernel.js"
import { input, NEG_INF, output } from "./wgsl-helpers.js"

/**
 * Fused kernels of the transformer layer: rmsNorm, softmax and cross-entropy (one workgroup per row with a
 * shared-memory reduction) and their gradients, plus rotary embeddings. Every exp subtracts the row max first.
 * Inputs are read through their strides and offsets although the contract makes them contiguous — it is free.
 */

/** Element (row, j) of a 2-D view `name`, and element i of a 1-D view. */
const at2 = (name: string, col: string) => `${name}_buf[${name}_off + row * ${name}_st0 + ${col} * ${name}_st1]`
const at1 = (name: string, i: string) => `${name}_buf[${name}_off + ${i} * ${name}_st0]`

/** A view of an [R]-shaped tensor broadcast along a new last axis of length C (stride 0). */
const broadcastRow = (v: View, columns: number): View => ({ ...v, shape: [v.shape[0], columns], strides: [v.strides[0], 0] })

const rmsNorm = rowKernel<"rmsNorm">({
  bindings: ({ x, weight, out, rstd }) => [input("x", x), input("weight", weight), output("out", out), output("rstd", rstd)],
  rows: ({ x }) => x.shape[0],
  params: ({ eps, x, weight, out, rstd }, p) =>
    p.u32("D", x.shape[1]).f32("eps", eps).view("x", x).view("weight", weight).view("out", out).view("rstd", rstd),
  body: () => `  var ss = 0.0;
  ${rowLoop("d", "D")} { let v = ${at2("x", "d")}; ss = ss + v * v; }
  let rs = 1.0 / sqrt(wg_sum(ss, li) / f32(D) + eps);
  if (li == 0u) { ${at1("rstd", "row")} = rs; }
  ${rowLoop("d", "D")} { ${at2("out", "d")} = ${at1("weight", "d")} * (${at2("x", "d")} * rs); }`,
})

const rmsNormBackward = rowKernel<"rmsNormBackward">({
  bindings: ({ x, weight, rstd, g, dx }) => [input("x", x), input("weight", weight), input("rstd", rstd), input("g", g), output("dx", dx)],
  rows: ({ x }) => x.shape[0],
  params: ({ x, weight, rstd, g, dx }, p) =>
    p.u32("D", x.shape[1]).view("x", x).view("weight", weight).view("rstd", rstd).view("g", g).view("dx", dx),
  body: () => `  let rs = ${at1("rstd", "row")};
  var dot_sum = 0.0;
  ${rowLoop("d", "D")} { dot_sum = dot_sum + ${at2("g", "d")} * ${at1("weight", "d")} * ${at2("x", "d")} * rs; }
  let mean = wg_sum(dot_sum, li) / f32(D);
  ${rowLoop("d", "D")} {
    let h = ${at2("x", "d")} * rs;
    let gw = ${at2("g", "d")} * ${at1("weight", "d")};
    ${at2("dx", "d")} = rs * (gw - h * mean);
  }`,
})

/** The attention mask of `softmax` as a WGSL boolean of key `j` (i32); `causal` and the keyMask's presence are
 *  static, the window is a parameter (0 = none). */
function allowedExpr({ causal, keyMask }: KernelOf<"softmax">): string {
  const terms = ["(window == 0i || j > qpos - window)"]
  if (causal) terms.push("j <= qpos")
  if (keyMask !== null) terms.push(`keyMask_buf[keyMask_off + batch * keyMask_st0 + u32(j) * keyMask_st1] != 0u`)
  return terms.join(" && ")
}

const softmax = rowKernel<"softmax">({
  bindings: ({ x, keyMask, out }) => [input("x", x), ...(keyMask === null ? [] : [input("keyMask", keyMask)]), output("out", out)],
  rows: ({ x }) => x.shape[0],
  params: (call, p) => {
    const { x, out, keyMask } = call
    // tq and heads only matter for masks; clamp to 1 so that a plain softmax that passes 0 divides safely.
    p.u32("C", x.shape[1]).f32("scale", call.scale).i32("window", call.window).u32("tq", Math.max(1, call.tq))
    p.u32("heads", Math.max(1, call.heads)).i32("q_offset", call.qOffset).view("x", x).view("out", out)
    if (keyMask !== null) p.view("keyMask", keyMask)
  },
  // `has_key` tracks whether the row has an allowed key at all (a max of −∞ alone cannot tell "none allowed",
  // which must give zeros, from "all allowed logits are −∞", which gives NaN like the formula does).
  body: (call) => `  let qpos = i32(row % tq) + q_offset;
  let batch = row / (heads * tq);
  var mx = ${NEG_INF};
  var has_key = 0.0;
  ${rowLoop("c", "C")} {
    let j = i32(c);
    if (${allowedExpr(call)}) { mx = max(mx, ${at2("x", "c")} * scale); has_key = 1.0; }
  }
  mx = wg_max(mx, li);
  let empty = wg_max(has_key, li) == 0.0;
  var sum = 0.0;
  ${rowLoop("c", "C")} {
    let j = i32(c);
    if (${allowedExpr(call)}) { sum = sum + exp(${at2("x", "c")} * scale - mx); }
  }
  sum = wg_sum(sum, li);
  ${rowLoop("c", "C")} {
    let j = i32(c);
    var p = 0.0;
    if (!empty && ${allowedExpr(call)}) { p = exp(${at2("x", "c")} * scale - mx) / sum; }
    ${at2("out", "c")} = p;
  }`,
})

const softmaxBackward = rowKernel<"softmaxBackward">({
  bindings: ({ p, g, dx }) => [input("p", p), input("g", g), output("dx", dx)],
  rows: ({ p }) => p.shape[0],
  params: ({ scale, p, g, dx }, params) => params.u32("C", p.shape[1]).f32("scale", scale).view("p", p).view("g", g).view("dx", dx),
  body: () => `  var dot_sum = 0.0;
  ${rowLoop("c", "C")} { dot_sum = dot_sum + ${at2("g", "c")} * ${at2("p", "c")}; }
  let dot_total = wg_sum(dot_sum, li);
  ${rowLoop("c", "C")} { ${at2("dx", "c")} = ${at2("p", "c")} * (${at2("g", "c")} - dot_total) * scale; }`,
})

/** Whether target t (i32) takes part in the loss: not ignoreIndex and inside [0, V). */
const TARGET_USED = "(t != ignore_index && t >= 0i && u32(t) < V)"

const crossEntropy = rowKernel<"crossEntropy">({
  bindings: ({ logits, target, loss, lse }) => [input("logits", logits), input("target", target), output("loss", loss), output("lse", lse)],
  rows: ({ logits }) => logits.shape[0],
  params: ({ ignoreIndex, logits, target, loss, lse }, p) =>
    p.u32("V", logits.shape[1]).i32("ignore_index", ignoreIndex).view("logits", logits).view("target", target).view("loss", loss).view("lse", lse),
  body: () => `  var mx = ${NEG_INF};
  ${rowLoop("v", "V")} { mx = max(mx, ${at2("logits", "v")}); }
  mx = wg_max(mx, li);
  var sum = 0.0;
  ${rowLoop("v", "V")} { sum = sum + exp(${at2("logits", "v")} - mx); }
  let row_lse = mx + log(wg_sum(sum, li));
  if (li == 0u) {
    let t = ${at1("target", "row")};
    var l = 0.0;
    if ${TARGET_USED} { l = row_lse - ${at2("logits", "u32(t)")}; }
    ${at1("loss", "row")} = l;
    ${at1("lse", "row")} = row_lse;
  }`,
})

/** Per element of [N, V]; target, lse and g are [N] views broadcast along V (stride 0), `c1` is v. A target
 *  outside [0, V) is treated like ignoreIndex (its loss is the constant 0, so its gradient is 0). */
const crossEntropyBackward = pointwise<"crossEntropyBackward">({
  inputs: ({ logits, target, lse, g }) => {
    const columns = logits.shape[1]
    return [
      ["logits", logits],
      ["target", broadcastRow(target, columns)],
      ["lse", broadcastRow(lse, columns)],
      ["g", broadcastRow(g, columns)],
    ]
  },
  outputs: ({ dlogits }) => [["dlogits", dlogits]],
  extraParams: ({ ignoreIndex }, p) => p.i32("ignore_index", ignoreIndex),
  body: () => `  let V = out_sh1;
  let t = target_buf[target_i];
  var r = 0.0;
  if ${TARGET_USED} {
    r = g_buf[g_i] * (exp(logits_buf[logits_i] - lse_buf[lse_i]) - select(0.0, 1.0, u32(t) == c1));
  }
  dlogits_buf[dlogits_i] = r;`,
})

/** cos/sin [Bc, T, Dh] seen as [B, H, T, Dh]: stride 0 over heads, and over the batch when Bc = 1. A rank-2
 *  [T, Dh] table is accepted as Bc = 1, as the CPU backend does. */
function broadcastRope(table: View, x: View): View {
  const [st, sd] = table.strides.slice(-2)
  const batchStride = table.shape.length === 3 && table.shape[0] !== 1 ? table.strides[0] : 0
  return { ...table, shape: x.shape, strides: [batchStride, 0, st, sd] }
}

/** Rotate-half rotary embedding; `c3` is the position d inside the head, the partner is d ± half. */
const rope = pointwise<"rope">({
  inputs: ({ x, cos, sin }) => [
    ["x", x],
    ["cos", broadcastRope(cos, x)],
    ["sin", broadcastRope(sin, x)],
  ],
  outputs: ({ out }) => [["out", out]],
  body: ({ backward }) => `  let half = out_sh3 / 2u;
  let low = c3 < half;
  let partner = select(x_i - half * x_st3, x_i + half * x_st3, low);
  ${
    backward
      ? `let sin_partner = select(sin_i - half * sin_st3, sin_i + half * sin_st3, low);
  let rotated = select(-1.0, 1.0, low) * x_buf[partner] * sin_buf[sin_partner];`
      : `let rotated = select(1.0, -1.0, low) * x_buf[partner] * sin_buf[sin_i];`
  }
  out_buf[out_i] = x_buf[x_i] * cos_buf[cos_i] + rotated;`,
})

export const compositeKernels = {
  rmsNorm,
  rmsNormBackward,
  softmax,
  softmaxBackward,
  crossEntropy,
  crossEntropyBackward,
  rope,
} satisfies KernelTable<"rmsNorm" | "rmsNormBackward" | "softmax" | "softmaxBackward" | "crossEntropy" | "crossEntropyBackward" | "rope">
