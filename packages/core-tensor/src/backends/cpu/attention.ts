import type { KernelOf, View } from "../../backend.js"
import type { Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"

/**
 * Fused attention, the reference implementation: plain loops, every sum in doubles, no tiling. See the
 * `attention` / `attentionBackward` kernel docs in backend.ts for the exact semantics; the mask is the one of the
 * `softmax` kernel (cpu/softmax.ts): query t at position i = t + Tk − T may see key j iff (!causal or j ≤ i) and
 * (window = 0 or j > i − window) and keyMask[b, j] != 0. The causal and window rules bound a contiguous key
 * range [lo, hi); the key mask is checked per key. Views are read through their strides and offsets.
 */

interface Geometry {
  readonly B: number
  readonly Hq: number
  readonly Hkv: number
  readonly T: number
  readonly Tk: number
  readonly D: number
}

const geometry = (q: View, k: View): Geometry => ({ B: q.shape[0], Hq: q.shape[1], Hkv: k.shape[1], T: q.shape[2], Tk: k.shape[2], D: q.shape[3] })

/** Element (b, h, t, 0) of a [B, H, T, D] view; d adds d·strides[3]. */
const at4 = (v: View, b: number, h: number, t: number) => v.offset + b * v.strides[0] + h * v.strides[1] + t * v.strides[2]

/** The contiguous key range [lo, hi) the causal and window rules allow for query t. */
function keyRange(t: number, g: Geometry, causal: boolean, window: number): [number, number] {
  const position = t + g.Tk - g.T
  const hi = causal ? Math.max(0, Math.min(g.Tk, position + 1)) : g.Tk
  const lo = window > 0 ? Math.max(0, Math.min(g.Tk, position - window + 1)) : 0
  return [lo, hi]
}

function attention(call: KernelOf<"attention">, mem: Memory): void {
  const { scale, causal, window, q, k, v, keyMask, out, lse } = call
  const Q = mem.f32(q)
  const K = mem.f32(k)
  const V = mem.f32(v)
  const O = mem.f32(out)
  const L = mem.f32(lse)
  const mask = keyMask === null ? null : mem.bool(keyMask)
  const g = geometry(q, k)
  const group = g.Hq / g.Hkv
  const [qd, kd, vd, od] = [q.strides[3], k.strides[3], v.strides[3], out.strides[3]]
  const s = new Float64Array(g.Tk)
  const acc = new Float64Array(g.D)
  for (let b = 0; b < g.B; b++)
    for (let h = 0; h < g.Hq; h++) {
      const hk = Math.floor(h / group)
      for (let t = 0; t < g.T; t++) {
        const [lo, hi] = keyRange(t, g, causal, window)
        const qr = at4(q, b, h, t)
        let max = -Infinity
        let any = false
        for (let j = lo; j < hi; j++) {
          if (mask !== null && mask[keyMask!.offset + b * keyMask!.strides[0] + j * keyMask!.strides[1]] === 0) {
            s[j] = Number.NaN // marks a masked key
            continue
          }
          const kr = at4(k, b, hk, j)
          let dot = 0
          for (let d = 0; d < g.D; d++) dot += Q[qr + d * qd] * K[kr + d * kd]
          s[j] = dot * scale
          any = true
          if (s[j] > max) max = s[j]
        }
        const or = at4(out, b, h, t)
        const lseAt = lse.offset + b * lse.strides[0] + h * lse.strides[1] + t * lse.strides[2]
        if (!any) {
          for (let d = 0; d < g.D; d++) O[or + d * od] = 0
          L[lseAt] = -Infinity
          continue
        }
        acc.fill(0)
        let sum = 0
        for (let j = lo; j < hi; j++) {
          if (Number.isNaN(s[j])) continue
          const p = Math.exp(s[j] - max)
          sum += p
          const vr = at4(v, b, hk, j)
          for (let d = 0; d < g.D; d++) acc[d] += p * V[vr + d * vd]
        }
        for (let d = 0; d < g.D; d++) O[or + d * od] = acc[d] / sum
        L[lseAt] = max + Math.log(sum)
      }
    }
}

function attentionBackward(call: KernelOf<"attentionBackward">, mem: Memory): void {
  const { scale, causal, window, q, k, v, keyMask, out, lse, dOut, dq, dk, dv } = call
  const Q = mem.f32(q)
  const K = mem.f32(k)
  const V = mem.f32(v)
  const O = mem.f32(out)
  const L = mem.f32(lse)
  const dO = mem.f32(dOut)
  const DQ = mem.f32(dq)
  const DK = mem.f32(dk)
  const DV = mem.f32(dv)
  const mask = keyMask === null ? null : mem.bool(keyMask)
  const g = geometry(q, k)
  const group = g.Hq / g.Hkv
  const D = g.D
  // dk, dv accumulate over every query of every head in the group: doubles, [Tk, D] per (b, kv head).
  const dkAcc = new Float64Array(g.Tk * D)
  const dvAcc = new Float64Array(g.Tk * D)
  const dqAcc = new Float64Array(D)
  for (let b = 0; b < g.B; b++)
    for (let hk = 0; hk < g.Hkv; hk++) {
      dkAcc.fill(0)
      dvAcc.fill(0)
      for (let h = hk * group; h < (hk + 1) * group; h++)
        for (let t = 0; t < g.T; t++) {
          const rowLse = L[lse.offset + b * lse.strides[0] + h * lse.strides[1] + t * lse.strides[2]]
          const qr = at4(q, b, h, t)
          const gr = at4(dOut, b, h, t)
          const or = at4(out, b, h, t)
          const dqr = at4(dq, b, h, t)
          dqAcc.fill(0)
          if (rowLse !== -Infinity) {
            let delta = 0
            for (let d = 0; d < D; d++) delta += dO[gr + d * dOut.strides[3]] * O[or + d * out.strides[3]]
            const [lo, hi] = keyRange(t, g, causal, window)
            for (let j = lo; j < hi; j++) {
              if (mask !== null && mask[keyMask!.offset + b * keyMask!.strides[0] + j * keyMask!.strides[1]] === 0) continue
              const kr = at4(k, b, hk, j)
              const vr = at4(v, b, hk, j)
              let s = 0
              let dp = 0
              for (let d = 0; d < D; d++) {
                s += Q[qr + d * q.strides[3]] * K[kr + d * k.strides[3]]
                dp += dO[gr + d * dOut.strides[3]] * V[vr + d * v.strides[3]]
              }
              const p = Math.exp(s * scale - rowLse)
              const ds = p * (dp - delta) * scale
              for (let d = 0; d < D; d++) {
                dqAcc[d] += ds * K[kr + d * k.strides[3]]
                dkAcc[j * D + d] += ds * Q[qr + d * q.strides[3]]
                dvAcc[j * D + d] += p * dO[gr + d * dOut.strides[3]]
              }
            }
          }
          for (let d = 0; d < D; d++) DQ[dqr + d * dq.strides[3]] = dqAcc[d]
        }
      for (let j = 0; j < g.Tk; j++) {
        const kr = at4(dk, b, hk, j)
        const vr = at4(dv, b, hk, j)
        for (let d = 0; d < D; d++) {
          DK[kr + d * dk.strides[3]] = dkAcc[j * D + d]
          DV[vr + d * dv.strides[3]] = dvAcc[j * D + d]
        }
      }
    }
}

export const attentionKernels = { attention, attentionBackward } satisfies KernelTable<"attention" | "attentionBackward">
