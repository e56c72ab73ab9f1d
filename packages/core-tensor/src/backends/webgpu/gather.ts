import { ELEMENTWISE_THREADS, type KernelTable } from "./kernel.js"
import { input, output, threadGrid } from "./wgsl-helpers.js"

/**
 * Embedding lookup and its adjoint. Views are read through their strides and offsets even though the contract
 * promises contiguous ones: it costs nothing and keeps a sliced table or index usable.
 */

const GATHER_BODY = `  if (gi >= n) { return; }
  let row = gi / D;
  let col = gi % D;
  let idx = index_buf[index_off + row * index_st0];
  var v = 0.0;
  if (idx >= 0i && u32(idx) < V) { v = table_buf[table_off + u32(idx) * table_st0 + col * table_st1]; }
  out_buf[out_off + gi] = v;`

/**
 * scatterAdd must add rows in index order to be deterministic (float addition is not associative), and WGSL has
 * no float atomics anyway. One thread per column d owns out[:, d]: it zeroes it, then walks n = 0…N−1 in order,
 * so each out element sees exactly the CPU's sequence of additions. Parallelism is D threads, which is plenty
 * for embedding widths; a row-sorted variant can come later if profiles ask for it.
 */
const SCATTER_BODY = `  if (gi >= D) { return; }
  for (var v = 0u; v < V; v = v + 1u) { out_buf[out_off + v * D + gi] = 0.0; }
  for (var r = 0u; r < N; r = r + 1u) {
    let idx = index_buf[index_off + r * index_st0];
    if (idx >= 0i && u32(idx) < V) {
      let o = out_off + u32(idx) * D + gi;
      out_buf[o] = out_buf[o] + src_buf[src_off + r * src_st0 + gi * src_st1];
    }
  }`

export const gatherKernels = {
  gather: {
    bindings: ({ table, index, out }) => [input("table", table), input("index", index), output("out", out)],
    params: ({ table, index, out }, p) => {
      p.u32("n", out.shape[0] * out.shape[1]).u32("D", out.shape[1]).u32("V", table.shape[0])
      p.view("table", table).view("index", index).u32("out_off", out.offset)
    },
    shader: () => ({ workgroupSize: [ELEMENTWISE_THREADS, 1, 1], body: GATHER_BODY }),
    grid: ({ out }) => threadGrid(out.shape[0] * out.shape[1], ELEMENTWISE_THREADS),
  },
  scatterAdd: {
    bindings: ({ src, index, out }) => [input("src", src), input("index", index), output("out", out)],
    params: ({ src, index, out }, p) => {
      p.u32("N", src.shape[0]).u32("D", out.shape[1]).u32("V", out.shape[0])
      p.view("src", src).view("index", index).u32("out_off", out.offset)
    },
    // A small workgroup: there are only D threads in all, spread them over as many workgroups as possible.
    shader: () => ({ workgroupSize: [64, 1, 1], body: SCATTER_BODY }),
    grid: ({ out }) => threadGrid(out.shape[1], 64),
  },
} satisfies KernelTable<"gather" | "scatterAdd">
