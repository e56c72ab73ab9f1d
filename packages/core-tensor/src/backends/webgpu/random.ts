import type { KernelOf } from "../../backend.js"
import { ELEMENTWISE_THREADS, type KernelTable } from "./kernel.js"
import { output, type ParamList, sizeOfShape, threadGrid } from "./wgsl-helpers.js"

/**
 * Philox-4x32-10, a line-by-line port of rng.ts with the same u32 arithmetic (mulhi via 16-bit halves, wrapping
 * products and sums), so uniform draws are bit-identical to the CPU backend's.
 */
export const PHILOX = /* wgsl */ `
fn mulhi32(a: u32, b: u32) -> u32 {
  let a_lo = a & 0xffffu;
  let a_hi = a >> 16u;
  let b_lo = b & 0xffffu;
  let b_hi = b >> 16u;
  let lolo = a_lo * b_lo;
  let lohi = a_lo * b_hi;
  let hilo = a_hi * b_lo;
  let hihi = a_hi * b_hi;
  let cross_sum = (lolo >> 16u) + (lohi & 0xffffu) + (hilo & 0xffffu);
  return hihi + (lohi >> 16u) + (hilo >> 16u) + (cross_sum >> 16u);
}

fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var i = 0u; i < 10u; i = i + 1u) {
    let hi0 = mulhi32(0xd2511f53u, c.x);
    let lo0 = 0xd2511f53u * c.x;
    let hi1 = mulhi32(0xcd9e8d57u, c.z);
    let lo1 = 0xcd9e8d57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
  }
  return c;
}`

const TWO_POW_M24 = "5.9604644775390625e-8"

/** Random draw parameters (names through `name`, shared with fused kernels): counter word 0 is
 *  (i + offset) mod 2^32, so offset mod 2^32 is passed and the u32 sum wraps. */
export function randomParams({ seed, stream, offset }: KernelOf<"random">, p: ParamList, name: (n: string) => string = (n) => n): void {
  p.u32(name("ctr_off"), offset % 4294967296).u32(name("stream_lo"), stream[0]).u32(name("stream_hi"), stream[1])
  p.u32(name("seed_lo"), seed[0]).u32(name("seed_hi"), seed[1])
}

/** uniform: (w0 >> 8) · 2⁻²⁴. normal: Box–Muller, cosine branch. The angle 2π·u2 is taken in (−π, π] (cos
 *  is even and 2π-periodic) because WGSL only bounds cos's error on [−π, π]. Element `gi` goes to `out`. */
export function randomStatements(dist: "uniform" | "normal", out: string, $: (n: string) => string = (n) => n): string {
  const draw = `  let w = philox4x32(vec4<u32>(gi + ${$("ctr_off")}, 0u, ${$("stream_lo")}, ${$("stream_hi")}), vec2<u32>(${$("seed_lo")}, ${$("seed_hi")}));`
  if (dist === "uniform") return `${draw}\n  ${out} = f32(w.x >> 8u) * ${TWO_POW_M24};`
  return `${draw}
  let u1 = f32((w.x >> 8u) + 1u) * ${TWO_POW_M24};
  let u2 = f32(w.y >> 8u) * ${TWO_POW_M24};
  let turn = select(u2, u2 - 1.0, u2 > 0.5);
  let r = sqrt(-2.0 * log(u1));
  ${out} = r * cos(6.283185307179586 * turn);`
}

export const randomKernels = {
  random: {
    bindings: ({ out }) => [output("out", out)],
    params: (call, p) => {
      p.u32("n", sizeOfShape(call.out.shape))
      randomParams(call, p)
      p.u32("out_off", call.out.offset)
    },
    shader: ({ dist }) => ({
      workgroupSize: [ELEMENTWISE_THREADS, 1, 1],
      decls: PHILOX,
      body: `  if (gi >= n) { return; }\n${randomStatements(dist, "out_buf[out_off + gi]")}`,
    }),
    grid: ({ out }) => threadGrid(sizeOfShape(out.shape), ELEMENTWISE_THREADS),
  },
} satisfies KernelTable<"random">
