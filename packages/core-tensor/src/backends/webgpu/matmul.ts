import type { KernelOf } from "../../backend.js"
import type { KernelTable } from "./kernel.js"
import { type Grid, input, MAX_GROUPS_PER_DIM, output, sizeOfShape, stridedIndex, unravel } from "./wgsl-helpers.js"

/**
 * Batched matmul, out[z, m, n] = Σ_k a[z, m, k] · b[z, k, n].
 *
 * Tiling: a 16×16 workgroup computes a 64×64 tile of out; each thread owns a 4×4 register tile (four vec4
 * accumulators, rows 4·ty…, columns 4·tx…). K is walked in slabs of 16: the workgroup stages a 64×16 slab of
 * A and a 16×64 slab of B in shared memory (stored k-major as vec4s, so the inner loop is two vec4 loads and
 * four vec4 FMAs per k), then every thread accumulates from it.
 *
 * A and B are read through their strides (a transpose is swapped strides, a broadcast batch is stride 0), so no
 * view needs a copy. Loads outside M/N/K read as 0, which makes edge tiles and K = 0 (out = 0) fall out of the
 * same code. The grid is (tiles of N, tiles of M, batch) capped at 65535 per dimension; each workgroup loops
 * over tiles with the grid's stride, so any shape fits.
 */

const TILE_M = 64
const TILE_N = 64
const TILE_K = 16
const THREADS_X = 16
const THREADS_Y = 16
const THREADS = THREADS_X * THREADS_Y

type MatmulCall = KernelOf<"matmul">

const dims = ({ a, b }: MatmulCall) => {
  const rank = a.shape.length
  return { rank, batchRank: rank - 2, M: a.shape[rank - 2], K: a.shape[rank - 1], N: b.shape[rank - 1] }
}

/** Staging one operand's slab: each thread loads LOADS elements. `inner` is the fast index (matching the
 *  usual contiguous layout so that neighbouring threads read neighbouring addresses). */
function loadSlab(opts: { target: string; rows: number; inner: "k" | "mn"; read: string; bounds: string }): string {
  const loads = (TILE_K * opts.rows) / THREADS
  const innerSize = opts.inner === "k" ? TILE_K : opts.rows
  const [kExpr, mnExpr] = opts.inner === "k" ? ["e % " + innerSize + "u", "e / " + innerSize + "u"] : ["e / " + innerSize + "u", "e % " + innerSize + "u"]
  return `    for (var r = 0u; r < ${loads}u; r = r + 1u) {
      let e = li + r * ${THREADS}u;
      let kk = ${kExpr};
      let mn = ${mnExpr};
      var v = 0.0;
      if (${opts.bounds}) { v = ${opts.read}; }
      ${opts.target}[kk * ${opts.rows / 4}u + mn / 4u][mn % 4u] = v;
    }`
}

function shader(call: MatmulCall) {
  const { rank, batchRank } = dims(call)
  const decls = `var<workgroup> a_tile: array<vec4<f32>, ${(TILE_K * TILE_M) / 4}>;
var<workgroup> b_tile: array<vec4<f32>, ${(TILE_K * TILE_N) / 4}>;`
  const [am, ak, bk, bn] = [`a_st${rank - 2}`, `a_st${rank - 1}`, `b_st${rank - 2}`, `b_st${rank - 1}`]
  const writeRow = (i: number) => `      {
        let gm = m0 + ty * 4u + ${i}u;
        if (gm < M) {
          let row = out_base + gm * N;
          for (var j = 0u; j < 4u; j = j + 1u) {
            let gn = n0 + tx * 4u + j;
            if (gn < N) { out_buf[row + gn] = acc${i}[j]; }
          }
        }
      }`
  const body = `  let tx = lid.x;
  let ty = lid.y;
  let tiles_m = (M + ${TILE_M - 1}u) / ${TILE_M}u;
  let tiles_n = (N + ${TILE_N - 1}u) / ${TILE_N}u;
  for (var z = wid.z; z < nb; z = z + nwg.z) {
${unravel("batch", batchRank, "z", "cb")}
    let a_base = ${stridedIndex("a", batchRank, "cb")};
    let b_base = ${stridedIndex("b", batchRank, "cb")};
    let out_base = out_off + z * M * N;
    for (var tm = wid.y; tm < tiles_m; tm = tm + nwg.y) {
      for (var tn = wid.x; tn < tiles_n; tn = tn + nwg.x) {
        let m0 = tm * ${TILE_M}u;
        let n0 = tn * ${TILE_N}u;
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        for (var k0 = 0u; k0 < K; k0 = k0 + ${TILE_K}u) {
${loadSlab({ target: "a_tile", rows: TILE_M, inner: "k", bounds: "m0 + mn < M && k0 + kk < K", read: `a_buf[a_base + (m0 + mn) * ${am} + (k0 + kk) * ${ak}]` })}
${loadSlab({ target: "b_tile", rows: TILE_N, inner: "mn", bounds: "n0 + mn < N && k0 + kk < K", read: `b_buf[b_base + (k0 + kk) * ${bk} + (n0 + mn) * ${bn}]` })}
          workgroupBarrier();
          for (var kk = 0u; kk < ${TILE_K}u; kk = kk + 1u) {
            let av = a_tile[kk * ${TILE_M / 4}u + ty];
            let bv = b_tile[kk * ${TILE_N / 4}u + tx];
            acc0 = acc0 + av.x * bv;
            acc1 = acc1 + av.y * bv;
            acc2 = acc2 + av.z * bv;
            acc3 = acc3 + av.w * bv;
          }
          workgroupBarrier();
        }
${[0, 1, 2, 3].map(writeRow).join("\n")}
      }
    }
  }`
  return { workgroupSize: [THREADS_X, THREADS_Y, 1] as const, decls, body }
}

const cap = (n: number) => Math.max(1, Math.min(n, MAX_GROUPS_PER_DIM))

export const matmulKernels = {
  matmul: {
    bindings: ({ a, b, out }) => [input("a", a), input("b", b), output("out", out)],
    params: (call, p) => {
      const { batchRank, M, N, K } = dims(call)
      const batch = call.out.shape.slice(0, batchRank)
      p.u32("M", M).u32("N", N).u32("K", K).u32("nb", sizeOfShape(batch)).shape("batch", batch)
      p.view("a", call.a).view("b", call.b).u32("out_off", call.out.offset)
    },
    shader,
    grid: (call): Grid => {
      const { batchRank, M, N } = dims(call)
      return [cap(Math.ceil(N / TILE_N)), cap(Math.ceil(M / TILE_M)), cap(sizeOfShape(call.out.shape.slice(0, batchRank)))]
    },
  },
} satisfies KernelTable<"matmul">
