import { type ExportedGlobal, type FunctionBuilder, I32, type ModuleBuilder, V128 } from "./wasm-emit.js"

/**
 * WASM SIMD kernels for the contiguous float32 paths of the element-wise, row-wise and optimizer kernels. Every
 * parameter is an i32 (so each function can be a thread-pool task): pointers are heap byte addresses, counts
 * are elements, f32 scalars are passed as their bit patterns (`f32Bits` on the JS side) and f64 scalars through
 * a parameter block in the heap.
 *
 * Loops process four lanes at a time (the plain maps eight, as two independent halves that V8's revectorizer
 * fuses into 256-bit AVX2 operations); the remainder (n mod 4) goes through the same vector code with one lane
 * loaded (v128.load32_zero) and lane 0 stored, so tails need no separate scalar formulas.
 *
 * exp is Cephes' expf on four lanes: n = round(x·log2 e), r = x − n·ln 2 (two-part ln 2), a degree-5 polynomial
 * for e^r, times 2^n built in the exponent bits (as two factors, so n may reach 128); within 2 ulp over the
 * range. Inputs below −87.34 (results below 2^−126) give 0, above ln(FLT_MAX) +Infinity; NaN stays NaN.
 */

type F = FunctionBuilder

const EXP_LO = -87.3365478515625
const EXP_HI = 88.72283905206835
const LOG2E = 1.4426950408889634
const LN2_HI = 0.693359375
const LN2_LO = -2.12194440e-4
const EXP_POLY = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]

/**
 * Locals an inline exp needs: temporaries, and the constants, which are materialised once at function entry —
 * a v128.const inside a loop is rebuilt from immediates on every iteration by V8 (several instructions each).
 * Call `expTemps` before any loop of the function.
 */
export interface ExpTemps {
  readonly fx: number
  readonly r: number
  readonly y: number
  readonly n: number
  readonly c: Readonly<Record<"lo" | "hi" | "log2e" | "magic" | "ln2hi" | "ln2lo" | "one" | "inf" | "bias" | "magicBits", number>>
  readonly poly: readonly number[]
}
/** 1.5·2^23: adding it rounds a float of magnitude < 2^22 to an integer held in the low mantissa bits. */
const MAGIC = 12582912
export function expTemps(f: F): ExpTemps {
  const constant = (value: number) => {
    const local = f.local(V128)
    f.v128ConstF32(value).set(local)
    return local
  }
  const integer = (value: number) => {
    const local = f.local(V128)
    f.v128ConstI32(value).set(local)
    return local
  }
  return {
    fx: f.local(V128),
    r: f.local(V128),
    y: f.local(V128),
    n: f.local(V128),
    c: {
      lo: constant(EXP_LO),
      hi: constant(EXP_HI),
      log2e: constant(LOG2E),
      magic: constant(MAGIC),
      ln2hi: constant(LN2_HI),
      ln2lo: constant(LN2_LO),
      one: constant(1),
      inf: constant(Infinity),
      bias: integer(127),
      magicBits: integer(0x4b400000),
    },
    poly: EXP_POLY.map(constant),
  }
}

/** Push exp(x) (x a v128 local of f32 lanes). */
export function vexp(f: F, x: number, t: ExpTemps): void {
  const { c } = t
  // r = clamp(x); t = r·log2 e + MAGIC (n in the low bits); fx = round(r·log2 e)
  f.get(x).get(c.lo).f32x4Pmax().get(c.hi).f32x4Pmin().set(t.r)
  f.get(t.r).get(c.log2e).f32x4Mul().get(c.magic).f32x4Add().set(t.n)
  f.get(t.n).get(c.magic).f32x4Sub().set(t.fx)
  f.get(t.r).get(t.fx).get(c.ln2hi).f32x4Mul().f32x4Sub().get(t.fx).get(c.ln2lo).f32x4Mul().f32x4Sub().set(t.r)
  f.get(t.poly[0])
  for (let i = 1; i < t.poly.length; i++) f.get(t.r).f32x4Mul().get(t.poly[i]).f32x4Add()
  f.get(t.r).get(t.r).f32x4Mul().f32x4Mul().get(t.r).f32x4Add().get(c.one).f32x4Add()
  // · 2^n as 2^(n >> 1) · 2^(n − (n >> 1)), so that n = 128 (x up to ln FLT_MAX) needs no exponent field of 255
  f.get(t.n).get(c.magicBits).i32x4Sub().set(t.n)
  f.get(t.n).i32Const(1).i32x4ShrS().get(c.bias).i32x4Add().i32Const(23).i32x4Shl().f32x4Mul()
  f.get(t.n).get(t.n).i32Const(1).i32x4ShrS().i32x4Sub().get(c.bias).i32x4Add().i32Const(23).i32x4Shl().f32x4Mul()
  // underflow → 0, overflow → +Infinity (NaN compares false both ways and stays NaN)
  f.get(x).get(c.lo).f32x4Lt().v128AndNot().set(t.y)
  f.get(c.inf).get(t.y).get(x).get(c.hi).f32x4Gt().v128Bitselect()
}

/** Push σ(x) = 1 / (1 + e^−x). */
function vsigmoid(f: F, x: number, neg: number, t: ExpTemps): void {
  f.get(x).f32x4Neg().set(neg)
  f.v128ConstF32(1)
  f.v128ConstF32(1)
  vexp(f, neg, t)
  f.f32x4Add().f32x4Div()
}

/**
 * `while (count ≥ 4) { body(4); count −= 4 }; while (count > 0) { body(1); count −= 1 }` — body(lanes) emits one
 * step over 4 lanes or a 1-lane tail; `count` (an i32 local) is consumed.
 */
export function lanes(f: F, count: number, body: (width: 4 | 1) => void): void {
  for (const width of [4, 1] as const) {
    f.block().loop()
    f.get(count).i32Const(width).i32LtS().brIf(1)
    body(width)
    f.get(count).i32Const(width).i32Sub().set(count)
    f.br(0)
    f.end().end()
  }
}

/** Load 4 lanes (or 1 lane, zero-extended) from the address on the stack. */
export const load = (f: F, width: 4 | 1) => (width === 4 ? f.v128Load({ align: 0 }) : f.v128Load32Zero())
/** Store 4 lanes (or lane 0): stack [address, value]. */
export const store = (f: F, width: 4 | 1) => (width === 4 ? f.v128Store({ align: 0 }) : f.f32x4ExtractLane(0).f32Store())
/** ptr += width · 4. */
export const advance = (f: F, ptr: number, width: 4 | 1) => f.get(ptr).i32Const(4 * width).i32Add().set(ptr)
/** Push an f32 parameter given as i32 bits, splatted. */
export const splatBits = (f: F, param: number) => f.get(param).f32ReinterpretI32().f32x4Splat()
/** for (i = from; i < to; i++) body — `to` an i32 local, `from` pushed by `start`. */
export function forRange(f: F, i: number, start: () => void, to: number, body: () => void): void {
  start()
  f.set(i)
  f.block().loop()
  f.get(i).get(to).i32GeS().brIf(1)
  body()
  f.get(i).i32Const(1).i32Add().set(i)
  f.br(0)
  f.end().end()
}

/** Horizontal sum of an f32x4 local, pushed as f32 ((l0 + l1) + (l2 + l3)). */
export function hsum(f: F, v: number): void {
  f.get(v).f32x4ExtractLane(0).get(v).f32x4ExtractLane(1).f32Add()
  f.get(v).f32x4ExtractLane(2).get(v).f32x4ExtractLane(3).f32Add().f32Add()
}
export function hmax(f: F, v: number): void {
  f.get(v).f32x4ExtractLane(0).get(v).f32x4ExtractLane(1).f32Max()
  f.get(v).f32x4ExtractLane(2).get(v).f32x4ExtractLane(3).f32Max().f32Max()
}

type Operand = "v" | "s"

/**
 * out[i] = compute(in_0[i], …) for i < n; an "s" operand is one element broadcast (stride 0). Signature:
 * name(out, in_0, …, n, p_0, …) with `params` f32 scalars as bits (splatted into the locals passed to compute).
 */
function emitMap(
  mod: ModuleBuilder,
  name: string,
  operands: readonly Operand[],
  params: number,
  compute: (f: F, x: number[], p: number[]) => void,
  setup?: (f: F) => void,
): void {
  const f = mod.func(name, Array<number>(2 + operands.length + params).fill(I32) as (typeof I32)[])
  const out = 0
  const ins = operands.map((_, k) => 1 + k)
  const n = 1 + operands.length
  const x = operands.map(() => f.local(V128))
  const p = Array.from({ length: params }, () => f.local(V128))
  p.forEach((local, k) => splatBits(f, n + 1 + k).set(local))
  operands.forEach((kind, k) => {
    if (kind === "s") f.get(ins[k]).v128Load32Splat().set(x[k])
  })
  setup?.(f)
  // 8 lanes per iteration as two independent 4-lane halves (the revectorizer fuses them into 256-bit operations
  // on AVX2), then the 4- and 1-lane loops.
  const x2 = operands.map((kind, k) => (kind === "v" ? f.local(V128) : x[k]))
  f.block().loop()
  f.get(n).i32Const(8).i32LtS().brIf(1)
  operands.forEach((kind, k) => {
    if (kind === "v") f.get(ins[k]).v128Load({ align: 0 }).set(x[k]).get(ins[k]).v128Load({ offset: 16, align: 0 }).set(x2[k])
  })
  f.get(out)
  compute(f, x, p)
  f.v128Store({ align: 0 })
  f.get(out)
  compute(f, x2, p)
  f.v128Store({ offset: 16, align: 0 })
  f.get(out).i32Const(32).i32Add().set(out)
  operands.forEach((kind, k) => {
    if (kind === "v") f.get(ins[k]).i32Const(32).i32Add().set(ins[k])
  })
  f.get(n).i32Const(8).i32Sub().set(n)
  f.br(0)
  f.end().end()
  lanes(f, n, (width) => {
    operands.forEach((kind, k) => {
      if (kind === "v") load(f.get(ins[k]), width).set(x[k])
    })
    f.get(out)
    compute(f, x, p)
    store(f, width)
    advance(f, out, width)
    operands.forEach((kind, k) => {
      if (kind === "v") advance(f, ins[k], width)
    })
  })
}

export function emitElementwise(mod: ModuleBuilder, scratch: ExportedGlobal): void {
  // ---- binary, with either side broadcast ----
  const binary: Record<string, (f: F) => void> = {
    add: (f) => f.f32x4Add(),
    mul: (f) => f.f32x4Mul(),
    max: (f) => f.f32x4Max(),
  }
  for (const [op, emit] of Object.entries(binary))
    for (const pattern of ["vv", "vs", "sv"] as const)
      emitMap(mod, `${op}_${pattern}`, [pattern[0] as Operand, pattern[1] as Operand], 0, (f, [a, b]) => {
        f.get(a).get(b)
        emit(f)
      })

  // ---- where (32-bit words, selected bit-exactly) and float comparisons (→ bool words 0/1) ----
  for (const pattern of ["vv", "vs", "sv", "ss"] as const) {
    let zero: number
    emitMap(
      mod,
      `where_v${pattern}`,
      ["v", pattern[0] as Operand, pattern[1] as Operand],
      0,
      (f, [c, a, b]) => f.get(b).get(a).get(c).get(zero).i32x4Eq().v128Bitselect(),
      (f) => {
        zero = f.local(V128)
        f.v128ConstI32(0).set(zero)
      },
    )
  }
  for (const [op, emit] of [
    ["cmplt", (f: F) => f.f32x4Lt()],
    ["cmpeq", (f: F) => f.f32x4Eq()],
  ] as const)
    for (const pattern of ["vv", "vs", "sv"] as const) {
      let one: number
      emitMap(
        mod,
        `${op}_${pattern}`,
        [pattern[0] as Operand, pattern[1] as Operand],
        0,
        (f, [a, b]) => {
          f.get(a).get(b)
          emit(f)
          f.get(one).v128And()
        },
        (f) => {
          one = f.local(V128)
          f.v128ConstI32(1).set(one)
        },
      )
    }

  // ---- unary ----
  emitMap(mod, "neg", ["v"], 0, (f, [x]) => f.get(x).f32x4Neg())
  emitMap(mod, "reciprocal", ["v"], 0, (f, [x]) => f.v128ConstF32(1).get(x).f32x4Div())
  emitMap(mod, "sqrt", ["v"], 0, (f, [x]) => f.get(x).f32x4Sqrt())
  {
    let t: ExpTemps
    emitMap(mod, "exp", ["v"], 0, (f, [x]) => vexp(f, x, t), (f) => (t = expTemps(f)))
  }

  // ---- SwiGLU ----
  {
    let t: ExpTemps
    let neg: number
    emitMap(
      mod,
      "silu_mul",
      ["v", "v"],
      0,
      (f, [z, u]) => {
        f.get(z)
        vsigmoid(f, z, neg, t)
        f.f32x4Mul().get(u).f32x4Mul()
      },
      (f) => {
        t = expTemps(f)
        neg = f.local(V128)
      },
    )
  }
  emitSiluMulBackward(mod)
  emitCopy2d(mod)
  emitAdamW(mod)
  emitReductions(mod, scratch)
  emitSoftmax(mod)
  emitRmsNorm(mod)
  emitRope(mod)
  emitCrossEntropy(mod)
}

/**
 * copy_2d(dst, src, r0, r1, cols, srcRow, srcCol): dst[r, c] = src[r·srcRow + c·srcCol] for rows r0..r1 (dst
 * contiguous, `cols` wide; strides in elements), as 32-bit words, in 16 × 16 tiles so that a transposed source
 * is read a few cache lines at a time.
 */
function emitCopy2d(mod: ModuleBuilder): void {
  const T = 16
  const f = mod.func("copy_2d", Array(7).fill(I32))
  const [dst, src, r0, r1, cols, srcRow, srcCol] = [0, 1, 2, 3, 4, 5, 6]
  const rt = f.local(I32)
  const ct = f.local(I32)
  const r = f.local(I32)
  const c = f.local(I32)
  const rEnd = f.local(I32)
  const cEnd = f.local(I32)
  const s = f.local(I32)
  const d = f.local(I32)
  const sc = f.local(I32)
  f.get(srcCol).i32Const(4).i32Mul().set(sc)
  f.get(r0).set(rt)
  f.block().loop()
  f.get(rt).get(r1).i32GeS().brIf(1)
  f.get(rt).i32Const(T).i32Add().set(rEnd)
  f.get(r1).get(rEnd).get(rEnd).get(r1).i32GtS().select().set(rEnd)
  f.i32Const(0).set(ct)
  f.block().loop()
  f.get(ct).get(cols).i32GeS().brIf(1)
  f.get(ct).i32Const(T).i32Add().set(cEnd)
  f.get(cols).get(cEnd).get(cEnd).get(cols).i32GtS().select().set(cEnd)
  forRange(f, r, () => f.get(rt), rEnd, () => {
    f.get(src).get(r).get(srcRow).i32Mul().get(ct).get(srcCol).i32Mul().i32Add().i32Const(4).i32Mul().i32Add().set(s)
    f.get(dst).get(r).get(cols).i32Mul().get(ct).i32Add().i32Const(4).i32Mul().i32Add().set(d)
    forRange(f, c, () => f.get(ct), cEnd, () => {
      f.get(d).get(s).i32Load({ align: 0 }).i32Store()
      f.get(s).get(sc).i32Add().set(s)
      f.get(d).i32Const(4).i32Add().set(d)
    })
  })
  f.get(ct).i32Const(T).i32Add().set(ct)
  f.br(0)
  f.end().end()
  f.get(rt).i32Const(T).i32Add().set(rt)
  f.br(0)
  f.end().end()
}

/** silu_mul_bwd(dGate, dUp, gate, up, g, n): dGate = g·up·σ(1 + z(1 − σ)), dUp = g·z·σ. */
function emitSiluMulBackward(mod: ModuleBuilder): void {
  const f = mod.func("silu_mul_bwd", [I32, I32, I32, I32, I32, I32])
  const [dGate, dUp, gate, up, g, n] = [0, 1, 2, 3, 4, 5]
  const z = f.local(V128)
  const u = f.local(V128)
  const gv = f.local(V128)
  const s = f.local(V128)
  const neg = f.local(V128)
  const t = expTemps(f)
  lanes(f, n, (width) => {
    load(f.get(gate), width).set(z)
    load(f.get(up), width).set(u)
    load(f.get(g), width).set(gv)
    vsigmoid(f, z, neg, t)
    f.set(s)
    // dGate = g·up·s·(1 + z·(1 − s))
    f.get(dGate).get(gv).get(u).f32x4Mul().get(s).f32x4Mul()
    f.get(t.c.one).get(z).get(t.c.one).get(s).f32x4Sub().f32x4Mul().f32x4Add().f32x4Mul()
    store(f, width)
    f.get(dUp).get(gv).get(z).f32x4Mul().get(s).f32x4Mul()
    store(f, width)
    for (const ptr of [dGate, dUp, gate, up, g]) advance(f, ptr, width)
  })
}

/**
 * adamw(p, m, v, g, n, params) in f32 lanes, as torch's f32 AdamW kernels compute it; params is a heap block of
 * f32 [decay = lr·wd, β1, 1 − β1, β2, 1 − β2, lr / bc1, 1 / bc2, eps]:
 *   p' = p − decay·p;  m' = β1·m + (1−β1)·g;  v' = β2·v + (1−β2)·g·g;  p = p' − m'·(lr/bc1) / (sqrt(v'·(1/bc2)) + eps)
 */
function emitAdamW(mod: ModuleBuilder): void {
  const f = mod.func("adamw", [I32, I32, I32, I32, I32, I32])
  const [P, M, V, G, n, params] = [0, 1, 2, 3, 4, 5]
  const c = Array.from({ length: 8 }, () => f.local(V128))
  c.forEach((local, k) => f.get(params).v128Load32Splat({ offset: 4 * k }).set(local))
  const [decay, b1, ob1, b2, ob2, lrc, ibc2, eps] = c
  const pv = f.local(V128)
  const mv = f.local(V128)
  const vv = f.local(V128)
  const gv = f.local(V128)
  lanes(f, n, (width) => {
    load(f.get(P), width).set(pv)
    load(f.get(G), width).set(gv)
    // m' = β1·m + (1 − β1)·g
    f.get(M)
    load(f.get(M), width)
    f.get(b1).f32x4Mul().get(ob1).get(gv).f32x4Mul().f32x4Add().tee(mv)
    store(f, width)
    // v' = β2·v + (1 − β2)·g·g
    f.get(V)
    load(f.get(V), width)
    f.get(b2).f32x4Mul().get(ob2).get(gv).f32x4Mul().get(gv).f32x4Mul().f32x4Add().tee(vv)
    store(f, width)
    // p = (p − decay·p) − m'·(lr/bc1) / (sqrt(v'/bc2) + eps)
    f.get(P)
    f.get(pv).get(decay).get(pv).f32x4Mul().f32x4Sub()
    f.get(mv).get(lrc).f32x4Mul().get(vv).get(ibc2).f32x4Mul().f32x4Sqrt().get(eps).f32x4Add().f32x4Div()
    f.f32x4Sub()
    store(f, width)
    for (const ptr of [P, M, V, G]) advance(f, ptr, width)
  })
}

/**
 * row_sum(out, x, rows, cols): out[r] = Σ_c x[r, c] accumulated in f64 lanes; row_max likewise with max
 * (−Infinity for cols = 0).
 * col_sum(out, x, outer, len, cols, pitch): out[o, j] = Σ_t x[o, t, j] for j < cols, x laid out [outer, len,
 * pitch] and out [outer, pitch] (so a column range is just offset pointers), in f64 accumulators kept in the
 * thread's scratch, 256 columns at a time; col_max likewise (accumulating in out).
 */
function emitReductions(mod: ModuleBuilder, scratch: ExportedGlobal): void {
  {
    const f = mod.func("row_sum", [I32, I32, I32, I32])
    const [out, x, rows, cols] = [0, 1, 2, 3]
    const r = f.local(I32)
    const k = f.local(I32)
    const a0 = f.local(V128)
    const a1 = f.local(V128)
    const v = f.local(V128)
    forRange(f, r, () => f.i32Const(0), rows, () => {
      f.v128ConstF32(0).set(a0).v128ConstF32(0).set(a1)
      f.get(cols).set(k)
      lanes(f, k, (width) => {
        load(f.get(x), width).set(v)
        f.get(a0).get(v).f64x2PromoteLowF32x4().f64x2Add().set(a0)
        if (width === 4) f.get(a1).get(v).get(v).i32x4Shuffle([2, 3, 2, 3]).f64x2PromoteLowF32x4().f64x2Add().set(a1)
        advance(f, x, width)
      })
      f.get(out)
      f.get(a0).f64x2ExtractLane(0).get(a0).f64x2ExtractLane(1).f64Add()
      f.get(a1).f64x2ExtractLane(0).get(a1).f64x2ExtractLane(1).f64Add().f64Add().f32DemoteF64().f32Store()
      f.get(out).i32Const(4).i32Add().set(out)
    })
  }
  {
    const f = mod.func("row_max", [I32, I32, I32, I32])
    const [out, x, rows, cols] = [0, 1, 2, 3]
    const r = f.local(I32)
    const k = f.local(I32)
    const a = f.local(V128)
    forRange(f, r, () => f.i32Const(0), rows, () => {
      f.v128ConstF32(-Infinity).set(a)
      f.get(cols).set(k)
      lanes(f, k, (width) => {
        if (width === 4) f.get(a).get(x).v128Load({ align: 0 }).f32x4Max().set(a)
        else f.get(a).get(x).v128Load32Splat().f32x4Max().set(a)
        advance(f, x, width)
      })
      f.get(out)
      hmax(f, a)
      f.f32Store()
      f.get(out).i32Const(4).i32Add().set(out)
    })
  }
  const CHUNK = 256
  {
    const f = mod.func("col_sum", [I32, I32, I32, I32, I32, I32])
    const [out, x, outer, len, cols, pitch] = [0, 1, 2, 3, 4, 5]
    const o = f.local(I32)
    const j0 = f.local(I32)
    const w = f.local(I32)
    const t = f.local(I32)
    const k = f.local(I32)
    const src = f.local(I32)
    const acc = f.local(I32)
    const dst = f.local(I32)
    const v = f.local(V128)
    const rowBytes = f.local(I32)
    f.get(pitch).i32Const(4).i32Mul().set(rowBytes)
    forRange(f, o, () => f.i32Const(0), outer, () => {
      f.i32Const(0).set(j0)
      f.block().loop()
      f.get(j0).get(cols).i32GeS().brIf(1)
      // w = min(CHUNK, cols − j0)
      f.get(cols).get(j0).i32Sub().set(w)
      f.i32Const(CHUNK).get(w).get(w).i32Const(CHUNK).i32GtS().select().set(w)
      f.globalGet(scratch.index).i32Const(0).get(w).i32Const(8).i32Mul().memoryFill()
      forRange(f, t, () => f.i32Const(0), len, () => {
        // src = x + (o·len + t)·pitch·4 + j0·4
        f.get(x).get(o).get(len).i32Mul().get(t).i32Add().get(rowBytes).i32Mul().i32Add().get(j0).i32Const(4).i32Mul().i32Add().set(src)
        f.globalGet(scratch.index).set(acc)
        f.get(w).set(k)
        lanes(f, k, (width) => {
          load(f.get(src), width).set(v)
          f.get(acc).get(acc).v128Load().get(v).f64x2PromoteLowF32x4().f64x2Add().v128Store()
          if (width === 4) f.get(acc).get(acc).v128Load({ offset: 16 }).get(v).get(v).i32x4Shuffle([2, 3, 2, 3]).f64x2PromoteLowF32x4().f64x2Add().v128Store({ offset: 16 })
          advance(f, src, width)
          f.get(acc).i32Const(8 * width).i32Add().set(acc)
        })
      })
      // out[o, j0 .. j0 + w) = f32(acc)
      f.get(out).get(o).get(rowBytes).i32Mul().i32Add().get(j0).i32Const(4).i32Mul().i32Add().set(dst)
      f.globalGet(scratch.index).set(acc)
      f.get(w).set(k)
      f.block().loop()
      f.get(k).i32Eqz().brIf(1)
      f.get(dst).get(acc).f64Load().f32DemoteF64().f32Store()
      f.get(dst).i32Const(4).i32Add().set(dst)
      f.get(acc).i32Const(8).i32Add().set(acc)
      f.get(k).i32Const(1).i32Sub().set(k)
      f.br(0)
      f.end().end()
      f.get(j0).i32Const(CHUNK).i32Add().set(j0)
      f.br(0)
      f.end().end()
    })
  }
  {
    const f = mod.func("col_max", [I32, I32, I32, I32, I32, I32])
    const [out, x, outer, len, cols, pitch] = [0, 1, 2, 3, 4, 5]
    const o = f.local(I32)
    const t = f.local(I32)
    const k = f.local(I32)
    const src = f.local(I32)
    const dst = f.local(I32)
    const rowBytes = f.local(I32)
    f.get(pitch).i32Const(4).i32Mul().set(rowBytes)
    forRange(f, o, () => f.i32Const(0), outer, () => {
      // out row = −Infinity, then max in every slice t.
      f.get(out).get(o).get(rowBytes).i32Mul().i32Add().set(dst)
      f.get(cols).set(k)
      lanes(f, k, (width) => {
        f.get(dst).v128ConstF32(-Infinity)
        store(f, width)
        advance(f, dst, width)
      })
      forRange(f, t, () => f.i32Const(0), len, () => {
        f.get(x).get(o).get(len).i32Mul().get(t).i32Add().get(rowBytes).i32Mul().i32Add().set(src)
        f.get(out).get(o).get(rowBytes).i32Mul().i32Add().set(dst)
        f.get(cols).set(k)
        lanes(f, k, (width) => {
          f.get(dst)
          load(f.get(dst), width)
          load(f.get(src), width)
          f.f32x4Max()
          store(f, width)
          advance(f, src, width)
          advance(f, dst, width)
        })
      })
    })
  }
}

/**
 * softmax_rows(out, x, r0, r1, C, scaleBits, masked, causal, window, tq, qOffset): rows r0..r1 of the softmax
 * kernel without a key mask. When `masked`, row r allows keys [lo, hi) with position = r mod tq + qOffset,
 * hi = causal ? clamp(position + 1) : C, lo = window > 0 ? clamp(position − window + 1) : 0.
 * softmax_bwd_rows(dx, p, g, r0, r1, C, scaleBits): dx = p·(g − Σ g·p)·scale.
 */
function emitSoftmax(mod: ModuleBuilder): void {
  {
    const f = mod.func("softmax_rows", Array(11).fill(I32))
    const [out, x, r0, r1, C, scaleBits, masked, causal, window, tq, qOffset] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    const r = f.local(I32)
    const lo = f.local(I32)
    const hi = f.local(I32)
    const pos = f.local(I32)
    const k = f.local(I32)
    const px = f.local(I32)
    const py = f.local(I32)
    const rowX = f.local(I32)
    const rowY = f.local(I32)
    const scale = f.local(V128)
    const mx = f.local(V128)
    const sum = f.local(V128)
    const z = f.local(V128)
    const t = expTemps(f)
    const maxScalar = f.local(V128)
    splatBits(f, scaleBits).set(scale)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(x).get(r).get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(rowX)
      f.get(out).get(r).get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(rowY)
      f.i32Const(0).set(lo).get(C).set(hi)
      f.get(masked).if()
      f.get(r).get(tq).i32RemU().get(qOffset).i32Add().set(pos)
      f.get(causal).if()
      // hi = max(0, min(C, pos + 1))
      f.get(pos).i32Const(1).i32Add().set(hi)
      f.get(C).get(hi).get(hi).get(C).i32GtS().select().set(hi)
      f.i32Const(0).get(hi).get(hi).i32Const(0).i32LtS().select().set(hi)
      f.end()
      f.get(window).i32Const(0).i32GtS().if()
      f.get(pos).get(window).i32Sub().i32Const(1).i32Add().set(lo)
      f.get(C).get(lo).get(lo).get(C).i32GtS().select().set(lo)
      f.i32Const(0).get(lo).get(lo).i32Const(0).i32LtS().select().set(lo)
      f.end()
      f.end()
      // Zero the whole row first; allowed keys are overwritten below.
      f.get(rowY).i32Const(0).get(C).i32Const(4).i32Mul().memoryFill()
      f.get(hi).get(lo).i32GtS().if()
      {
        // max of z = x·scale over [lo, hi)
        f.v128ConstF32(-Infinity).set(mx)
        f.get(rowX).get(lo).i32Const(4).i32Mul().i32Add().set(px)
        f.get(hi).get(lo).i32Sub().set(k)
        lanes(f, k, (width) => {
          if (width === 4) f.get(mx).get(px).v128Load({ align: 0 }).get(scale).f32x4Mul().f32x4Max().set(mx)
          else f.get(mx).get(px).v128Load32Splat().get(scale).f32x4Mul().f32x4Max().set(mx)
          advance(f, px, width)
        })
        hmax(f, mx)
        f.f32x4Splat().set(maxScalar)
        // e = exp(z − max) into out, summed
        f.v128ConstF32(0).set(sum)
        f.get(rowX).get(lo).i32Const(4).i32Mul().i32Add().set(px)
        f.get(rowY).get(lo).i32Const(4).i32Mul().i32Add().set(py)
        f.get(hi).get(lo).i32Sub().set(k)
        lanes(f, k, (width) => {
          load(f.get(px), width).get(scale).f32x4Mul().get(maxScalar).f32x4Sub().set(z)
          vexp(f, z, t)
          f.set(z)
          if (width === 1) f.get(z).v128ConstI32(-1, 0, 0, 0).v128And().set(z) // only lane 0 is real
          f.get(sum).get(z).f32x4Add().set(sum)
          f.get(py).get(z)
          store(f, width)
          advance(f, px, width)
          advance(f, py, width)
        })
        // out *= 1 / sum
        f.v128ConstF32(1)
        hsum(f, sum)
        f.f32x4Splat().f32x4Div().set(z)
        f.get(rowY).get(lo).i32Const(4).i32Mul().i32Add().set(py)
        f.get(hi).get(lo).i32Sub().set(k)
        lanes(f, k, (width) => {
          f.get(py)
          load(f.get(py), width).get(z).f32x4Mul()
          store(f, width)
          advance(f, py, width)
        })
      }
      f.end()
    })
  }
  {
    const f = mod.func("softmax_bwd_rows", Array(7).fill(I32))
    const [dx, p, g, r0, r1, C, scaleBits] = [0, 1, 2, 3, 4, 5, 6]
    const r = f.local(I32)
    const k = f.local(I32)
    const pp = f.local(I32)
    const pg = f.local(I32)
    const pd = f.local(I32)
    const acc = f.local(V128)
    const dot = f.local(V128)
    const scale = f.local(V128)
    splatBits(f, scaleBits).set(scale)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(r).get(C).i32Mul().i32Const(4).i32Mul().set(k)
      f.get(p).get(k).i32Add().set(pp)
      f.get(g).get(k).i32Add().set(pg)
      f.get(dx).get(k).i32Add().set(pd)
      f.v128ConstF32(0).set(acc)
      f.get(C).set(k)
      lanes(f, k, (width) => {
        f.get(acc)
        load(f.get(pp), width)
        load(f.get(pg), width)
        f.f32x4Mul().f32x4Add().set(acc)
        advance(f, pp, width)
        advance(f, pg, width)
      })
      hsum(f, acc)
      f.f32x4Splat().set(dot)
      f.get(r).get(C).i32Mul().i32Const(4).i32Mul().set(k)
      f.get(p).get(k).i32Add().set(pp)
      f.get(g).get(k).i32Add().set(pg)
      f.get(C).set(k)
      lanes(f, k, (width) => {
        f.get(pd)
        load(f.get(pp), width)
        load(f.get(pg), width)
        f.get(dot).f32x4Sub().f32x4Mul().get(scale).f32x4Mul()
        store(f, width)
        advance(f, pp, width)
        advance(f, pg, width)
        advance(f, pd, width)
      })
    })
  }
}

/**
 * rmsnorm_rows(out, rstd, x, w, r0, r1, D, epsBits): s = f32(1 / sqrt(Σx²/D + eps)) (the sum of squares in f64
 * lanes), out = w · f32(x · s).
 * rmsnorm_bwd_rows(dx, x, w, rstd, g, r0, r1, D): dx = s·(g·w − x·s·mean(g·w·x·s)).
 */
function emitRmsNorm(mod: ModuleBuilder): void {
  {
    const f = mod.func("rmsnorm_rows", Array(8).fill(I32))
    const [out, rstd, x, w, r0, r1, D, epsBits] = [0, 1, 2, 3, 4, 5, 6, 7]
    const r = f.local(I32)
    const k = f.local(I32)
    const px = f.local(I32)
    const pw = f.local(I32)
    const py = f.local(I32)
    const a0 = f.local(V128)
    const a1 = f.local(V128)
    const v = f.local(V128)
    const s = f.local(V128)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(x).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(px)
      f.v128ConstF32(0).set(a0).v128ConstF32(0).set(a1)
      f.get(D).set(k)
      lanes(f, k, (width) => {
        load(f.get(px), width).set(v)
        f.get(v).f64x2PromoteLowF32x4().set(s)
        f.get(a0).get(s).get(s).f64x2Mul().f64x2Add().set(a0)
        if (width === 4) {
          f.get(v).get(v).i32x4Shuffle([2, 3, 2, 3]).f64x2PromoteLowF32x4().set(s)
          f.get(a1).get(s).get(s).f64x2Mul().f64x2Add().set(a1)
        }
        advance(f, px, width)
      })
      // s = f32(1 / sqrt(sum / D + eps))
      f.f64Const(1)
      f.get(a0).f64x2ExtractLane(0).get(a0).f64x2ExtractLane(1).f64Add()
      f.get(a1).f64x2ExtractLane(0).get(a1).f64x2ExtractLane(1).f64Add().f64Add()
      f.get(D).f64ConvertI32S().f64Div()
      f.get(epsBits).f32ReinterpretI32().f64PromoteF32().f64Add().f64Sqrt().f64Div().f32DemoteF64()
      f.f32x4Splat().set(s)
      f.get(rstd).get(r).i32Const(4).i32Mul().i32Add().get(s).f32x4ExtractLane(0).f32Store()
      f.get(x).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(px)
      f.get(out).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(py)
      f.get(w).set(pw)
      f.get(D).set(k)
      lanes(f, k, (width) => {
        f.get(py)
        load(f.get(pw), width)
        load(f.get(px), width)
        f.get(s).f32x4Mul().f32x4Mul()
        store(f, width)
        advance(f, px, width)
        advance(f, pw, width)
        advance(f, py, width)
      })
    })
  }
  {
    const f = mod.func("rmsnorm_bwd_rows", Array(8).fill(I32))
    const [dx, x, w, rstd, g, r0, r1, D] = [0, 1, 2, 3, 4, 5, 6, 7]
    const r = f.local(I32)
    const k = f.local(I32)
    const px = f.local(I32)
    const pw = f.local(I32)
    const pg = f.local(I32)
    const pd = f.local(I32)
    const acc = f.local(V128)
    const s = f.local(V128)
    const mean = f.local(V128)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(rstd).get(r).i32Const(4).i32Mul().i32Add().v128Load32Splat().set(s)
      f.get(x).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(px)
      f.get(g).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(pg)
      f.get(w).set(pw)
      f.v128ConstF32(0).set(acc)
      f.get(D).set(k)
      lanes(f, k, (width) => {
        f.get(acc)
        load(f.get(pg), width)
        load(f.get(pw), width)
        f.f32x4Mul()
        load(f.get(px), width)
        f.f32x4Mul().get(s).f32x4Mul().f32x4Add().set(acc)
        advance(f, px, width)
        advance(f, pw, width)
        advance(f, pg, width)
      })
      hsum(f, acc)
      f.get(D).f32ConvertI32S().f32Div().f32x4Splat().set(mean)
      f.get(x).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(px)
      f.get(g).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(pg)
      f.get(dx).get(r).get(D).i32Mul().i32Const(4).i32Mul().i32Add().set(pd)
      f.get(w).set(pw)
      f.get(D).set(k)
      lanes(f, k, (width) => {
        f.get(pd).get(s)
        load(f.get(pg), width)
        load(f.get(pw), width)
        f.f32x4Mul()
        load(f.get(px), width)
        f.get(s).f32x4Mul().get(mean).f32x4Mul().f32x4Sub().f32x4Mul()
        store(f, width)
        advance(f, px, width)
        advance(f, pw, width)
        advance(f, pg, width)
        advance(f, pd, width)
      })
    })
  }
}

/**
 * rope_rows(out, x, cos, sin, r0, r1, T, Dh, rowsPerBatch, perBatchTable, backward): rows r of [B·H·T, Dh];
 * the table row is (b·T + t) with b = floor(r / rowsPerBatch) when perBatchTable, else t; t = r mod T.
 */
function emitRope(mod: ModuleBuilder): void {
  const f = mod.func("rope_rows", Array(11).fill(I32))
  const [out, x, cos, sin, r0, r1, T, Dh, rowsPerBatch, perBatch, backward] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  const r = f.local(I32)
  const k = f.local(I32)
  const half = f.local(I32) // bytes
  const px = f.local(I32)
  const py = f.local(I32)
  const pc = f.local(I32)
  const ps = f.local(I32)
  const lo = f.local(V128)
  const hi = f.local(V128)
  f.get(Dh).i32Const(2).i32Mul().set(half)
  forRange(f, r, () => f.get(r0), r1, () => {
    f.get(x).get(r).get(Dh).i32Mul().i32Const(4).i32Mul().i32Add().set(px)
    f.get(out).get(r).get(Dh).i32Mul().i32Const(4).i32Mul().i32Add().set(py)
    // table row = (perBatch ? floor(r / rowsPerBatch)·T : 0) + r mod T
    f.get(r).get(T).i32RemU()
    f.get(r).get(rowsPerBatch).i32DivU().get(T).i32Mul().i32Const(0).get(perBatch).select()
    f.i32Add().get(Dh).i32Mul().i32Const(4).i32Mul().set(k)
    f.get(cos).get(k).i32Add().set(pc)
    f.get(sin).get(k).i32Add().set(ps)
    f.get(Dh).i32Const(2).i32DivU().set(k)
    f.get(backward).if()
    lanes(f, k, (width) => {
      load(f.get(px), width).set(lo)
      f.get(px).get(half).i32Add()
      load(f, width).set(hi)
      // out[d] = lo·cos[d] + hi·sin[d + half]
      f.get(py).get(lo)
      load(f.get(pc), width)
      f.f32x4Mul().get(hi)
      load(f.get(ps).get(half).i32Add(), width)
      f.f32x4Mul().f32x4Add()
      store(f, width)
      // out[d + half] = hi·cos[d + half] − lo·sin[d]
      f.get(py).get(half).i32Add().get(hi)
      load(f.get(pc).get(half).i32Add(), width)
      f.f32x4Mul().get(lo)
      load(f.get(ps), width)
      f.f32x4Mul().f32x4Sub()
      store(f, width)
      for (const p of [px, py, pc, ps]) advance(f, p, width)
    })
    f.else()
    lanes(f, k, (width) => {
      load(f.get(px), width).set(lo)
      f.get(px).get(half).i32Add()
      load(f, width).set(hi)
      // out[d] = lo·cos[d] − hi·sin[d]
      f.get(py).get(lo)
      load(f.get(pc), width)
      f.f32x4Mul().get(hi)
      load(f.get(ps), width)
      f.f32x4Mul().f32x4Sub()
      store(f, width)
      // out[d + half] = hi·cos[d + half] + lo·sin[d + half]
      f.get(py).get(half).i32Add().get(hi)
      load(f.get(pc).get(half).i32Add(), width)
      f.f32x4Mul().get(lo)
      load(f.get(ps).get(half).i32Add(), width)
      f.f32x4Mul().f32x4Add()
      store(f, width)
      for (const p of [px, py, pc, ps]) advance(f, p, width)
    })
    f.end()
  })
}

/**
 * ce_rows(maxOut, sumOut, logits, r0, r1, V): per row the max and Σ exp(l − max) (f32 lanes, f64 total), for
 * the JS side to finish lse = max + log(sum).
 * ce_bwd_rows(dl, logits, lse, g, r0, r1, V): dl = g·exp(l − lse) for every row (the JS side then subtracts g
 * at the target and zeros ignored rows).
 */
function emitCrossEntropy(mod: ModuleBuilder): void {
  {
    const f = mod.func("ce_rows", Array(6).fill(I32))
    const [maxOut, sumOut, logits, r0, r1, V] = [0, 1, 2, 3, 4, 5]
    const r = f.local(I32)
    const k = f.local(I32)
    const p = f.local(I32)
    const row = f.local(I32)
    const mx = f.local(V128)
    const sum = f.local(V128)
    const z = f.local(V128)
    const t = expTemps(f)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(logits).get(r).get(V).i32Mul().i32Const(4).i32Mul().i32Add().set(row)
      f.get(row).set(p)
      f.v128ConstF32(-Infinity).set(mx)
      f.get(V).set(k)
      lanes(f, k, (width) => {
        if (width === 4) f.get(mx).get(p).v128Load({ align: 0 }).f32x4Max().set(mx)
        else f.get(mx).get(p).v128Load32Splat().f32x4Max().set(mx)
        advance(f, p, width)
      })
      hmax(f, mx)
      f.f32x4Splat().set(mx)
      f.get(maxOut).get(r).i32Const(4).i32Mul().i32Add().get(mx).f32x4ExtractLane(0).f32Store()
      f.v128ConstF32(0).set(sum)
      f.get(row).set(p)
      f.get(V).set(k)
      lanes(f, k, (width) => {
        load(f.get(p), width).get(mx).f32x4Sub().set(z)
        vexp(f, z, t)
        f.set(z)
        if (width === 1) f.get(z).v128ConstI32(-1, 0, 0, 0).v128And().set(z)
        f.get(sum).get(z).f32x4Add().set(sum)
        advance(f, p, width)
      })
      f.get(sumOut).get(r).i32Const(4).i32Mul().i32Add()
      hsum(f, sum)
      f.f32Store()
    })
  }
  {
    const f = mod.func("ce_bwd_rows", Array(7).fill(I32))
    const [dl, logits, lse, g, r0, r1, V] = [0, 1, 2, 3, 4, 5, 6]
    const r = f.local(I32)
    const k = f.local(I32)
    const p = f.local(I32)
    const q = f.local(I32)
    const l = f.local(V128)
    const gn = f.local(V128)
    const z = f.local(V128)
    const t = expTemps(f)
    forRange(f, r, () => f.get(r0), r1, () => {
      f.get(lse).get(r).i32Const(4).i32Mul().i32Add().v128Load32Splat().set(l)
      f.get(g).get(r).i32Const(4).i32Mul().i32Add().v128Load32Splat().set(gn)
      f.get(logits).get(r).get(V).i32Mul().i32Const(4).i32Mul().i32Add().set(p)
      f.get(dl).get(r).get(V).i32Mul().i32Const(4).i32Mul().i32Add().set(q)
      f.get(V).set(k)
      lanes(f, k, (width) => {
        load(f.get(p), width).get(l).f32x4Sub().set(z)
        f.get(q).get(gn)
        vexp(f, z, t)
        f.f32x4Mul()
        store(f, width)
        advance(f, p, width)
        advance(f, q, width)
      })
    })
  }
}
