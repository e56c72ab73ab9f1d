import type { KernelOf } from "../../backend.js"
import type { KernelTable } from "./kernel.js"
import { type Grid, input, MAX_GROUPS_PER_DIM, output, sizeOfShape, stridedIndex, unravel } from "./wgsl-helpers.js"

/**
 * Batched matmul, out[z, m, n] = Σ_k a[z, m, k] · b[z, k, n].
 *
 * Tiling: a THREADS_X × THREADS_Y workgroup computes a TILE_M × TILE_N tile of out; each thread owns a
 * ROWS × COLS register tile (COLS/4 vec4 accumulators per row, rows ROWS·ty…, columns COLS·tx…). K is walked in
 * slabs of TILE_K: the workgroup stages a TILE_M × TILE_K slab of A and a TILE_K × TILE_N slab of B in shared
 * memory, stored k-major as vec4s, so that per k a thread does ROWS/4 + COLS/4 vec4 loads and ROWS·COLS/4 vec4
 * FMAs. The register tile is generated unrolled (no dynamically indexed private arrays, which compilers spill).
 *
 * A and B are read through their strides (a transpose is swapped strides, a broadcast batch is stride 0), so no
 * view needs a copy. Loads outside M/N/K read as 0, which makes edge tiles and K = 0 (out = 0) fall out of the
 * same code. The grid is (tiles of N, tiles of M, batch) capped at 65535 per dimension; each workgroup loops
 * over tiles with the grid's stride, so any shape fits.
 */

// 128×128 tiles, 8×8 per thread, slabs of 8: on lavapipe (2 cores) this ran at ~4–6.5 GFLOP/s at 512³ where
// 4×4 per thread managed ~1.5–2; it is also the classic shape for discrete GPUs. Small or skinny products
// waste most of a tile; a later tuning pass can add variants for them.
const THREADS_X = 16
const THREADS_Y = 16
const ROWS = 8
const COLS = 8
const TILE_K = 8
const TILE_M = THREADS_Y * ROWS
const TILE_N = THREADS_X * COLS
const THREADS = THREADS_X * THREADS_Y

type MatmulCall = KernelOf<"matmul">

const dims = ({ a, b }: MatmulCall) => {
  const rank = a.shape.length
  return { rank, batchRank: rank - 2, M: a.shape[rank - 2], K: a.shape[rank - 1], N: b.shape[rank - 1] }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

/** Staging one operand's slab: each thread loads TILE_K·rows/THREADS elements. `inner` is the fast index
 *  (matching the usual contiguous layout, so that neighbouring threads read neighbouring addresses). */
function loadSlab(opts: { target: string; rows: number; inner: "k" | "mn"; read: string; bounds: string }): string {
  const loads = (TILE_K * opts.rows) / THREADS
  const innerSize = opts.inner === "k" ? TILE_K : opts.rows
  const [kExpr, mnExpr] = opts.inner === "k" ? [`e % ${innerSize}u`, `e / ${innerSize}u`] : [`e / ${innerSize}u`, `e % ${innerSize}u`]
  return `          for (var r = 0u; r < ${loads}u; r = r + 1u) {
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
  const acc = (r: number, j: number) => `acc_${r}_${j}`
  const rowQuads = range(ROWS / 4)
  const colQuads = range(COLS / 4)
  const declareAcc = range(ROWS)
    .flatMap((r) => colQuads.map((j) => `        var ${acc(r, j)} = vec4<f32>(0.0);`))
    .join("\n")
  const step = [
    ...rowQuads.map((q) => `            let a${q} = a_tile[kk * ${TILE_M / 4}u + ty * ${ROWS / 4}u + ${q}u];`),
    ...colQuads.map((j) => `            let b${j} = b_tile[kk * ${TILE_N / 4}u + tx * ${COLS / 4}u + ${j}u];`),
    ...range(ROWS).flatMap((r) => colQuads.map((j) => `            ${acc(r, j)} = fma(vec4<f32>(a${r >> 2}[${r & 3}]), b${j}, ${acc(r, j)});`)),
  ].join("\n")
  const write = range(ROWS)
    .map((r) => {
      const stores = colQuads
        .map((j) => range(4).map((c) => `            if (n0 + ${j * 4 + c}u < N) { out_buf[row + n0 + ${j * 4 + c}u] = ${acc(r, j)}[${c}]; }`).join("\n"))
        .join("\n")
      return `        if (m0 + ${r}u < M) {
          let row = out_base + (m0 + ${r}u) * N;
${stores}
        }`
    })
    .join("\n")
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
        let tile_m0 = tm * ${TILE_M}u;
        let tile_n0 = tn * ${TILE_N}u;
${declareAcc}
        for (var k0 = 0u; k0 < K; k0 = k0 + ${TILE_K}u) {
${loadSlab({ target: "a_tile", rows: TILE_M, inner: "k", bounds: "tile_m0 + mn < M && k0 + kk < K", read: `a_buf[a_base + (tile_m0 + mn) * ${am} + (k0 + kk) * ${ak}]` })}
${loadSlab({ target: "b_tile", rows: TILE_N, inner: "mn", bounds: "tile_n0 + mn < N && k0 + kk < K", read: `b_buf[b_base + (k0 + kk) * ${bk} + (tile_n0 + mn) * ${bn}]` })}
          workgroupBarrier();
          for (var kk = 0u; kk < ${TILE_K}u; kk = kk + 1u) {
${step}
          }
          workgroupBarrier();
        }
        let m0 = tile_m0 + ty * ${ROWS}u;
        let n0 = tile_n0 + tx * ${COLS}u;
${write}
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
