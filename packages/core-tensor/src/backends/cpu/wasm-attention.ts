import { I32, type FunctionBuilder, type ModuleBuilder, V128 } from "./wasm-emit.js"
import { advance, expTemps, forRange, hmax, hsum, lanes, load, splatBits, store, vexp } from "./wasm-elementwise.js"

/**
 * Row kernels of the CPU attention (attention-fast.ts): the score matrix S = Q·Kᵀ of a (batch, KV head) holds
 * rows r = ((b·Hkv + hk)·G + g)·T + t, Tk keys each; row r is query t = r mod T at position t + qOffset.
 *
 *  attn_mask_rows(S, mask, r0, r1, C, rowsPerBatch)   S[r, j] = −∞ where keyMask[b, j] = 0, b = ⌊r / rowsPerBatch⌋
 *  attn_softmax_rows(S, maxOut, sumOut, r0, r1, C, scaleBits, flags, window, tq, qOffset)
 *        in place: S[r] = softmax over the allowed keys of S[r]·scale (0 elsewhere), maxOut[r] = the max,
 *        sumOut[r] = Σ exp(z − max) (the JS side makes lse = max + log sum); a row without an allowed
 *        (unmasked) key is all 0 with max = −∞, sum = 0
 *  attn_probs_rows(S, lse, r0, r1, C, scaleBits, flags, window, tq, qOffset)
 *        in place: S[r] = exp(S[r]·scale − lse[r]) on allowed keys, 0 elsewhere and on rows with lse = −∞
 *  attn_ds_rows(dP, P, delta, r0, r1, C, scaleBits)   in place: dP = P·(dP − delta[r])·scale
 *  row_dot(out, a, b, rows, cols)                     out[r] = Σ_c a[r, c]·b[r, c]
 *
 * flags: bit 0 = the causal/window rule applies, bit 1 = causal (window > 0 adds the lower bound).
 */
export function emitAttentionRows(mod: ModuleBuilder): void {
  emitMaskRows(mod)
  emitSoftmaxRows(mod)
  emitProbsRows(mod)
  emitDsRows(mod)
  emitRowDot(mod)
}

type F = FunctionBuilder

/** lo, hi := the allowed key range of row r (the rule of the softmax kernel). */
function keyRange(f: F, r: number, C: number, flags: number, window: number, tq: number, qOffset: number, lo: number, hi: number, pos: number): void {
  f.i32Const(0).set(lo).get(C).set(hi)
  f.get(flags).i32Const(1).i32And().if()
  f.get(r).get(tq).i32RemU().get(qOffset).i32Add().set(pos)
  f.get(flags).i32Const(2).i32And().if()
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
  // An empty range is [lo, lo).
  f.get(hi).get(lo).get(hi).get(lo).i32GtS().select().set(hi)
}

/** Zero row bytes [from, to) elements of the row at `row`. */
function zero(f: F, row: number, from: () => void, to: () => void): void {
  f.get(row)
  from()
  f.i32Const(4).i32Mul().i32Add()
  f.i32Const(0)
  to()
  from()
  f.i32Sub().i32Const(4).i32Mul()
  f.memoryFill()
}

function emitMaskRows(mod: ModuleBuilder): void {
  const f = mod.func("attn_mask_rows", Array(6).fill(I32))
  const [S, mask, r0, r1, C, rowsPerBatch] = [0, 1, 2, 3, 4, 5]
  const r = f.local(I32)
  const k = f.local(I32)
  const ps = f.local(I32)
  const pm = f.local(I32)
  const ninf = f.local(V128)
  const zero4 = f.local(V128)
  f.v128ConstF32(-Infinity).set(ninf).v128ConstI32(0).set(zero4)
  forRange(f, r, () => f.get(r0), r1, () => {
    f.get(S).get(r).get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(ps)
    f.get(mask).get(r).get(rowsPerBatch).i32DivU().get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(pm)
    f.get(C).set(k)
    lanes(f, k, (width) => {
      // S = mask == 0 ? −∞ : S
      f.get(ps).get(ninf)
      load(f.get(ps), width)
      load(f.get(pm), width)
      f.get(zero4).i32x4Eq().v128Bitselect()
      store(f, width)
      advance(f, ps, width)
      advance(f, pm, width)
    })
  })
}

function emitSoftmaxRows(mod: ModuleBuilder): void {
  const f = mod.func("attn_softmax_rows", Array(11).fill(I32))
  const [S, maxOut, sumOut, r0, r1, C, scaleBits, flags, window, tq, qOffset] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  const r = f.local(I32)
  const lo = f.local(I32)
  const hi = f.local(I32)
  const pos = f.local(I32)
  const k = f.local(I32)
  const p = f.local(I32)
  const row = f.local(I32)
  const scale = f.local(V128)
  const mx = f.local(V128)
  const sum = f.local(V128)
  const z = f.local(V128)
  const t = expTemps(f)
  splatBits(f, scaleBits).set(scale)
  forRange(f, r, () => f.get(r0), r1, () => {
    f.get(S).get(r).get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(row)
    keyRange(f, r, C, flags, window, tq, qOffset, lo, hi, pos)
    zero(f, row, () => f.i32Const(0), () => f.get(lo))
    zero(f, row, () => f.get(hi), () => f.get(C))
    // max of S·scale over [lo, hi)
    f.v128ConstF32(-Infinity).set(mx)
    f.get(row).get(lo).i32Const(4).i32Mul().i32Add().set(p)
    f.get(hi).get(lo).i32Sub().set(k)
    lanes(f, k, (width) => {
      if (width === 4) f.get(mx).get(p).v128Load({ align: 0 }).get(scale).f32x4Mul().f32x4Max().set(mx)
      else f.get(mx).get(p).v128Load32Splat().get(scale).f32x4Mul().f32x4Max().set(mx)
      advance(f, p, width)
    })
    hmax(f, mx)
    f.f32x4Splat().set(mx)
    f.get(maxOut).get(r).i32Const(4).i32Mul().i32Add().get(mx).f32x4ExtractLane(0).f32Store()
    f.get(mx).f32x4ExtractLane(0).f32Const(-Infinity).f32Eq().if()
    {
      zero(f, row, () => f.get(lo), () => f.get(hi))
      f.get(sumOut).get(r).i32Const(4).i32Mul().i32Add().f32Const(0).f32Store()
    }
    f.else()
    {
      f.v128ConstF32(0).set(sum)
      f.get(row).get(lo).i32Const(4).i32Mul().i32Add().set(p)
      f.get(hi).get(lo).i32Sub().set(k)
      lanes(f, k, (width) => {
        load(f.get(p), width).get(scale).f32x4Mul().get(mx).f32x4Sub().set(z)
        vexp(f, z, t)
        f.set(z)
        if (width === 1) f.get(z).v128ConstI32(-1, 0, 0, 0).v128And().set(z)
        f.get(sum).get(z).f32x4Add().set(sum)
        f.get(p).get(z)
        store(f, width)
        advance(f, p, width)
      })
      f.get(sumOut).get(r).i32Const(4).i32Mul().i32Add()
      hsum(f, sum)
      f.f32Store()
      f.v128ConstF32(1)
      hsum(f, sum)
      f.f32x4Splat().f32x4Div().set(z)
      f.get(row).get(lo).i32Const(4).i32Mul().i32Add().set(p)
      f.get(hi).get(lo).i32Sub().set(k)
      lanes(f, k, (width) => {
        f.get(p)
        load(f.get(p), width).get(z).f32x4Mul()
        store(f, width)
        advance(f, p, width)
      })
    }
    f.end()
  })
}

function emitProbsRows(mod: ModuleBuilder): void {
  const f = mod.func("attn_probs_rows", Array(10).fill(I32))
  const [S, lse, r0, r1, C, scaleBits, flags, window, tq, qOffset] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const r = f.local(I32)
  const lo = f.local(I32)
  const hi = f.local(I32)
  const pos = f.local(I32)
  const k = f.local(I32)
  const p = f.local(I32)
  const row = f.local(I32)
  const scale = f.local(V128)
  const l = f.local(V128)
  const z = f.local(V128)
  const t = expTemps(f)
  splatBits(f, scaleBits).set(scale)
  forRange(f, r, () => f.get(r0), r1, () => {
    f.get(S).get(r).get(C).i32Mul().i32Const(4).i32Mul().i32Add().set(row)
    keyRange(f, r, C, flags, window, tq, qOffset, lo, hi, pos)
    f.get(lse).get(r).i32Const(4).i32Mul().i32Add().v128Load32Splat().set(l)
    f.get(l).f32x4ExtractLane(0).f32Const(-Infinity).f32Eq().if()
    f.i32Const(0).set(hi).i32Const(0).set(lo)
    f.end()
    zero(f, row, () => f.i32Const(0), () => f.get(lo))
    zero(f, row, () => f.get(hi), () => f.get(C))
    f.get(row).get(lo).i32Const(4).i32Mul().i32Add().set(p)
    f.get(hi).get(lo).i32Sub().set(k)
    lanes(f, k, (width) => {
      load(f.get(p), width).get(scale).f32x4Mul().get(l).f32x4Sub().set(z)
      f.get(p)
      vexp(f, z, t)
      store(f, width)
      advance(f, p, width)
    })
  })
}

function emitDsRows(mod: ModuleBuilder): void {
  const f = mod.func("attn_ds_rows", Array(7).fill(I32))
  const [dP, P, delta, r0, r1, C, scaleBits] = [0, 1, 2, 3, 4, 5, 6]
  const r = f.local(I32)
  const k = f.local(I32)
  const pd = f.local(I32)
  const pp = f.local(I32)
  const d = f.local(V128)
  const scale = f.local(V128)
  splatBits(f, scaleBits).set(scale)
  forRange(f, r, () => f.get(r0), r1, () => {
    f.get(r).get(C).i32Mul().i32Const(4).i32Mul().set(k)
    f.get(dP).get(k).i32Add().set(pd)
    f.get(P).get(k).i32Add().set(pp)
    f.get(delta).get(r).i32Const(4).i32Mul().i32Add().v128Load32Splat().set(d)
    f.get(C).set(k)
    lanes(f, k, (width) => {
      f.get(pd)
      load(f.get(pp), width)
      load(f.get(pd), width)
      f.get(d).f32x4Sub().f32x4Mul().get(scale).f32x4Mul()
      store(f, width)
      advance(f, pd, width)
      advance(f, pp, width)
    })
  })
}

function emitRowDot(mod: ModuleBuilder): void {
  const f = mod.func("row_dot", Array(5).fill(I32))
  const [out, a, b, rows, cols] = [0, 1, 2, 3, 4]
  const r = f.local(I32)
  const k = f.local(I32)
  const acc = f.local(V128)
  forRange(f, r, () => f.i32Const(0), rows, () => {
    f.v128ConstF32(0).set(acc)
    f.get(cols).set(k)
    lanes(f, k, (width) => {
      f.get(acc)
      load(f.get(a), width)
      load(f.get(b), width)
      f.f32x4Mul().f32x4Add().set(acc)
      advance(f, a, width)
      advance(f, b, width)
    })
    f.get(out)
    hsum(f, acc)
    f.f32Store()
    f.get(out).i32Const(4).i32Add().set(out)
  })
}
