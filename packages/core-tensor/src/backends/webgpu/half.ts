import type { KernelOf } from "../../backend.js"
import { ELEMENTWISE_THREADS, type KernelGenerator, type KernelPass, planCall, type PlannedGenerator } from "./kernel.js"
import { input, output, ParamList, sizeOfShape, stridedIndex, threadGrid, unravel } from "./wgsl-helpers.js"

/**
 * float16 storage conversions (View.half): the `cast` calls of the tensor layer's float32 ↔ float16 casts. Halves
 * are moved as packed 32-bit words, so neither needs shader-f16 (matmul, which computes on them, does):
 *  - unpack: a thread per float32 output, reading the half at any strided index (exact);
 *  - pack: a thread per output word (two halves, so no two threads write one word), each element read through
 *    the input's strides and rounded to nearest even by `f16_bits` — the same integer algorithm as the host's
 *    `toHalfBits` (dtype.ts), so device and host conversions agree bit for bit.
 */

const F16_BITS_FN = /* wgsl */ `
fn f16_bits(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let a = bits & 0x7fffffffu;
  if (a >= 0x47800000u) { return sign | select(0x7c00u, 0x7e00u, a > 0x7f800000u); }
  if (a < 0x38800000u) {
    if (a < 0x33000000u) { return sign; }
    let m = (a & 0x7fffffu) | 0x800000u;
    let shift = 126u - (a >> 23u);
    let q = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let halfway = 1u << (shift - 1u);
    return sign | (q + select(0u, 1u, rem > halfway || (rem == halfway && (q & 1u) == 1u)));
  }
  return sign | ((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u);
}`

function unpackPass({ x, out }: KernelOf<"unary">): KernelPass {
  const rank = out.shape.length
  const n = sizeOfShape(out.shape)
  const params = new ParamList().u32("n", n).shape("out", out.shape).view("x", x).u32("out_off", out.offset)
  return {
    variant: "unpack f16",
    bindings: [input("x", x, true), output("out", out)],
    params,
    grid: threadGrid(n, ELEMENTWISE_THREADS),
    shader: () => ({
      workgroupSize: [ELEMENTWISE_THREADS, 1, 1],
      body: `  if (gi >= n) { return; }
${unravel("out", rank, "gi")}
  let xi = ${stridedIndex("x", rank)};
  let word = x_buf[xi >> 1u];
  out_buf[out_off + gi] = unpack2x16float(select(word & 0xffffu, word >> 16u, (xi & 1u) == 1u)).x;`,
    }),
  }
}

function packPass({ x, out }: KernelOf<"unary">): KernelPass {
  if (out.offset % 2 !== 0) throw new RangeError(`webgpu cast to float16: the output must start on a whole word (offset ${out.offset} halves)`)
  const rank = out.shape.length
  const n = sizeOfShape(out.shape)
  const params = new ParamList().u32("n", n).shape("out", out.shape).view("x", x).u32("out_word", out.offset / 2)
  return {
    variant: "pack f16",
    bindings: [input("x", x), output("out", out, true)],
    params,
    grid: threadGrid(Math.ceil(n / 2), ELEMENTWISE_THREADS),
    shader: () => ({
      workgroupSize: [ELEMENTWISE_THREADS, 1, 1],
      decls: F16_BITS_FN,
      body: `  if (gi * 2u >= n) { return; }
  var packed = 0u;
  for (var j = 0u; j < 2u; j++) {
    let i = gi * 2u + j;
    if (i < n) {
${unravel("out", rank, "i")}
      packed = packed | (f16_bits(x_buf[${stridedIndex("x", rank)}]) << (16u * j));
    }
  }
  out_buf[out_word + gi] = packed;`,
    }),
  }
}

/** The unary generator, with float32 ↔ float16-storage casts routed to the passes above. */
export function withHalfCasts(g: KernelGenerator<"unary">): PlannedGenerator<"unary"> {
  return {
    plan: (call, ctx, scratch) => {
      if (call.op === "cast" && call.x.half === true && call.out.half !== true) return [unpackPass(call)]
      if (call.op === "cast" && call.out.half === true && call.x.half !== true) return [packPass(call)]
      return planCall(g, call, ctx, scratch)
    },
  }
}
