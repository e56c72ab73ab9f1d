import type { KernelOf, View } from "../../backend.js"
import type { KernelContext, KernelPass, KernelTable, ScratchAlloc } from "./kernel.js"
import { type MatmulTile, tileName, tileThreads } from "./tuning.js"
import { type Binding, flatGrid, type Grid, input, MAX_GROUPS_PER_DIM, output, ParamList, sizeOfShape, stridedIndex, unravel } from "./wgsl-helpers.js"

/**
 * Batched matmul, out[z, m, n] = Σ_k a[z, m, k] · b[z, k, n], as a planner over three kernel families:
 *
 *  - **tiled** (the general case): a workgroup computes a tile.m × tile.n block of out, walking K in slabs of
 *    tile.k. Each slab of A and B is staged in workgroup memory k-major as vec4s along m / n (one vec4 of padding
 *    per k row against bank conflicts), each thread owns a rows × cols register tile (vec4 accumulators; it
 *    reads rows/4 + cols/4 vec4s and does rows·cols/4 vec4 FMAs per k); on GPUs the next slab is prefetched into
 *    registers while the current one is multiplied (tuning `prefetch`). On GPUs thread (tx, ty) owns the row
 *    quads ty + i·TY and column quads tx + j·TX (tuning `interleave`: neighbouring threads touch neighbouring
 *    vec4s, so shared reads are conflict-free and stores coalesced); on lavapipe one contiguous run each.
 *    Operand loads are generated per layout:
 *      vk / vmn — vec4 global loads along k (a row-major A, or B = Wᵀ of a linear layer) or along m / n
 *                 (a transposed A, a row-major B), when that dim has stride 1 and everything is 4-aligned;
 *      sk / smn — scalar loads through arbitrary strides (transposes, broadcast batch dims, odd sizes), with
 *                 the unit-stride dim fastest across threads.
 *    When M, N, K are multiples of the tile ("fit" variants) the loads and stores carry no bounds checks.
 *  - **split-K**: when the tiles alone leave the device idle and K is long (64×64 out, K = 4096), the tiled
 *    kernel runs with K cut into S chunks, writing S partial products into a scratch buffer, and a second pass
 *    sums them in a fixed order (deterministic, no atomics).
 *  - **GEMV** (M = 1 or N = 1, decoding): memory-bound, so it is about coalesced vec4 reads of the matrix. With K
 *    contiguous ("dot"), `gemvLanes` threads reduce one output through workgroup memory; with the output dim
 *    contiguous ("col"), a thread owns 4 adjacent outputs and the workgroup splits K into slices.
 *
 * The variant string of each pass — tile, operand load modes, fit flags, f16 storage — keys the compiled
 * pipeline (program-cache.ts); shapes, strides and offsets stay uniforms, so one pipeline serves every shape of
 * its variant. The tile candidates and device parallelism come from tuning.ts (per adapter, optionally
 * autotuned).
 *
 * f16 storage: A and/or B may be packed IEEE half floats — float16 tensors (`View.half`), or a backend-level
 * `HalfMatmulCall` (WebGpuBackend.matmulHalf); the tiled kernel then binds them as f16 (vec4<f16> for vector
 * loads), converts on the way into workgroup memory and accumulates in f32.
 */

type MatmulCall = KernelOf<"matmul">

/** A matmul whose A and/or B buffers hold IEEE half floats (view shapes, strides and offsets in halves). */
export interface HalfMatmulCall extends MatmulCall {
  readonly half: { readonly a: boolean; readonly b: boolean }
}

/** Which operands are IEEE halves: marked on the call (matmulHalf) or on the views (float16 tensors). */
function halfOf(call: MatmulCall): { readonly a: boolean; readonly b: boolean } {
  const marked = (call as Partial<HalfMatmulCall>).half
  return { a: marked?.a === true || call.a.half === true, b: marked?.b === true || call.b.half === true }
}

const dims = ({ a, b }: MatmulCall) => {
  const rank = a.shape.length
  return { rank, batchRank: rank - 2, M: a.shape[rank - 2], K: a.shape[rank - 1], N: b.shape[rank - 1] }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)
const cap = (n: number) => Math.max(1, Math.min(n, MAX_GROUPS_PER_DIM))
const ceilDiv = (a: number, b: number) => Math.ceil(a / b)

/** Offset and every batch stride divisible by 4: vec4 indices of the operand stay whole. */
const batchAligned = (v: View, batchRank: number) => v.offset % 4 === 0 && v.strides.slice(0, batchRank).every((s) => s % 4 === 0)

// ---- operand layouts ------------------------------------------------------------------------------------------

/** How one operand's slab is read: vector along k, vector along its m/n dim, scalar with k or m/n fastest. */
type Load = "vk" | "vmn" | "sk" | "smn"

/** a: (mn = m, k) strides; b: (mn = n, k). */
function operandLoad(v: View, batchRank: number, mnStride: number, kStride: number, mnSize: number, kSize: number): Load {
  const aligned = batchAligned(v, batchRank)
  if (kStride === 1 && aligned && mnStride % 4 === 0 && kSize % 4 === 0) return "vk"
  if (mnStride === 1 && aligned && kStride % 4 === 0 && mnSize % 4 === 0) return "vmn"
  return Math.abs(kStride) <= Math.abs(mnStride) ? "sk" : "smn"
}

interface SlabSpec {
  /** Operand name: "a" or "b"; its strides are `${name}_smn` / `${name}_sk` (params). */
  readonly name: "a" | "b"
  readonly load: Load
  /** Tile extent along m (a) or n (b). */
  readonly extent: number
  readonly tk: number
  readonly threads: number
  /** No bounds check along m/n, resp. k. */
  readonly fitMN: boolean
  readonly fitK: boolean
  readonly half: boolean
  /** Size of the m/n dim (a WGSL name: "M" or "N"). */
  readonly sizeName: string
  /** The loop bound of `direct`: a constant, or the uniform holding it. */
  readonly loopBound: string
}

/**
 * The code that moves one slab global → registers (`load`, at k offset `kq`) and registers → workgroup memory
 * (`store`), or, without prefetching, global → workgroup memory in one loop (`direct`: a WGSL loop rather than
 * unrolled code, which keeps lavapipe's compile times down). The slab in workgroup memory is `${name}_sh`,
 * element (k, x) at vec4 k·(extent/4 + 1) + x/4.
 */
function slabCode(s: SlabSpec): { regs: string; load: string; store: string; direct: string } {
  const { name, load, extent, tk, threads } = s
  const vec = load === "vk" || load === "vmn"
  const count = vec ? (extent * tk) / 4 : extent * tk
  const perThread = count / threads
  const row = extent / 4 + 1
  const t0 = `${name}_tile0`
  const regType = vec ? "vec4<f32>" : "f32"
  const conv = (x: string) => (s.half ? `${regType}(${x})` : x)
  /** Slab coordinates of element e: x along m/n, k; the global address; the bounds test. */
  const coords = (e: string) => {
    let x: string
    let k: string
    let addr: string
    switch (load) {
      case "vk": // vec4 = 4 consecutive k of one row
        x = `(${e} / ${tk / 4}u)`
        k = `(${e} % ${tk / 4}u) * 4u`
        addr = `(${name}_base + (${t0} + ${x}) * ${name}_smn + kq + ${k}) / 4u`
        break
      case "vmn": // vec4 = 4 consecutive m (or n) of one k
        x = `(${e} % ${extent / 4}u) * 4u`
        k = `(${e} / ${extent / 4}u)`
        addr = `(${name}_base + ${t0} + ${x} + (kq + ${k}) * ${name}_sk) / 4u`
        break
      case "sk":
        x = `(${e} / ${tk}u)`
        k = `(${e} % ${tk}u)`
        addr = `${name}_base + (${t0} + ${x}) * ${name}_smn + (kq + ${k}) * ${name}_sk`
        break
      case "smn":
        x = `(${e} % ${extent}u)`
        k = `(${e} / ${extent}u)`
        addr = `${name}_base + (${t0} + ${x}) * ${name}_smn + (kq + ${k}) * ${name}_sk`
        break
    }
    const bounds: string[] = []
    if (!s.fitMN) bounds.push(`${t0} + ${x} < ${s.sizeName}`)
    if (!s.fitK) bounds.push(`kq + ${k} < k_end`)
    return { x, k, read: conv(`${name}_buf[${addr}]`), bounds: bounds.join(" && ") }
  }
  const loadInto = (reg: string, e: string, indent: string) => {
    const { read, bounds } = coords(e)
    return bounds === "" ? `${indent}${reg} = ${read};` : `${indent}${reg} = ${regType}(0.0);\n${indent}if (${bounds}) { ${reg} = ${read}; }`
  }
  const storeFrom = (reg: string, e: string, indent: string) => {
    const { x, k } = coords(e)
    if (load === "vk") return range(4).map((c) => `${indent}${name}_sh[(${k} + ${c}u) * ${row}u + ${x} / 4u][${x} % 4u] = ${reg}[${c}];`).join("\n")
    if (load === "vmn") return `${indent}${name}_sh[${k} * ${row}u + ${x} / 4u] = ${reg};`
    return `${indent}${name}_sh[${k} * ${row}u + ${x} / 4u][${x} % 4u] = ${reg};`
  }
  const regs = range(perThread)
    .map((r) => `  var ${name}_r${r}: ${regType};`)
    .join("\n")
  const e = (r: number) => `(li + ${r * threads}u)`
  const direct = `          for (var r = 0u; r < ${s.loopBound}; r = r + 1u) {
            var v: ${regType};
${loadInto("v", "(li + r * " + threads + "u)", "            ")}
${storeFrom("v", "(li + r * " + threads + "u)", "            ")}
          }`
  return {
    regs,
    load: range(perThread)
      .map((r) => loadInto(`${name}_r${r}`, e(r), "    "))
      .join("\n"),
    store: range(perThread)
      .map((r) => storeFrom(`${name}_r${r}`, e(r), "    "))
      .join("\n"),
    direct,
  }
}

// ---- the tiled kernel -----------------------------------------------------------------------------------------

interface TiledVariant {
  readonly tile: MatmulTile
  readonly aLoad: Load
  readonly bLoad: Load
  readonly fitM: boolean
  readonly fitN: boolean
  readonly fitK: boolean
  readonly vecOut: boolean
  readonly halfA: boolean
  readonly halfB: boolean
  /** Load the next slab into registers while multiplying the current one. */
  readonly prefetch: boolean
  /** Compile-time loop bounds (see WebGpuTuning.unroll). */
  readonly unroll: boolean
  /** Interleaved register tiles (see WebGpuTuning.interleave). */
  readonly interleave: boolean
}

const variantName = (v: TiledVariant) =>
  [
    `tiled ${tileName(v.tile)}`,
    `a=${v.aLoad}${v.halfA ? "16" : ""}`,
    `b=${v.bLoad}${v.halfB ? "16" : ""}`,
    `fit=${v.fitM ? "m" : ""}${v.fitN ? "n" : ""}${v.fitK ? "k" : ""}`,
    v.vecOut ? "out4" : "out1",
    v.prefetch ? "pf" : "",
    v.unroll ? "" : "rt",
    v.interleave ? "" : "runs",
  ].join(" ")

function tiledShader(call: MatmulCall, v: TiledVariant) {
  const { batchRank } = dims(call)
  const { tile } = v
  const TX = tile.n / tile.cols
  const TY = tile.m / tile.rows
  const threads = TX * TY
  // The thread's i-th row quad and j-th column quad of the tile: interleaved (neighbouring threads own
  // neighbouring vec4s) or in one contiguous run per thread.
  const rowQuad = (i: number) => (v.interleave ? `ty + ${i * TY}u` : `ty * ${tile.rows / 4}u + ${i}u`)
  const colQuad = (j: number) => (v.interleave ? `tx + ${j * TX}u` : `tx * ${tile.cols / 4}u + ${j}u`)
  const RQ = tile.rows / 4
  const CQ = tile.cols / 4
  const rowA = tile.m / 4 + 1
  const rowB = tile.n / 4 + 1
  const bound = (name: string, value: number) => (v.unroll ? `${value}u` : name)
  const perThread = (l: Load, extent: number) => ((l === "vk" || l === "vmn" ? extent / 4 : extent) * tile.k) / threads
  const a = slabCode({ name: "a", load: v.aLoad, extent: tile.m, tk: tile.k, threads, fitMN: v.fitM, fitK: v.fitK, half: v.halfA, sizeName: "M", loopBound: bound("n_lda", perThread(v.aLoad, tile.m)) })
  const b = slabCode({ name: "b", load: v.bLoad, extent: tile.n, tk: tile.k, threads, fitMN: v.fitN, fitK: v.fitK, half: v.halfB, sizeName: "N", loopBound: bound("n_ldb", perThread(v.bLoad, tile.n)) })
  const acc = (r: number, j: number) => `acc_${r}_${j}`
  const decls = `var<workgroup> a_sh: array<vec4<f32>, ${tile.k * rowA}>;
var<workgroup> b_sh: array<vec4<f32>, ${tile.k * rowB}>;`
  const zeroAcc = range(tile.rows)
    .flatMap((r) => range(CQ).map((j) => `        ${acc(r, j)} = vec4<f32>(0.0);`))
    .join("\n")
  const declareAcc = range(tile.rows)
    .flatMap((r) => range(CQ).map((j) => `  var ${acc(r, j)}: vec4<f32>;`))
    .join("\n")
  const step = [
    ...range(RQ).map((i) => `          let av${i} = a_sh[kk * ${rowA}u + ${rowQuad(i)}];`),
    ...range(CQ).map((j) => `          let bv${j} = b_sh[kk * ${rowB}u + ${colQuad(j)}];`),
    ...range(tile.rows).flatMap((r) => range(CQ).map((j) => `          ${acc(r, j)} = fma(vec4<f32>(av${r >> 2}[${r & 3}]), bv${j}, ${acc(r, j)});`)),
  ].join("\n")
  // Stores: row m = tile_m0 + (ty + i·TY)·4 + r, column quad tile_n0/4 + tx + j·TX.
  const stores = range(tile.rows)
    .map((r) => {
      const i = r >> 2
      const m = `(tile_m0 + (${rowQuad(i)}) * 4u + ${r & 3}u)`
      const cols = range(CQ)
        .map((j) => {
          const n = `(tile_n0 + (${colQuad(j)}) * 4u)`
          if (v.vecOut) {
            const store = `out_buf[(o_base + ${m} * N + ${n}) / 4u] = ${acc(r, j)};`
            return v.fitN ? `          ${store}` : `          if (${n} < N) { ${store} }`
          }
          return range(4)
            .map((c) => {
              const store = `out_buf[o_base + ${m} * N + ${n} + ${c}u] = ${acc(r, j)}[${c}];`
              return v.fitN ? `          ${store}` : `          if (${n} + ${c}u < N) { ${store} }`
            })
            .join("\n")
        })
        .join("\n")
      return v.fitM ? cols : `        if (${m} < M) {\n${cols}\n        }`
    })
    .join("\n")
  const body = `  let tx = li % ${TX}u;
  let ty = li / ${TX}u;
  let tiles_m = (M + ${tile.m - 1}u) / ${tile.m}u;
  let tiles_n = (N + ${tile.n - 1}u) / ${tile.n}u;
${declareAcc}
${v.prefetch ? `${a.regs}\n${b.regs}` : ""}
  for (var z = wid.z; z < nb * splits; z = z + nwg.z) {
    let split = z % splits;
    let zb = z / splits;
${unravel("batch", batchRank, "zb", "cb")}
    let a_base = ${stridedIndex("a", batchRank, "cb")};
    let b_base = ${stridedIndex("b", batchRank, "cb")};
    let o_base = out_off + (split * nb + zb) * M * N;
    let k_begin = split * k_chunk;
    let k_end = min(K, k_begin + k_chunk);
    for (var tm = wid.y; tm < tiles_m; tm = tm + nwg.y) {
      for (var tn = wid.x; tn < tiles_n; tn = tn + nwg.x) {
        let tile_m0 = tm * ${tile.m}u;
        let tile_n0 = tn * ${tile.n}u;
        let a_tile0 = tile_m0;
        let b_tile0 = tile_n0;
${zeroAcc}
${
          v.prefetch
            ? `        var kq = k_begin;
        if (kq < k_end) {
${a.load}
${b.load}
        }
        for (var k0 = k_begin; k0 < k_end; k0 = k0 + ${tile.k}u) {
          workgroupBarrier();
${a.store}
${b.store}
          workgroupBarrier();
          kq = k0 + ${tile.k}u;
          if (kq < k_end) {
${a.load}
${b.load}
          }
`
            : `        for (var k0 = k_begin; k0 < k_end; k0 = k0 + ${tile.k}u) {
          let kq = k0;
          workgroupBarrier();
${a.direct}
${b.direct}
          workgroupBarrier();
`
        }          for (var kk = 0u; kk < ${bound("n_tk", tile.k)}; kk = kk + 1u) {
${step}
          }
        }
${stores}
      }
    }
  }`
  return { workgroupSize: [threads, 1, 1] as const, decls, body, enables: v.halfA || v.halfB ? ["f16"] : [] }
}

function tiledPass(call: MatmulCall, v: TiledVariant, out: View, splits: number, kChunk: number): KernelPass {
  const { batchRank, rank, M, N, K } = dims(call)
  const batch = call.out.shape.slice(0, batchRank)
  const nb = sizeOfShape(batch)
  const params = new ParamList()
  params.u32("M", M).u32("N", N).u32("K", K).u32("nb", nb).u32("splits", splits).u32("k_chunk", kChunk).shape("batch", batch)
  params.view("a", { ...call.a, strides: call.a.strides.slice(0, batchRank) }).u32("a_smn", call.a.strides[rank - 2]).u32("a_sk", call.a.strides[rank - 1])
  params.view("b", { ...call.b, strides: call.b.strides.slice(0, batchRank) }).u32("b_sk", call.b.strides[rank - 2]).u32("b_smn", call.b.strides[rank - 1])
  params.u32("out_off", out.offset)
  if (!v.unroll) {
    const per = (l: Load, extent: number) => ((l === "vk" || l === "vmn" ? extent / 4 : extent) * v.tile.k) / tileThreads(v.tile)
    params.u32("n_tk", v.tile.k).u32("n_lda", per(v.aLoad, v.tile.m)).u32("n_ldb", per(v.bLoad, v.tile.n))
  }
  const type = (vec: boolean, half: boolean) => (vec ? `vec4<${half ? "f16" : "f32"}>` : half ? "f16" : "f32")
  const isVec = (l: Load) => l === "vk" || l === "vmn"
  const bindings: Binding[] = [
    { ...input("a", call.a), type: type(isVec(v.aLoad), v.halfA) },
    { ...input("b", call.b), type: type(isVec(v.bLoad), v.halfB) },
    { ...output("out", out), type: v.vecOut ? "vec4<f32>" : "f32" },
  ]
  const grid: Grid = [cap(ceilDiv(N, v.tile.n)), cap(ceilDiv(M, v.tile.m)), cap(nb * splits)]
  return { variant: variantName(v), bindings, params, grid, shader: () => tiledShader(call, v) }
}

/** Sum `splits` partial products [splits, total] into out [total] (vec4 when total % 4 = 0). */
function splitReducePass(partial: View, out: View, total: number, splits: number): KernelPass {
  const vec = total % 4 === 0 && out.offset % 4 === 0
  const width = vec ? 4 : 1
  const items = total / width
  const params = new ParamList().u32("n", items).u32("splits", splits).u32("out_off", out.offset / width)
  const t = vec ? "vec4<f32>" : "f32"
  return {
    variant: `splitk-reduce ${vec ? "vec4" : "scalar"}`,
    bindings: [{ ...input("part", partial), type: t }, { ...output("out", out), type: t }],
    params,
    grid: flatGrid(ceilDiv(items, 256)),
    shader: () => ({
      workgroupSize: [256, 1, 1] as const,
      body: `  if (gi >= n) { return; }
  var s = part_buf[gi];
  for (var i = 1u; i < splits; i = i + 1u) { s = s + part_buf[i * n + gi]; }
  out_buf[out_off + gi] = s;`,
    }),
  }
}

// ---- GEMV ----------------------------------------------------------------------------------------------------

/**
 * M = 1 or N = 1 as out[z, l] = Σ_k w(z, l, k) · x(z, k): for M = 1, x is A's row and w(l = n, k) = b[k, n];
 * for N = 1, x is B's column and w(l = m, k) = a[m, k].
 */
function gemvPasses(call: MatmulCall, ctx: KernelContext): KernelPass[] {
  const { batchRank, rank, M, N, K } = dims(call)
  const batch = call.out.shape.slice(0, batchRank)
  const nb = sizeOfShape(batch)
  const rowVector = M === 1
  const [w, x] = rowVector ? [call.b, call.a] : [call.a, call.b]
  const L = rowVector ? N : M
  const wsl = rowVector ? call.b.strides[rank - 1] : call.a.strides[rank - 2]
  const wsk = rowVector ? call.b.strides[rank - 2] : call.a.strides[rank - 1]
  const xsk = rowVector ? call.a.strides[rank - 1] : call.b.strides[rank - 2]
  const params = new ParamList().u32("L", L).u32("K", K).u32("nb", nb).shape("batch", batch)
  params.view("w", { ...w, strides: w.strides.slice(0, batchRank) }).u32("w_sl", wsl).u32("w_sk", wsk)
  params.view("x", { ...x, strides: x.strides.slice(0, batchRank) }).u32("x_sk", xsk).u32("out_off", call.out.offset)
  const wAligned = batchAligned(w, batchRank)
  const xAligned = batchAligned(x, batchRank)
  const prologue = `  for (var z = wid.z; z < nb; z = z + nwg.z) {
${unravel("batch", batchRank, "z", "cb")}
    let w_base = ${stridedIndex("w", batchRank, "cb")};
    let x_base = ${stridedIndex("x", batchRank, "cb")};
    let o_base = out_off + z * L;`
  const grid = (groups: number): Grid => [cap(groups), 1, cap(nb)]

  if (wsk === 1 || wsl !== 1) {
    // "dot": `lanes` threads per output walk k (vec4 when both operands are contiguous along k), then a tree sum.
    const lanes = ctx.tuning.matmul.gemvLanes
    const outputs = 256 / lanes
    const vec = wsk === 1 && xsk === 1 && K % 4 === 0 && wsl % 4 === 0 && wAligned && xAligned
    const loop = vec
      ? `      for (var k4 = lane; k4 < K / 4u; k4 = k4 + ${lanes}u) {
        acc = acc + dot(w_buf[(w_base + l * w_sl) / 4u + k4], x_buf[x_base / 4u + k4]);
      }`
      : `      for (var k = lane; k < K; k = k + ${lanes}u) {
        acc = acc + w_buf[w_base + l * w_sl + k * w_sk] * x_buf[x_base + k * x_sk];
      }`
    const body = `  let lane = li % ${lanes}u;
  let slot = li / ${lanes}u;
${prologue}
    for (var g = wid.x; g * ${outputs}u < L; g = g + nwg.x) {
      let l = g * ${outputs}u + slot;
      var acc = 0.0;
      if (l < L) {
${loop}
      }
      workgroupBarrier();
      red[li] = acc;
      workgroupBarrier();
      for (var s = ${lanes / 2}u; s > 0u; s = s >> 1u) {
        if (lane < s) { red[li] = red[li] + red[li + s]; }
        workgroupBarrier();
      }
      if (lane == 0u && l < L) { out_buf[o_base + l] = red[li]; }
    }
  }`
    const t = vec ? "vec4<f32>" : "f32"
    return [
      {
        variant: `gemv dot ${lanes} ${vec ? "vec4" : "scalar"}`,
        bindings: [{ ...input("w", w), type: t }, { ...input("x", x), type: t }, output("out", call.out)],
        params,
        grid: grid(ceilDiv(L, outputs)),
        shader: () => ({ workgroupSize: [256, 1, 1] as const, decls: "var<workgroup> red: array<f32, 256>;", body }),
      },
    ]
  }

  // "col": w is contiguous along l. 16 lanes × 4 outputs (vec4 when aligned) per workgroup, K cut into 16 slices
  // that are summed through workgroup memory.
  const vec = L % 4 === 0 && wsk % 4 === 0 && wAligned
  const width = vec ? 4 : 1
  const lanesL = 16
  const slices = 16
  const t = vec ? "vec4<f32>" : "f32"
  const read = vec ? `w_buf[(w_base + k * w_sk) / 4u + lq]` : `w_buf[w_base + lq + k * w_sk]`
  const store = vec
    ? `out_buf[o_base + lq * 4u] = s.x; out_buf[o_base + lq * 4u + 1u] = s.y; out_buf[o_base + lq * 4u + 2u] = s.z; out_buf[o_base + lq * 4u + 3u] = s.w;`
    : `out_buf[o_base + lq] = s;`
  const body = `  let lane = li % ${lanesL}u;
  let slice = li / ${lanesL}u;
${prologue}
    for (var g = wid.x; g * ${lanesL * width}u < L; g = g + nwg.x) {
      let lq = g * ${lanesL}u + lane;
      var acc = ${t}(0.0);
      if (lq * ${width}u < L) {
        for (var k = slice; k < K; k = k + ${slices}u) { acc = acc + ${read} * x_buf[x_base + k * x_sk]; }
      }
      workgroupBarrier();
      red[li] = acc;
      workgroupBarrier();
      if (slice == 0u && lq * ${width}u < L) {
        var s = red[lane];
        for (var i = 1u; i < ${slices}u; i = i + 1u) { s = s + red[i * ${lanesL}u + lane]; }
        ${store}
      }
    }
  }`
  return [
    {
      variant: `gemv col ${vec ? "vec4" : "scalar"}`,
      bindings: [{ ...input("w", w), type: t }, input("x", x), output("out", call.out)],
      params,
      grid: grid(ceilDiv(L, lanesL * width)),
      shader: () => ({ workgroupSize: [lanesL * slices, 1, 1] as const, decls: `var<workgroup> red: array<${t}, ${lanesL * slices}>;`, body }),
    },
  ]
}

// ---- planning ---------------------------------------------------------------------------------------------------

/** The tile for an M × N × batch product: the best of the candidates by (work per thread) × (useful fraction of
 *  the tiles) × (fraction of the device kept busy, capped at 1). */
export function chooseTile(tiles: readonly MatmulTile[], M: number, N: number, nb: number, parallelism: number): MatmulTile {
  let best = tiles[tiles.length - 1]
  let bestScore = -1
  for (const t of tiles) {
    const tm = ceilDiv(M, t.m)
    const tn = ceilDiv(N, t.n)
    const groups = tm * tn * nb
    const useful = (M * N) / (tm * t.m * tn * t.n)
    const intensity = (t.rows * t.cols) / (t.rows + t.cols)
    const busy = Math.min(1, groups / parallelism)
    const score = intensity * useful * busy
    if (score > bestScore * 1.0001) {
      best = t
      bestScore = score
    }
  }
  return best
}

function planMatmul(call: MatmulCall, ctx: KernelContext, scratch: ScratchAlloc): KernelPass[] {
  const { batchRank, rank, M, N, K } = dims(call)
  const nb = sizeOfShape(call.out.shape.slice(0, batchRank))
  const half = halfOf(call)
  if (half.a || half.b) {
    if (!ctx.f16) throw new Error("webgpu matmul: f16 storage needs the shader-f16 feature, which this adapter lacks")
  } else if (M === 1 || N === 1) return gemvPasses(call, ctx)

  const tuning = ctx.tuning.matmul
  const tile = chooseTile(tuning.tiles, M, N, nb, tuning.parallelism)
  const groups = ceilDiv(M, tile.m) * ceilDiv(N, tile.n) * nb
  // Split K when the tiles leave the device more than half idle and K is long.
  let splits = 1
  if (tuning.splitKMinK > 0 && K >= tuning.splitKMinK && groups * 2 <= tuning.parallelism) {
    const chunk = Math.max(tuning.splitKChunk, tile.k)
    splits = Math.max(1, Math.min(ceilDiv(tuning.parallelism, groups), Math.floor(K / chunk), 64))
    // Keep the partial sums within one binding.
    while (splits > 1 && splits * nb * M * N * 4 > 2 ** 27) splits--
  }
  const kChunk = splits === 1 ? K : ceilDiv(ceilDiv(K, splits), tile.k) * tile.k
  splits = splits === 1 ? 1 : ceilDiv(K, kChunk)
  // Small products run the generic variant (scalar strided loads, every bound checked): compiling a
  // specialised pipeline would cost more than it could ever save on them.
  const special = 2 * M * N * K * nb >= tuning.specializeMinFlops || half.a || half.b
  const aLoad = operandLoad(call.a, batchRank, call.a.strides[rank - 2], call.a.strides[rank - 1], M, K)
  const bLoad = operandLoad(call.b, batchRank, call.b.strides[rank - 1], call.b.strides[rank - 2], N, K)
  const scalar = (l: Load, mnStride: number, kStride: number): Load => (l === "sk" || l === "smn" ? l : Math.abs(kStride) <= Math.abs(mnStride) ? "sk" : "smn")
  const v: TiledVariant = {
    tile,
    aLoad: special ? aLoad : scalar(aLoad, call.a.strides[rank - 2], call.a.strides[rank - 1]),
    bLoad: special ? bLoad : scalar(bLoad, call.b.strides[rank - 1], call.b.strides[rank - 2]),
    fitM: special && M % tile.m === 0,
    fitN: special && N % tile.n === 0,
    fitK: special && kChunk % tile.k === 0 && K % kChunk === 0,
    vecOut: special && N % 4 === 0 && call.out.offset % 4 === 0,
    halfA: half.a,
    halfB: half.b,
    prefetch: tuning.prefetch,
    unroll: tuning.unroll,
    interleave: tuning.interleave,
  }
  if (splits === 1) return [tiledPass(call, v, call.out, 1, K)]
  const total = nb * M * N
  const partial = scratch(splits * total)
  return [tiledPass(call, { ...v, vecOut: special && N % 4 === 0 }, partial, splits, kChunk), splitReducePass(partial, call.out, total, splits)]
}

export const matmulKernels = {
  matmul: { plan: planMatmul },
} satisfies KernelTable<"matmul">

/** The variants of the passes a call would run on this context (tests, diagnostics). */
export function describeMatmulPlan(call: MatmulCall, ctx: KernelContext): string[] {
  const fake: ScratchAlloc = (elements) => ({ buffer: { byteLength: elements * 4 }, dtype: "float32", shape: [elements], strides: [1], offset: 0 })
  return planMatmul(call, ctx, fake).map((p) => p.variant)
}
