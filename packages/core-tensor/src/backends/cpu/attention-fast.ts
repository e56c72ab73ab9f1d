import type { KernelOf, View } from "../../backend.js"
import { isContiguous } from "../../shape.js"
import type { Memory } from "./buffer.js"
import { attentionKernels } from "./attention.js"
import type { KernelTable } from "./kernel.js"
import { gemm } from "./matmul.js"
import { f32Bits, forRows } from "./wasm-call.js"
import { wasmRuntime } from "./wasm-runtime.js"

/**
 * Fused attention on the CPU as dense blocks: for each (batch, KV head), its G = Hq/Hkv query heads are one
 * [G·T, D] matrix (contiguous in q), so the scores of the group are one GEMM S = Q·Kᵀ [G·T, Tk], the masked
 * softmax (scale, causal/window range, key mask) runs over its rows in WASM (wasm-attention.ts), and out = P·V
 * is a second GEMM. The backward recomputes P from the saved lse and runs five GEMMs:
 *   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP − δ)·scale (δ = rowsum(dO ∘ out)),  dQ = dS·K,  dK = dSᵀ·Q
 * (the Pᵀ and dSᵀ products sum over the G heads of a group by construction). All GEMMs go through the packed
 * WASM GEMM (matmul.ts) and its thread split. Scores live in heap scratch, at most SCRATCH_BYTES at a time:
 * longer sequences are processed a few (batch, KV head) pairs at a time.
 *
 * Causal rows waste the masked half of each GEMM; that is the price of dense blocks (still far faster than the
 * scalar reference). Non-contiguous operands fall back to the reference kernels (attention.ts), which define
 * the semantics.
 */

const SCRATCH_BYTES = 64 * 1024 * 1024

interface Geometry {
  readonly B: number
  readonly Hq: number
  readonly Hkv: number
  readonly G: number
  readonly T: number
  readonly Tk: number
  readonly D: number
}

function geometry(q: View, k: View): Geometry {
  const [B, Hq, T, D] = q.shape
  const [, Hkv, Tk] = k.shape
  return { B, Hq, Hkv, G: Hq / Hkv, T, Tk, D }
}

const contiguous = (...views: (View | null)[]) => views.every((v) => v === null || isContiguous(v.shape, v.strides))

/** (b, hk) pairs per chunk so that `perPair` bytes of scratch each fit the budget. */
const pairsPerChunk = (g: Geometry, perPair: number) => Math.max(1, Math.min(g.B * g.Hkv, Math.floor(SCRATCH_BYTES / Math.max(1, perPair))))

/** Batched GEMM over pairs [p0, p0 + n) of (b, hk); operand offsets (elements) as functions of the pair index. */
function pairGemm(
  n: number,
  p0: number,
  M: number,
  N: number,
  K: number,
  a: { addr: number; row: number; col: number; offset: (p: number) => number },
  b: { addr: number; row: number; col: number; offset: (p: number) => number },
  c: { addr: number; offset: (p: number) => number },
): void {
  const aOffsets = Array.from({ length: n }, (_, i) => a.offset(p0 + i))
  const bOffsets = Array.from({ length: n }, (_, i) => b.offset(p0 + i))
  // C of consecutive pairs must be consecutive blocks of M·N (true for every C here: scratch or the outputs).
  const c0 = c.offset(p0)
  gemm({ M, N, K, batches: n, a: a.addr, aRow: a.row, aCol: a.col, aOffsets, b: b.addr, bRow: b.row, bCol: b.col, bOffsets, c: c.addr + 4 * c0, ldc: N, cBatch: M * N })
}

function rowFlags(causal: boolean, window: number): number {
  return (causal || window > 0 ? 1 : 0) | (causal ? 2 : 0)
}

function attention(call: KernelOf<"attention">, mem: Memory): void {
  const { scale, causal, window, q, k, v, keyMask, out, lse } = call
  if (!contiguous(q, k, v, keyMask, out, lse)) return attentionKernels.attention(call, mem)
  const g = geometry(q, k)
  const { B, Hkv, G, T, Tk, D } = g
  const rt = wasmRuntime()
  const heap = rt.heap
  const rowsPerPair = G * T
  const pairBytes = rowsPerPair * Tk * 4
  const chunk = pairsPerChunk(g, pairBytes)
  const scores = heap.alloc(chunk * pairBytes)
  const sums = heap.alloc(B * Hkv * rowsPerPair * 4)
  const [qa, ka, va, oa, la] = [mem.addr(q), mem.addr(k), mem.addr(v), mem.addr(out), mem.addr(lse)]
  const ma = keyMask === null ? 0 : mem.addr(keyMask)
  const flags = rowFlags(causal, window)
  try {
    for (let p0 = 0; p0 < B * Hkv; p0 += chunk) {
      const n = Math.min(chunk, B * Hkv - p0)
      const rows = n * rowsPerPair
      const r0 = p0 * rowsPerPair
      // S = Q·Kᵀ (scale applied in the softmax)
      pairGemm(n, p0, rowsPerPair, Tk, D, { addr: qa, row: D, col: 1, offset: (p) => p * rowsPerPair * D }, { addr: ka, row: 1, col: D, offset: (p) => p * Tk * D }, { addr: scores, offset: (p) => (p - p0) * rowsPerPair * Tk })
      if (keyMask !== null) forRows("attn_mask_rows", rows, Tk, (a, b) => [scores - 4 * r0 * Tk, ma, r0 + a, r0 + b, Tk, Hkv * rowsPerPair])
      forRows("attn_softmax_rows", rows, 6 * Tk, (a, b) => [scores - 4 * r0 * Tk, la, sums, r0 + a, r0 + b, Tk, f32Bits(scale), flags, window, T, Tk - T])
      // out = P·V
      pairGemm(n, p0, rowsPerPair, D, Tk, { addr: scores, row: Tk, col: 1, offset: (p) => (p - p0) * rowsPerPair * Tk }, { addr: va, row: D, col: 1, offset: (p) => p * Tk * D }, { addr: oa, offset: (p) => p * rowsPerPair * D })
    }
    // lse = max + log(sum) (max was written into lse).
    const L = heap.f32
    const rowsTotal = B * Hkv * rowsPerPair
    for (let r = 0; r < rowsTotal; r++) L[la / 4 + r] += Math.log(L[sums / 4 + r])
  } finally {
    heap.free(scores, chunk * pairBytes)
    heap.free(sums, B * Hkv * rowsPerPair * 4)
  }
}

function attentionBackward(call: KernelOf<"attentionBackward">, mem: Memory): void {
  const { scale, causal, window, q, k, v, keyMask, out, lse, dOut, dq, dk, dv } = call
  if (!contiguous(q, k, v, keyMask, out, lse, dOut, dq, dk, dv)) return attentionKernels.attentionBackward(call, mem)
  const g = geometry(q, k)
  const { B, Hkv, G, T, Tk, D } = g
  const rt = wasmRuntime()
  const heap = rt.heap
  const rowsPerPair = G * T
  const pairBytes = rowsPerPair * Tk * 4
  const chunk = pairsPerChunk(g, 2 * pairBytes)
  const P = heap.alloc(chunk * pairBytes)
  const dP = heap.alloc(chunk * pairBytes)
  const deltaBytes = Math.max(4, B * Hkv * rowsPerPair * 4)
  const delta = heap.alloc(deltaBytes)
  const [qa, ka, va, oa, la, ga] = [mem.addr(q), mem.addr(k), mem.addr(v), mem.addr(out), mem.addr(lse), mem.addr(dOut)]
  const [dqa, dka, dva] = [mem.addr(dq), mem.addr(dk), mem.addr(dv)]
  const ma = keyMask === null ? 0 : mem.addr(keyMask)
  const flags = rowFlags(causal, window)
  const qOff = (p: number) => p * rowsPerPair * D
  const kOff = (p: number) => p * Tk * D
  try {
    // δ = rowsum(dO ∘ out) over every query row.
    forRows("row_dot", B * Hkv * rowsPerPair, 2 * D, (a, b) => [delta + 4 * a, ga + 4 * a * D, oa + 4 * a * D, b - a, D])
    for (let p0 = 0; p0 < B * Hkv; p0 += chunk) {
      const n = Math.min(chunk, B * Hkv - p0)
      const rows = n * rowsPerPair
      const r0 = p0 * rowsPerPair
      const sOff = (p: number) => (p - p0) * rowsPerPair * Tk
      // P = exp(scale·Q·Kᵀ − lse), masked
      pairGemm(n, p0, rowsPerPair, Tk, D, { addr: qa, row: D, col: 1, offset: qOff }, { addr: ka, row: 1, col: D, offset: kOff }, { addr: P, offset: sOff })
      if (keyMask !== null) forRows("attn_mask_rows", rows, Tk, (a, b) => [P - 4 * r0 * Tk, ma, r0 + a, r0 + b, Tk, Hkv * rowsPerPair])
      forRows("attn_probs_rows", rows, 5 * Tk, (a, b) => [P - 4 * r0 * Tk, la, r0 + a, r0 + b, Tk, f32Bits(scale), flags, window, T, Tk - T])
      // dV = Pᵀ·dO
      pairGemm(n, p0, Tk, D, rowsPerPair, { addr: P, row: 1, col: Tk, offset: sOff }, { addr: ga, row: D, col: 1, offset: qOff }, { addr: dva, offset: kOff })
      // dP = dO·Vᵀ, then dS = P ∘ (dP − δ)·scale in place
      pairGemm(n, p0, rowsPerPair, Tk, D, { addr: ga, row: D, col: 1, offset: qOff }, { addr: va, row: 1, col: D, offset: kOff }, { addr: dP, offset: sOff })
      forRows("attn_ds_rows", rows, 2 * Tk, (a, b) => [dP - 4 * r0 * Tk, P - 4 * r0 * Tk, delta, r0 + a, r0 + b, Tk, f32Bits(scale)])
      // dQ = dS·K, dK = dSᵀ·Q
      pairGemm(n, p0, rowsPerPair, D, Tk, { addr: dP, row: Tk, col: 1, offset: sOff }, { addr: ka, row: D, col: 1, offset: kOff }, { addr: dqa, offset: qOff })
      pairGemm(n, p0, Tk, D, rowsPerPair, { addr: dP, row: 1, col: Tk, offset: sOff }, { addr: qa, row: D, col: 1, offset: qOff }, { addr: dka, offset: kOff })
    }
  } finally {
    heap.free(P, chunk * pairBytes)
    heap.free(dP, chunk * pairBytes)
    heap.free(delta, deltaBytes)
  }
}

/** Registered after `attentionKernels` in kernels.ts, so these take over (falling back to them). */
export const fastAttentionKernels = { attention, attentionBackward } satisfies KernelTable<"attention" | "attentionBackward">
