import type { KernelOf, View } from "../../backend.js"
import type { KernelContext, KernelPass, KernelTable, ScratchAlloc } from "./kernel.js"
import { type Binding, input, MAX_GROUPS_PER_DIM, NEG_INF, output, ParamList } from "./wgsl-helpers.js"

/**
 * Fused attention (flash-attention 2 style): the T × Tk score matrix never exists in memory.
 *
 * Forward — one workgroup per (block of BR queries, query head, batch). Q's block is staged in workgroup memory
 * once; the workgroup then walks the key blocks the mask can reach (causal / sliding window bound the range, so
 * fully masked blocks are skipped), BC keys at a time:
 *   1. K_j, V_j → workgroup memory (vec4 rows padded by one vec4 against bank conflicts);
 *   2. S = scale · Q K_jᵀ, each thread a register tile of SR × SC scores, masked to −∞ (the `softmax` kernel's
 *      rule), written to workgroup memory;
 *   3. one thread per query row updates the running max m and sum l (online softmax) and turns its scores into
 *      p = exp(s − m_new), recording the correction α = exp(m_old − m_new);
 *   4. O ← α·O + P V_j, each thread a register tile of OR rows × OC vec4 columns.
 * At the end out = O / l and lse = m + log l (−∞ and zeros for a row without any allowed key).
 *
 * Backward — two passes, no float atomics, P recomputed from the saved lse:
 *   1. per (query block, query head, batch): δ = rowsum(dO ∘ out) (written to a scratch buffer), then over the
 *      reachable key blocks P = exp(S − lse), dP = dO Vᵀ, dS = P ∘ (dP − δ) · scale, dQ += dS K;
 *   2. per (key block, KV head, batch): over the G query heads of the group and their reachable query blocks,
 *      the same P and dS, dV += Pᵀ dO and dK += dSᵀ Q — the group's sum happens in registers.
 *
 * Block sizes (BR, BC) and threads come from the head dim and the device's workgroup memory: the largest of a
 * short list that fits (64×32 needs ~44 KB at D = 64, e.g. an NVIDIA GPU's 48 KB; lavapipe's 32 KB gets 32×32
 * forward, 16×32 backward). The head dim is compiled in (variant "d64"), shapes are uniforms. Inputs are
 * contiguous by contract, so a view is its offset; with D % 4 = 0 and 4-aligned offsets they are read and
 * written as vec4.
 */

type AttentionCall = KernelOf<"attention">
type BackwardCall = KernelOf<"attentionBackward">

interface Config {
  readonly D: number
  /** vec4s per row (D rounded up to 4) and the padded row stride in workgroup memory. */
  readonly DQ: number
  readonly ROW: number
  readonly BR: number
  readonly BC: number
  readonly threads: number
  readonly vec: boolean
  /** Compile-time loop bounds (WebGpuTuning.attention.unroll); otherwise the uniforms n_dq, n_br, n_bc. */
  readonly unroll: boolean
}

/** A loop bound: the constant, or the uniform that holds it. */
const lim = (c: Config, which: "n_dq" | "n_br" | "n_bc") => (c.unroll ? `${which === "n_dq" ? c.DQ : which === "n_br" ? c.BR : c.BC}u` : which)

/** A thread grid over an R × C problem (C in units: keys or vec4s): tc threads along C, tr along R, each thread
 *  owning R/tr × C/tc interleaved cells. Threads beyond tr·tc sit the phase out. */
interface Mapping {
  readonly tr: number
  readonly tc: number
  readonly per_r: number
  readonly per_c: number
}

function mapping(R: number, C: number, threads: number): Mapping {
  // Powers of two tc dividing C and tr dividing R with tr·tc ≤ threads: use as many threads as possible, then
  // the squarest per-thread tile (fewest loads per multiply-add), then more threads along C.
  let best: Mapping | null = null
  const score = (m: Mapping) => [m.tr * m.tc, -Math.abs(Math.log2(m.per_r / m.per_c)), m.tc]
  for (let tc = 1; tc <= threads && C % tc === 0; tc *= 2)
    for (let tr = 1; tr * tc <= threads && R % tr === 0; tr *= 2) {
      const m = { tr, tc, per_r: R / tr, per_c: C / tc }
      if (best === null) best = m
      else {
        const [a, b] = [score(m), score(best)]
        const better = a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] > b[2]
        if (better) best = m
      }
    }
  return best!
}

type Kind = "forward" | "dq" | "dkdv"

/** Floats of workgroup memory a kernel needs (tiles as vec4 rows, score tiles padded by one column). */
function sharedFloats(kind: Kind, BR: number, BC: number, ROW: number): number {
  const tiles = kind === "forward" ? BR + 2 * BC : 2 * BR + 2 * BC
  const scoreTiles = kind === "dkdv" ? 2 : 1
  return tiles * ROW * 4 + scoreTiles * BR * (BC + 1) + 3 * BR
}

function chooseConfig(kind: Kind, D: number, vec: boolean, ctx: KernelContext): Config {
  const DQ = Math.ceil(D / 4)
  const ROW = DQ + 1
  for (const [BR, BC] of [...ctx.tuning.attention.blocks, [4, 8] as const]) {
    if (sharedFloats(kind, BR, BC, ROW) * 4 > ctx.workgroupStorage) continue
    const threads = Math.min(ctx.tuning.attention.threads, BR * BC, ctx.maxInvocations)
    return { D, DQ, ROW, BR, BC, threads, vec, unroll: ctx.tuning.attention.unroll }
  }
  throw new RangeError(`webgpu attention: head dim ${D} needs more workgroup memory than this device's ${ctx.workgroupStorage} bytes`)
}

const variantName = (kind: Kind, c: Config) => `${kind} d${c.D} ${c.BR}x${c.BC} t${c.threads}${c.vec ? " vec4" : ""}${c.unroll ? "" : " rt"}`

/** The block sizes as uniforms, for the loops of a non-unrolled variant. */
const blockParams = (p: ParamList, c: Config) => p.u32("n_dq", c.DQ).u32("n_br", c.BR).u32("n_bc", c.BC)

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

// ---- shared WGSL pieces -----------------------------------------------------------------------------------------

/** Geometry uniforms shared by all three kernels. */
function geometryParams(p: ParamList, q: View, k: View, call: { scale: number; window: number }): void {
  const [B, Hq, T, D] = q.shape
  const [, Hkv, Tk] = k.shape
  p.u32("B", B).u32("Hq", Hq).u32("Hkv", Hkv).u32("T", T).u32("Tk", Tk).u32("D", D)
  p.f32("scale", call.scale).i32("window", call.window).i32("q_off", Tk - T)
}

/**
 * Stage rows [row0, row0 + rows) of a [.., len, D] operand (base element `base`, `len` valid rows) into the
 * workgroup tile `tile` (rows × ROW vec4s), zero-filling rows ≥ len and the D padding.
 */
function stageRows(c: Config, tile: string, buf: string, base: string, row0: string, rows: number, len: string): string {
  const n = rows * c.DQ
  const read = c.vec
    ? `${buf}[(${base} + row * D) / 4u + dq]`
    : `vec4<f32>(${range(4)
        .map((i) => `select(0.0, ${buf}[${base} + row * D + dq * 4u + ${i}u], dq * 4u + ${i}u < D)`)
        .join(", ")})`
  return `    for (var e = li; e < ${n}u; e = e + ${c.threads}u) {
      let rr = e / ${c.DQ}u;
      let dq = e % ${c.DQ}u;
      let row = ${row0} + rr;
      var val = vec4<f32>(0.0);
      if (row < ${len}) { val = ${read}; }
      ${tile}[rr * ${c.ROW}u + dq] = val;
    }`
}

/** The mask test for query row `qrow` (absolute t) and key `key` (absolute j), as the softmax kernel's. */
function allowed(causal: boolean, hasMask: boolean): string {
  const terms = ["key < Tk", "(window == 0i || i32(key) > qpos - window)"]
  if (causal) terms.push("i32(key) <= qpos")
  if (hasMask) terms.push("keyMask_buf[keyMask_off + b * Tk + key] != 0u")
  return terms.join(" && ")
}

/** (i, j) over a mapping's per-thread cells, as unrolled lines: private arrays indexed in loops become
 *  indirect addressing on lavapipe (slow to compile and to run), so every cell is its own variable. */
const cells = (m: Mapping, line: (i: number, j: number) => string) => range(m.per_r).flatMap((i) => range(m.per_c).map((j) => line(i, j)))

/**
 * Per-thread score tiles: `${name}_i_j` = Σ_d lhs_row(r_i) · rhs_row(c_j) over the head dim, for the interleaved
 * rows r_i = sty + i·tr and columns c_j = stx + j·tc of mapping m. `pairs` lists (name, lhs, rhs).
 */
function scoreTiles(c: Config, m: Mapping, pairs: ReadonlyArray<readonly [string, string, string]>): string {
  const decl = pairs.flatMap(([name]) => cells(m, (i, j) => `      var ${name}_${i}_${j} = 0.0;`)).join("\n")
  const loop = pairs
    .map(([name, lhs, rhs]) =>
      [
        ...range(m.per_r).map((i) => `          let ${name}_l${i} = ${lhs}[(sty + ${i * m.tr}u) * ${c.ROW}u + d4];`),
        ...range(m.per_c).map((j) => `          let ${name}_r${j} = ${rhs}[(stx + ${j * m.tc}u) * ${c.ROW}u + d4];`),
        ...cells(m, (i, j) => `          ${name}_${i}_${j} = ${name}_${i}_${j} + dot(${name}_l${i}, ${name}_r${j});`),
      ].join("\n"),
    )
    .join("\n")
  return `${decl}
      if (s_active) {
        for (var d4 = 0u; d4 < ${lim(c, "n_dq")}; d4 = d4 + 1u) {
${loop}
        }
      }`
}

/** Workgroup-memory declarations for named vec4 tiles and f32 arrays. */
const tileDecl = (name: string, rows: number, c: Config) => `var<workgroup> ${name}: array<vec4<f32>, ${rows * c.ROW}>;`
const rowDecl = (name: string, n: number) => `var<workgroup> ${name}: array<f32, ${n}>;`

/** Thread coordinates for the score mapping (stx, sty, s_active) and the accumulator mapping (otx, oty, o_active). */
function threadCoords(s: Mapping, o: Mapping): string {
  return `  let stx = li % ${s.tc}u;
  let sty = li / ${s.tc}u;
  let s_active = li < ${s.tr * s.tc}u;
  let otx = li % ${o.tc}u;
  let oty = li / ${o.tc}u;
  let o_active = li < ${o.tr * o.tc}u;`
}

/** Declare the accumulator cells `${acc}_i_j` (vec4) of mapping o, zeroed. */
const declareAcc = (o: Mapping, acc: string, indent: string) => cells(o, (i, j) => `${indent}var ${acc}_${i}_${j} = vec4<f32>(0.0);`).join("\n")

/** acc_i_j += Σ_x weight(row_i, x) · tile[x][col_j] — the P V, dS K, Pᵀ dO and dSᵀ Q products. */
function accumulate(c: Config, o: Mapping, acc: string, count: string, weight: (row: string, x: string) => string, tile: string): string {
  return `      if (o_active) {
        for (var x = 0u; x < ${count}; x = x + 1u) {
${range(o.per_r)
  .map((i) => `          let w${i} = ${weight(`(oty + ${i * o.tr}u)`, "x")};`)
  .join("\n")}
${range(o.per_c)
  .map((j) => `          let t${j} = ${tile}[x * ${c.ROW}u + otx + ${j * o.tc}u];`)
  .join("\n")}
${cells(o, (i, j) => `          ${acc}_${i}_${j} = fma(vec4<f32>(w${i}), t${j}, ${acc}_${i}_${j});`).join("\n")}
        }
      }`
}

/** Write the accumulator cells (rows row0 + r < len) into [.., len, D] at base `base`, times `factor(r)`. */
function writeRows(c: Config, o: Mapping, acc: string, buf: string, base: string, row0: string, len: string, factor: (r: string) => string): string {
  const store = (j: number, val: string) => {
    const dq = `(otx + ${j * o.tc}u)`
    return c.vec
      ? `${buf}[(${base} + row * D) / 4u + ${dq}] = ${val};`
      : range(4)
          .map((x) => `if (${dq} * 4u + ${x}u < D) { ${buf}[${base} + row * D + ${dq} * 4u + ${x}u] = ${val}[${x}]; }`)
          .join(" ")
  }
  return `  if (o_active) {
${range(o.per_r)
  .map(
    (i) => `    {
      let rr = oty + ${i * o.tr}u;
      let row = ${row0} + rr;
      if (row < ${len}) {
        let f = ${factor("rr")};
${range(o.per_c)
  .map((j) => `        ${store(j, `(${acc}_${i}_${j} * f)`)}`)
  .join("\n")}
      }
    }`,
  )
  .join("\n")}
  }`
}

const vecType = (c: Config) => (c.vec ? "vec4<f32>" : "f32")

/** The query-block loop: workgroups stride over blocks of BR rows; y = head, z = batch. */
function checkGrid(y: number, z: number): void {
  if (y > MAX_GROUPS_PER_DIM || z > MAX_GROUPS_PER_DIM) throw new RangeError(`webgpu attention: ${y} heads × ${z} batches exceed the 65535 grid`)
}

// ---- forward ------------------------------------------------------------------------------------------------------

function forwardShader(call: AttentionCall, c: Config) {
  const s = mapping(c.BR, c.BC, c.threads)
  const o = mapping(c.BR, c.DQ, c.threads)
  const decls = [
    tileDecl("q_sh", c.BR, c),
    tileDecl("k_sh", c.BC, c),
    tileDecl("v_sh", c.BC, c),
    rowDecl("p_sh", c.BR * (c.BC + 1)),
    rowDecl("m_sh", c.BR),
    rowDecl("l_sh", c.BR),
    rowDecl("alpha_sh", c.BR),
  ].join("\n")
  const body = `${threadCoords(s, o)}
  let h = wid.y;
  let b = wid.z;
  let group = Hq / Hkv;
  let hk = h / group;
  let q_base = q_off_e + ((b * Hq + h) * T) * D;
  let kv_row0 = ((b * Hkv + hk) * Tk) * D;
  let n_qb = (T + ${c.BR - 1}u) / ${c.BR}u;
  for (var qb = wid.x; qb < n_qb; qb = qb + nwg.x) {
    let q0 = qb * ${c.BR}u;
    workgroupBarrier();
${stageRows(c, "q_sh", "q_buf", "q_base", "q0", c.BR, "T")}
    for (var r = li; r < ${c.BR}u; r = r + ${c.threads}u) { m_sh[r] = ${NEG_INF}; l_sh[r] = 0.0; }
${declareAcc(o, "acc", "    ")}
    // Keys the block's queries can reach: positions q0 + q_off … q0 + BR − 1 + q_off.
    let first_pos = i32(q0) + q_off;
    let last_pos = i32(min(q0 + ${c.BR - 1}u, T - 1u)) + q_off;
    var k_hi = i32(Tk);
    ${call.causal ? "k_hi = min(k_hi, last_pos + 1);" : ""}
    var k_lo = 0i;
    if (window > 0i) { k_lo = max(0i, first_pos - window + 1); }
    k_lo = (k_lo / ${c.BC}i) * ${c.BC}i;
    for (var k0i = k_lo; k0i < k_hi; k0i = k0i + ${c.BC}i) {
      let k0 = u32(k0i);
      workgroupBarrier();
${stageRows(c, "k_sh", "k_buf", "k_off_e + kv_row0", "k0", c.BC, "Tk")}
${stageRows(c, "v_sh", "v_buf", "v_off_e + kv_row0", "k0", c.BC, "Tk")}
      workgroupBarrier();
${scoreTiles(c, s, [["sc", "q_sh", "k_sh"]])}
      if (s_active) {
${cells(
  s,
  (i, j) => `        {
          let rr = sty + ${i * s.tr}u;
          let qpos = i32(q0 + rr) + q_off;
          let cc = stx + ${j * s.tc}u;
          let key = k0 + cc;
          var val = ${NEG_INF};
          if (${allowed(call.causal, call.keyMask !== null)}) { val = sc_${i}_${j} * scale; }
          p_sh[rr * ${c.BC + 1}u + cc] = val;
        }`,
).join("\n")}
      }
      workgroupBarrier();
      // Online softmax, one thread per query row.
      for (var r = li; r < ${c.BR}u; r = r + ${c.threads}u) {
        let m_old = m_sh[r];
        var mx = m_old;
        for (var cc = 0u; cc < ${lim(c, "n_bc")}; cc = cc + 1u) { mx = max(mx, p_sh[r * ${c.BC + 1}u + cc]); }
        var alpha = 1.0;
        var sum = 0.0;
        if (mx != ${NEG_INF}) {
          alpha = exp(m_old - mx);
          for (var cc = 0u; cc < ${lim(c, "n_bc")}; cc = cc + 1u) {
            let sv = p_sh[r * ${c.BC + 1}u + cc];
            var p = 0.0;
            if (sv != ${NEG_INF}) { p = exp(sv - mx); }
            p_sh[r * ${c.BC + 1}u + cc] = p;
            sum = sum + p;
          }
        } else {
          for (var cc = 0u; cc < ${lim(c, "n_bc")}; cc = cc + 1u) { p_sh[r * ${c.BC + 1}u + cc] = 0.0; }
        }
        m_sh[r] = mx;
        l_sh[r] = l_sh[r] * alpha + sum;
        alpha_sh[r] = alpha;
      }
      workgroupBarrier();
      if (o_active) {
${range(o.per_r)
  .map((i) => `        let a${i} = alpha_sh[oty + ${i * o.tr}u];`)
  .join("\n")}
${cells(o, (i, j) => `        acc_${i}_${j} = acc_${i}_${j} * a${i};`).join("\n")}
      }
${accumulate(c, o, "acc", lim(c, "n_bc"), (row, x) => `p_sh[${row} * ${c.BC + 1}u + ${x}]`, "v_sh")}
    }
    workgroupBarrier();
${writeRows(c, o, "acc", "out_buf", "out_off_e + ((b * Hq + h) * T) * D", "q0", "T", (r) => `select(0.0, 1.0 / l_sh[${r}], l_sh[${r}] > 0.0)`)}
    for (var r = li; r < ${c.BR}u; r = r + ${c.threads}u) {
      if (q0 + r < T) {
        var v = ${NEG_INF};
        if (l_sh[r] > 0.0) { v = m_sh[r] + log(l_sh[r]); }
        lse_buf[lse_off + (b * Hq + h) * T + q0 + r] = v;
      }
    }
  }`
  return { workgroupSize: [c.threads, 1, 1] as const, decls, body }
}

/** Bindings and uniforms of q, k, v (and more) by offsets: contiguous operands. */
function offsets(p: ParamList, views: ReadonlyArray<readonly [string, View]>): void {
  for (const [name, v] of views) p.u32(`${name}_off_e`, v.offset)
}

function forwardPlan(call: AttentionCall, ctx: KernelContext): KernelPass[] {
  const [B, Hq, T, D] = call.q.shape
  const views: Array<readonly [string, View]> = [
    ["q", call.q],
    ["k", call.k],
    ["v", call.v],
    ["out", call.out],
  ]
  const vec = D % 4 === 0 && views.every(([, v]) => v.offset % 4 === 0)
  const c = chooseConfig("forward", D, vec, ctx)
  checkGrid(Hq, B)
  const p = new ParamList()
  geometryParams(p, call.q, call.k, call)
  offsets(p, views)
  p.u32("lse_off", call.lse.offset)
  if (call.keyMask !== null) p.u32("keyMask_off", call.keyMask.offset)
  blockParams(p, c)
  const t = vecType(c)
  const bindings: Binding[] = [
    { ...input("q", call.q), type: t },
    { ...input("k", call.k), type: t },
    { ...input("v", call.v), type: t },
    ...(call.keyMask === null ? [] : [input("keyMask", call.keyMask)]),
    { ...output("out", call.out), type: t },
    output("lse", call.lse),
  ]
  const grid = [Math.min(Math.ceil(T / c.BR), MAX_GROUPS_PER_DIM), Hq, B] as const
  return [{ variant: variantName("forward", c), bindings, params: p, grid, shader: () => forwardShader(call, c) }]
}

// ---- backward -----------------------------------------------------------------------------------------------------

/** P and dS for a score tile: p = exp(s·scale − lse) on allowed keys, ds = p · (dp − δ) · scale. */
function probabilities(causal: boolean, hasMask: boolean, s: Mapping, c: Config, rowOf: string, keyOf: string, targetP: string | null, targetDs: string): string {
  return `      if (s_active) {
${cells(
  s,
  (i, j) => `        {
          let rr = sty + ${i * s.tr}u;
          let qpos = i32(${rowOf}) + q_off;
          let row_lse = lse_sh[rr];
          let cc = stx + ${j * s.tc}u;
          let key = ${keyOf};
          var p = 0.0;
          if (row_lse != ${NEG_INF} && ${allowed(causal, hasMask)}) { p = exp(sc_${i}_${j} * scale - row_lse); }
          ${targetP === null ? "" : `${targetP}[rr * ${c.BC + 1}u + cc] = p;`}
          ${targetDs}[rr * ${c.BC + 1}u + cc] = p * (dp_${i}_${j} - delta_sh[rr]) * scale;
        }`,
).join("\n")}
      }`
}

function dqShader(call: BackwardCall, c: Config) {
  const s = mapping(c.BR, c.BC, c.threads)
  const o = mapping(c.BR, c.DQ, c.threads)
  const decls = [
    tileDecl("q_sh", c.BR, c),
    tileDecl("do_sh", c.BR, c),
    tileDecl("k_sh", c.BC, c),
    tileDecl("v_sh", c.BC, c),
    rowDecl("ds_sh", c.BR * (c.BC + 1)),
    rowDecl("lse_sh", c.BR),
    rowDecl("delta_sh", c.BR),
  ].join("\n")
  const odot = c.vec
    ? `dot(out_buf[(o_base + row * D) / 4u + d4], do_sh[r * ${c.ROW}u + d4])`
    : `dot(vec4<f32>(${range(4)
        .map((i) => `select(0.0, out_buf[o_base + row * D + d4 * 4u + ${i}u], d4 * 4u + ${i}u < D)`)
        .join(", ")}), do_sh[r * ${c.ROW}u + d4])`
  const body = `${threadCoords(s, o)}
  let h = wid.y;
  let b = wid.z;
  let group = Hq / Hkv;
  let hk = h / group;
  let q_base = q_off_e + ((b * Hq + h) * T) * D;
  let g_base = dOut_off_e + ((b * Hq + h) * T) * D;
  let o_base = out_off_e + ((b * Hq + h) * T) * D;
  let kv_row0 = ((b * Hkv + hk) * Tk) * D;
  let n_qb = (T + ${c.BR - 1}u) / ${c.BR}u;
  for (var qb = wid.x; qb < n_qb; qb = qb + nwg.x) {
    let q0 = qb * ${c.BR}u;
    workgroupBarrier();
${stageRows(c, "q_sh", "q_buf", "q_base", "q0", c.BR, "T")}
${stageRows(c, "do_sh", "dOut_buf", "g_base", "q0", c.BR, "T")}
    workgroupBarrier();
    for (var r = li; r < ${c.BR}u; r = r + ${c.threads}u) {
      let row = q0 + r;
      var dl = 0.0;
      var l = ${NEG_INF};
      if (row < T) {
        for (var d4 = 0u; d4 < ${lim(c, "n_dq")}; d4 = d4 + 1u) { dl = dl + ${odot}; }
        l = lse_buf[lse_off + (b * Hq + h) * T + row];
        delta_buf[(b * Hq + h) * T + row] = dl;
      }
      delta_sh[r] = dl;
      lse_sh[r] = l;
    }
${declareAcc(o, "acc", "    ")}
    let first_pos = i32(q0) + q_off;
    let last_pos = i32(min(q0 + ${c.BR - 1}u, T - 1u)) + q_off;
    var k_hi = i32(Tk);
    ${call.causal ? "k_hi = min(k_hi, last_pos + 1);" : ""}
    var k_lo = 0i;
    if (window > 0i) { k_lo = max(0i, first_pos - window + 1); }
    k_lo = (k_lo / ${c.BC}i) * ${c.BC}i;
    for (var k0i = k_lo; k0i < k_hi; k0i = k0i + ${c.BC}i) {
      let k0 = u32(k0i);
      workgroupBarrier();
${stageRows(c, "k_sh", "k_buf", "k_off_e + kv_row0", "k0", c.BC, "Tk")}
${stageRows(c, "v_sh", "v_buf", "v_off_e + kv_row0", "k0", c.BC, "Tk")}
      workgroupBarrier();
${scoreTiles(c, s, [
  ["sc", "q_sh", "k_sh"],
  ["dp", "do_sh", "v_sh"],
])}
${probabilities(call.causal, call.keyMask !== null, s, c, "q0 + rr", "k0 + cc", null, "ds_sh")}
      workgroupBarrier();
${accumulate(c, o, "acc", lim(c, "n_bc"), (row, x) => `ds_sh[${row} * ${c.BC + 1}u + ${x}]`, "k_sh")}
    }
${writeRows(c, o, "acc", "dq_buf", "dq_off_e + ((b * Hq + h) * T) * D", "q0", "T", () => "1.0")}
  }`
  return { workgroupSize: [c.threads, 1, 1] as const, decls, body }
}

function dkdvShader(call: BackwardCall, c: Config) {
  const s = mapping(c.BR, c.BC, c.threads)
  // Accumulators: BC key rows × DQ vec4 columns, for dK and dV.
  const o = mapping(c.BC, c.DQ, c.threads)
  const decls = [
    tileDecl("q_sh", c.BR, c),
    tileDecl("do_sh", c.BR, c),
    tileDecl("k_sh", c.BC, c),
    tileDecl("v_sh", c.BC, c),
    rowDecl("p_sh", c.BR * (c.BC + 1)),
    rowDecl("ds_sh", c.BR * (c.BC + 1)),
    rowDecl("lse_sh", c.BR),
    rowDecl("delta_sh", c.BR),
  ].join("\n")
  const body = `${threadCoords(s, o)}
  let hk = wid.y;
  let b = wid.z;
  let group = Hq / Hkv;
  let kv_row0 = ((b * Hkv + hk) * Tk) * D;
  let n_kb = (Tk + ${c.BC - 1}u) / ${c.BC}u;
  for (var kb = wid.x; kb < n_kb; kb = kb + nwg.x) {
    let k0 = kb * ${c.BC}u;
    workgroupBarrier();
${stageRows(c, "k_sh", "k_buf", "k_off_e + kv_row0", "k0", c.BC, "Tk")}
${stageRows(c, "v_sh", "v_buf", "v_off_e + kv_row0", "k0", c.BC, "Tk")}
${declareAcc(o, "dk_acc", "    ")}
${declareAcc(o, "dv_acc", "    ")}
    // Queries that can see a key of this block: t + q_off ≥ k0 (causal), t + q_off − window < k0 + BC − 1 (window).
    var t_lo = 0i;
    ${call.causal ? "t_lo = max(0i, i32(k0) - q_off);" : ""}
    var t_hi = i32(T);
    if (window > 0i) { t_hi = min(t_hi, i32(k0) + ${c.BC - 1}i - q_off + window); }
    t_lo = (t_lo / ${c.BR}i) * ${c.BR}i;
    for (var hh = 0u; hh < group; hh = hh + 1u) {
      let h = hk * group + hh;
      let q_base = q_off_e + ((b * Hq + h) * T) * D;
      let g_base = dOut_off_e + ((b * Hq + h) * T) * D;
      for (var q0i = t_lo; q0i < t_hi; q0i = q0i + ${c.BR}i) {
        let q0 = u32(q0i);
        workgroupBarrier();
${stageRows(c, "q_sh", "q_buf", "q_base", "q0", c.BR, "T")}
${stageRows(c, "do_sh", "dOut_buf", "g_base", "q0", c.BR, "T")}
        for (var r = li; r < ${c.BR}u; r = r + ${c.threads}u) {
          let row = q0 + r;
          var l = ${NEG_INF};
          var dl = 0.0;
          if (row < T) { l = lse_buf[lse_off + (b * Hq + h) * T + row]; dl = delta_buf[(b * Hq + h) * T + row]; }
          lse_sh[r] = l;
          delta_sh[r] = dl;
        }
        workgroupBarrier();
${scoreTiles(c, s, [
  ["sc", "q_sh", "k_sh"],
  ["dp", "do_sh", "v_sh"],
])}
${probabilities(call.causal, call.keyMask !== null, s, c, "q0 + rr", "k0 + cc", "p_sh", "ds_sh")}
        workgroupBarrier();
${accumulate(c, o, "dv_acc", lim(c, "n_br"), (row, x) => `p_sh[${x} * ${c.BC + 1}u + ${row}]`, "do_sh")}
${accumulate(c, o, "dk_acc", lim(c, "n_br"), (row, x) => `ds_sh[${x} * ${c.BC + 1}u + ${row}]`, "q_sh")}
      }
    }
${writeRows(c, o, "dk_acc", "dk_buf", "dk_off_e + kv_row0", "k0", "Tk", () => "1.0")}
${writeRows(c, o, "dv_acc", "dv_buf", "dv_off_e + kv_row0", "k0", "Tk", () => "1.0")}
  }`
  return { workgroupSize: [c.threads, 1, 1] as const, decls, body }
}

function backwardPlan(call: BackwardCall, ctx: KernelContext, scratch: ScratchAlloc): KernelPass[] {
  const [B, Hq, T, D] = call.q.shape
  const [, Hkv, Tk] = call.k.shape
  const views: Array<readonly [string, View]> = [
    ["q", call.q],
    ["k", call.k],
    ["v", call.v],
    ["out", call.out],
    ["dOut", call.dOut],
    ["dq", call.dq],
    ["dk", call.dk],
    ["dv", call.dv],
  ]
  const vec = D % 4 === 0 && views.every(([, v]) => v.offset % 4 === 0)
  checkGrid(Hq, B)
  const delta = scratch(Math.max(1, B * Hq * T))
  const passes: KernelPass[] = []
  const params = (c: Config) => {
    const p = new ParamList()
    blockParams(p, c)
    geometryParams(p, call.q, call.k, call)
    offsets(p, views)
    p.u32("lse_off", call.lse.offset)
    if (call.keyMask !== null) p.u32("keyMask_off", call.keyMask.offset)
    return p
  }
  const t = (c: Config) => vecType(c)
  const mask = call.keyMask === null ? [] : [input("keyMask", call.keyMask)]
  if (T > 0) {
    const c = chooseConfig("dq", D, vec, ctx)
    passes.push({
      variant: variantName("dq", c),
      bindings: [
        { ...input("q", call.q), type: t(c) },
        { ...input("k", call.k), type: t(c) },
        { ...input("v", call.v), type: t(c) },
        ...mask,
        { ...input("out", call.out), type: t(c) },
        input("lse", call.lse),
        { ...input("dOut", call.dOut), type: t(c) },
        { ...output("dq", call.dq), type: t(c) },
        output("delta", delta),
      ],
      params: params(c),
      grid: [Math.min(Math.ceil(T / c.BR), MAX_GROUPS_PER_DIM), Hq, B],
      shader: () => dqShader(call, c),
    })
  }
  if (Tk > 0) {
    const c = chooseConfig("dkdv", D, vec, ctx)
    checkGrid(Hkv, B)
    passes.push({
      variant: variantName("dkdv", c),
      bindings: [
        { ...input("q", call.q), type: t(c) },
        { ...input("k", call.k), type: t(c) },
        { ...input("v", call.v), type: t(c) },
        ...mask,
        input("lse", call.lse),
        { ...input("dOut", call.dOut), type: t(c) },
        input("delta", delta),
        { ...output("dk", call.dk), type: t(c) },
        { ...output("dv", call.dv), type: t(c) },
      ],
      params: params(c),
      grid: [Math.min(Math.ceil(Tk / c.BC), MAX_GROUPS_PER_DIM), Hkv, B],
      shader: () => dkdvShader(call, c),
    })
  }
  return passes
}

export const attentionKernels = {
  attention: { plan: forwardPlan },
  attentionBackward: { plan: backwardPlan },
} satisfies KernelTable<"attention" | "attentionBackward">
