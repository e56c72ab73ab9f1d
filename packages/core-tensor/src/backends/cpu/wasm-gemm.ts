import { type FunctionBuilder, type ExportedGlobal, I32, type ModuleBuilder, V128 } from "./wasm-emit.js"

/**
 * The f32 GEMM of the CPU backend, generated as WebAssembly SIMD.
 *
 * Layout (BLIS/Goto style). A is packed into row panels of MR rows: panel p holds A[p·MR + r, k] at
 * (k·MR + r), zero-padded past M. B is packed into column panels of NR columns: panel q holds B[k, q·NR + c]
 * at (k·NR + c), zero-padded past N. The micro-kernel multiplies one A panel by one B panel over kc steps,
 * keeping the MR × NR tile of C in MR·NR/4 v128 accumulators: per k it loads NR/4 vectors of B, broadcasts
 * MR scalars of A (v128.load32_splat, a plain load on x64) and issues MR·NR/4 multiply-adds.
 *
 * Two register tiles are emitted (function names suffixed _8 / _16): 6 × 8 (12 v128 accumulators + 2 for B + 1
 * broadcast = the 15 XMM registers V8 allocates) and 6 × 16 (24 accumulators), which only fits when V8's
 * revectorizer fuses each pair of adjacent 128-bit operations into one 256-bit AVX2 operation — then it runs at
 * twice the speed (12 YMM accumulators, 32 flops per cycle). wasm-runtime.ts measures both and picks one.
 *
 * Functions emitted per variant (all sizes in elements, all pointers and strides in bytes):
 *  gemm_micro(pA, pB, pC, ldc, kc, accumulate)         one full MR × NR tile: C (+)= Apanel · Bpanel
 *  gemm_micro_m<r>(…)                                  the same for the first r < MR rows (bottom edge)
 *  gemm_micro_pack(…, bSrc, bks)                        a full tile that packs its B panel from the source
 *  gemm_block(pA, pB, pC, ldc, mc, nc, kc, aps, bps, accumulate, bSrc, bks)
 *                                                      an mc × nc block of C from consecutive A panels
 *                                                      (aps bytes apart) and B panels (bps apart); tiles of
 *                                                      a bottom edge use gemm_micro_m<r>, tiles of a right
 *                                                      edge (nc mod NR) go through the per-thread scratch
 *                                                      tile; with bSrc ≠ 0, the first row of tiles packs
 *                                                      the full-width B panels from the row-major source
 *                                                      (B[k, j] at bSrc + k·bks + 4·j) for the others
 *  pack_a(dst, src, P, K, ps, ks, p0, p1, k0, kc)      panels p0..p1 of an MR-panel packing, k in [k0, k0+kc)
 *  pack_b(...)                                         the same with NR-wide panels
 *  gemm_fused(params)                                  C = A·B for all M rows and an nc-column slab, packing B
 *                                                      itself: per depth slice, the kc × nc slab of B goes
 *                                                      into this thread's scratch (SCRATCH_B_OFFSET) and is
 *                                                      multiplied by every MC-row block of the pre-packed A
 *                                                      (or of a thread-private packing of A, made by the
 *                                                      first such task on the thread); params is a record
 *                                                      of FUSED_FIELDS
 */
export interface GemmShape {
  /** Rows of the register tile. */
  readonly mr: number
  /** Columns of the register tile, a multiple of 4. */
  readonly nr: number
  /** k steps per unrolled loop iteration. */
  readonly unroll: number
  /** Use f32x4.relaxed_madd (a fused multiply-add on x64) instead of f32x4.mul + f32x4.add. */
  readonly fma: boolean
}

export interface GemmFunctions {
  readonly micro: FunctionBuilder
  /** Row-edge micro-kernels: edgeMicros[r − 1] computes r < mr rows. */
  readonly edgeMicros: readonly FunctionBuilder[]
  /** The full tile reading B from its source and packing it on the way (gemm_micro_pack). */
  readonly microPack: FunctionBuilder
  readonly block: FunctionBuilder
  readonly packA: FunctionBuilder
  readonly packB: FunctionBuilder
  readonly fused: FunctionBuilder
}

/**
 * A thread's scratch (one per thread, `scratch` global), in bytes from its start:
 *   [0, SCRATCH_HEADER)                      the edge tile and other small temporaries (column sums of the
 *                                            element-wise reductions: 2 KiB); its last word is SCRATCH_A_TAG
 *   [SCRATCH_B_OFFSET, + SCRATCH_B_BYTES)    the packed kc × nc slab of B that gemm_fused multiplies
 *   [SCRATCH_A_OFFSET, + SCRATCH_A_BYTES)    a thread-private packing of A (gemm_fused with aTag ≠ 0)
 */
export const SCRATCH_HEADER = 4096
/** Which A the private packing holds: the aTag of the task that packed it (0: none; the caller resets it). */
export const SCRATCH_A_TAG = SCRATCH_HEADER - 4
export const SCRATCH_B_OFFSET = SCRATCH_HEADER
export const SCRATCH_B_BYTES = 1024 * 1024
export const SCRATCH_A_OFFSET = SCRATCH_B_OFFSET + SCRATCH_B_BYTES
export const SCRATCH_A_BYTES = 256 * 1024
export const SCRATCH_BYTES = SCRATCH_A_OFFSET + SCRATCH_A_BYTES

/**
 * Fields (i32, in this order) of the parameter record `gemm_fused` reads. With aTag = 0, A comes pre-packed at pA
 * (panels aps bytes apart). With aTag ≠ 0 the task packs A itself — the M × K matrix at aSrc, element (m, k) at
 * aSrc + m·aRowStride + k·aColStride — into its thread's private area, unless that already holds aTag (an
 * earlier task of the same GEMM call on this thread packed it); pA is then ignored.
 */
export const FUSED_FIELDS = [
  "pA",
  "aps",
  "bSrc",
  "bps",
  "bks",
  "nc",
  "pC",
  "ldc",
  "M",
  "K",
  "kcMax",
  "mcMax",
  "aSrc",
  "aRowStride",
  "aColStride",
  "aTag",
] as const

/** Emit one GEMM variant; its functions are named with `suffix` (e.g. "gemm_fused_16"). */
export function emitGemm(mod: ModuleBuilder, shape: GemmShape, scratch: ExportedGlobal, suffix = ""): GemmFunctions {
  const micro = emitMicro(mod, shape, suffix)
  const edgeMicros = Array.from({ length: shape.mr - 1 }, (_, r) => emitMicro(mod, shape, suffix, r + 1))
  const microPack = emitMicro(mod, shape, suffix, shape.mr, true)
  const block = emitBlock(mod, shape, micro, edgeMicros, microPack, scratch, suffix)
  const packA = emitPack(mod, `pack_a${suffix}`, shape.mr)
  const packB = emitPack(mod, `pack_b${suffix}`, shape.nr)
  const fused = emitFused(mod, shape, block, packA, packB, scratch, suffix)
  return { micro, edgeMicros, microPack, block, packA, packB, fused }
}

/**
 * The micro-kernel for `rows` rows of C (≤ mr; the A panel is still mr wide, its first `rows` rows are used):
 * `gemm_micro${suffix}` for the full tile, `gemm_micro${suffix}_m${rows}` for the bottom edge of a matrix whose
 * M is not a multiple of mr (64 = 10 · 6 + 4), which then writes C directly instead of computing a full tile
 * into scratch and copying its corner out.
 *
 * With `packB`, `gemm_micro_pack${suffix}(pA, pB, pC, ldc, kc, accumulate, bSrc, bks)`: the full tile, reading
 * B from its source instead — row k of the panel is the nr floats at bSrc + k·bks — and storing each row into
 * the packed panel at pB on the way. The first row panel of a block packs B for the rest this way, so B is read
 * once, by a kernel that keeps the FMA units busy meanwhile, instead of by a separate packing pass.
 */
function emitMicro(mod: ModuleBuilder, { mr: fullRows, nr, unroll, fma }: GemmShape, suffix: string, rows = fullRows, packB = false): FunctionBuilder {
  const nv = nr / 4
  if (!Number.isInteger(nv) || nv < 1) throw new Error(`gemm: nr must be a multiple of 4, got ${nr}`)
  if (!Number.isInteger(rows) || rows < 1 || rows > fullRows) throw new Error(`gemm: micro-kernel rows must be in 1..${fullRows}, got ${rows}`)
  const mr = rows
  const name = packB ? `gemm_micro_pack${suffix}` : rows === fullRows ? `gemm_micro${suffix}` : `gemm_micro${suffix}_m${rows}`
  const f = mod.func(name, packB ? [I32, I32, I32, I32, I32, I32, I32, I32] : [I32, I32, I32, I32, I32, I32])
  const [pA, pB, pC, ldc, kc, accumulate, bSrc, bks] = [0, 1, 2, 3, 4, 5, 6, 7]
  const acc: number[][] = []
  for (let r = 0; r < mr; r++) acc.push(Array.from({ length: nv }, () => f.local(V128)))
  const b = Array.from({ length: nv }, () => f.local(V128))
  const a = f.local(V128)
  const row = f.local(I32)
  const n = f.local(I32)

  // Initialise the accumulators: from C when accumulating, else zero.
  f.get(accumulate).if()
  f.get(pC).set(row)
  for (let r = 0; r < mr; r++) {
    for (let v = 0; v < nv; v++) f.get(row).v128Load({ offset: 16 * v, align: 2 }).set(acc[r][v])
    if (r < mr - 1) f.get(row).get(ldc).i32Add().set(row)
  }
  f.else()
  for (let r = 0; r < mr; r++) for (let v = 0; v < nv; v++) f.v128ConstF32(0).set(acc[r][v])
  f.end()

  // packB: the source row of step u (bSrc, bSrc + bks, …), the packed copy at pB as usual.
  const srcRow = packB ? Array.from({ length: unroll }, (_, u) => (u === 0 ? bSrc : f.local(I32))) : []
  const step = (u: number) => {
    if (packB) {
      if (u > 0) f.get(srcRow[u - 1]).get(bks).i32Add().set(srcRow[u])
      for (let v = 0; v < nv; v++) f.get(srcRow[u]).v128Load({ offset: 16 * v, align: 0 }).set(b[v])
      for (let v = 0; v < nv; v++) f.get(pB).get(b[v]).v128Store({ offset: 4 * (u * nr + 4 * v) })
    } else for (let v = 0; v < nv; v++) f.get(pB).v128Load({ offset: 4 * (u * nr + 4 * v) }).set(b[v])
    for (let r = 0; r < mr; r++) {
      f.get(pA).v128Load32Splat({ offset: 4 * (u * fullRows + r) }).set(a)
      for (let v = 0; v < nv; v++) {
        if (fma) f.get(a).get(b[v]).get(acc[r][v]).f32x4RelaxedMadd().set(acc[r][v])
        else f.get(acc[r][v]).get(a).get(b[v]).f32x4Mul().f32x4Add().set(acc[r][v])
      }
    }
  }
  const kLoop = (steps: number, count: number) => {
    // while (count-- > 0) { steps k-steps; advance }
    f.block().get(count).i32Eqz().brIf(0).loop()
    for (let u = 0; u < steps; u++) step(u)
    f.get(pA).i32Const(4 * steps * fullRows).i32Add().set(pA)
    f.get(pB).i32Const(4 * steps * nr).i32Add().set(pB)
    if (packB) f.get(srcRow[steps - 1]).get(bks).i32Add().set(bSrc)
    f.get(count).i32Const(1).i32Sub().tee(count).brIf(0)
    f.end().end()
  }
  if (unroll > 1) {
    f.get(kc).i32Const(unroll).i32DivU().set(n)
    kLoop(unroll, n)
    f.get(kc).i32Const(unroll).i32RemU().set(n)
    kLoop(1, n)
  } else {
    f.get(kc).set(n)
    kLoop(1, n)
  }

  f.get(pC).set(row)
  for (let r = 0; r < mr; r++) {
    for (let v = 0; v < nv; v++) f.get(row).get(acc[r][v]).v128Store({ offset: 16 * v, align: 2 })
    if (r < mr - 1) f.get(row).get(ldc).i32Add().set(row)
  }
  return f
}

function emitBlock(
  mod: ModuleBuilder,
  { mr, nr }: GemmShape,
  micro: FunctionBuilder,
  edgeMicros: readonly FunctionBuilder[],
  microPack: FunctionBuilder,
  scratch: ExportedGlobal,
  suffix: string,
): FunctionBuilder {
  const f = mod.func(`gemm_block${suffix}`, [I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32])
  const [pA, pB, pC, ldc, mc, nc, kc, aps, bps, accumulate, bSrc, bks] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
  const j = f.local(I32)
  const i = f.local(I32)
  const pBj = f.local(I32)
  const pCj = f.local(I32)
  const pAi = f.local(I32)
  const pCij = f.local(I32)
  const mrEdge = f.local(I32)
  const nrEdge = f.local(I32)
  const r = f.local(I32)
  const c = f.local(I32)
  const src = f.local(I32)
  const dst = f.local(I32)
  const tileStep = f.local(I32)

  // mrEdge rows of the tile at pAi · pBj into (C, ldc): the full micro-kernel or the row-edge one for mrEdge.
  // The caller pushed the six arguments; an if-chain on mrEdge picks the function (once per tile: negligible).
  const callRows = (pushArgs: () => void) => {
    const chain = (rows: number) => {
      f.get(mrEdge).i32Const(rows).i32Eq().if()
      pushArgs()
      f.call(rows === mr ? micro : edgeMicros[rows - 1])
      if (rows > 1) {
        f.else()
        chain(rows - 1)
      }
      f.end()
    }
    chain(mr)
  }

  f.get(ldc).i32Const(mr).i32Mul().set(tileStep)
  f.i32Const(0).set(j).get(pB).set(pBj).get(pC).set(pCj)
  f.block().loop() // over column panels
  f.get(j).get(nc).i32GeS().brIf(1)
  // nrEdge = min(nr, nc - j)
  f.get(nc).get(j).i32Sub().set(nrEdge)
  f.i32Const(nr).get(nrEdge).get(nrEdge).i32Const(nr).i32GtS().select().set(nrEdge)
  f.i32Const(0).set(i).get(pA).set(pAi).get(pCj).set(pCij)
  f.block().loop() // over row panels
  f.get(i).get(mc).i32GeS().brIf(1)
  f.get(mc).get(i).i32Sub().set(mrEdge)
  f.i32Const(mr).get(mrEdge).get(mrEdge).i32Const(mr).i32GtS().select().set(mrEdge)
  f.get(nrEdge).i32Const(nr).i32Eq().if()
  // A full-width column panel: straight into C, whatever the rows. With bSrc, the first row panel (full: the
  // caller sees to it) reads the panel of B from its source and packs it for the others.
  f.get(bSrc).i32Const(0).i32Ne().get(i).i32Eqz().i32And().if()
  f.get(pAi).get(pBj).get(pCij).get(ldc).get(kc).get(accumulate).get(bSrc).get(j).i32Const(4).i32Mul().i32Add().get(bks).call(microPack)
  f.else()
  callRows(() => f.get(pAi).get(pBj).get(pCij).get(ldc).get(kc).get(accumulate))
  f.end()
  f.else()
  // Column edge: compute the mrEdge-row tile into scratch, then store (or add) its mrEdge × nrEdge corner.
  callRows(() => f.get(pAi).get(pBj).globalGet(scratch.index).i32Const(4 * nr).get(kc).i32Const(0))
  f.i32Const(0).set(r)
  f.loop()
  f.get(pCij).get(r).get(ldc).i32Mul().i32Add().set(dst)
  f.globalGet(scratch.index).get(r).i32Const(4 * nr).i32Mul().i32Add().set(src)
  f.i32Const(0).set(c)
  f.loop()
  // C = scratch (+ C when accumulating; select, not arithmetic, so junk in a fresh C is never read into it)
  f.get(dst).get(src).f32Load().get(dst).f32Load().f32Const(0).get(accumulate).select().f32Add().f32Store()
  f.get(dst).i32Const(4).i32Add().set(dst)
  f.get(src).i32Const(4).i32Add().set(src)
  f.get(c).i32Const(1).i32Add().tee(c).get(nrEdge).i32LtS().brIf(0)
  f.end()
  f.get(r).i32Const(1).i32Add().tee(r).get(mrEdge).i32LtS().brIf(0)
  f.end()
  f.end()
  f.get(i).i32Const(mr).i32Add().set(i)
  f.get(pAi).get(aps).i32Add().set(pAi)
  f.get(pCij).get(tileStep).i32Add().set(pCij)
  f.br(0)
  f.end().end()
  f.get(j).i32Const(nr).i32Add().set(j)
  f.get(pBj).get(bps).i32Add().set(pBj)
  f.get(pCj).i32Const(4 * nr).i32Add().set(pCj)
  f.br(0)
  f.end().end()
  return f
}

/**
 * Pack panels p0..p1 (exclusive) of width W: dst[(p − p0)·panelBytes + (k − k0)·W + w] = X[p·W + w, k] for
 * k in [k0, k0 + kc), zero past P rows. X[p, k] is at src + p·ps + k·ks (bytes). dst advances by K·W floats
 * per panel, where K is the full depth (so a panel's k range lands at its offset within the full packing).
 * The common layouts get fast paths: ps = 4 (unit stride along the panel: v128 loads) and the generic case
 * walks k in the outer loop so a unit-stride ks streams.
 */
function emitPack(mod: ModuleBuilder, fname: string, W: number): FunctionBuilder {
  const f = mod.func(fname, [I32, I32, I32, I32, I32, I32, I32, I32, I32, I32])
  const [dst, src, P, K, ps, ks, p0, p1, k0, kc] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const p = f.local(I32)
  const k = f.local(I32)
  const w = f.local(I32)
  const rows = f.local(I32) // valid rows in this panel
  const out = f.local(I32)
  const base = f.local(I32) // src of (p·W, k0)
  const s = f.local(I32)
  const o = f.local(I32)
  const panelBytes = f.local(I32)
  const kEnd = f.local(I32)
  const kStart = f.local(I32)
  const quad = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)]
  const tmp = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)]

  f.get(K).i32Const(4 * W).i32Mul().set(panelBytes)
  f.get(k0).get(kc).i32Add().set(kEnd)
  f.get(p0).set(p)
  f.block().loop()
  f.get(p).get(p1).i32GeS().brIf(1)
  // rows = min(W, P - p·W)
  f.get(P).get(p).i32Const(W).i32Mul().i32Sub().set(rows)
  f.i32Const(W).get(rows).get(rows).i32Const(W).i32GtS().select().set(rows)
  // out = dst + (p - p0)·panelBytes + k0·W·4
  f.get(dst).get(p).get(p0).i32Sub().get(panelBytes).i32Mul().i32Add().get(k0).i32Const(4 * W).i32Mul().i32Add().set(out)
  // base = src + p·W·ps + k0·ks
  f.get(src).get(p).i32Const(W).i32Mul().get(ps).i32Mul().i32Add().get(k0).get(ks).i32Mul().i32Add().set(base)

  f.get(rows).i32Const(W).i32Eq().get(ps).i32Const(4).i32Eq().i32And().if()
  {
    // Full panel, unit stride along it: W/4 v128 copies per k (plus a scalar tail when W % 4 ≠ 0).
    f.get(k0).set(k)
    f.block().get(kc).i32Eqz().brIf(0).loop()
    for (let v = 0; v + 4 <= W; v += 4) f.get(out).get(base).v128Load({ offset: 4 * v, align: 0 }).v128Store({ offset: 4 * v, align: 0 })
    for (let t = W - (W % 4); t < W; t++) f.get(out).get(base).f32Load({ offset: 4 * t, align: 0 }).f32Store({ offset: 4 * t })
    f.get(out).i32Const(4 * W).i32Add().set(out)
    f.get(base).get(ks).i32Add().set(base)
    f.get(k).i32Const(1).i32Add().tee(k).get(kEnd).i32LtS().brIf(0)
    f.end().end()
  }
  f.else()
  {
    // Generic: zero the panel's k range when it is partial, then fill row by row (each row walks k), from kStart.
    f.i32Const(0).set(kStart)
    f.get(rows).i32Const(W).i32LtS().if()
    f.get(out).i32Const(0).get(kc).i32Const(4 * W).i32Mul().memoryFill()
    f.end()
    if (W % 4 === 0) {
      // A full panel whose rows are contiguous along k (a transposed B): 4 × 4 blocks through registers —
      // load 4 k-steps of 4 rows, transpose with shuffles, store 4 k-rows of the panel. The k tail (kc mod 4)
      // is left to the row loop below.
      f.get(rows).i32Const(W).i32Eq().get(ks).i32Const(4).i32Eq().i32And().if()
      f.get(kc).i32Const(-4).i32And().set(kStart)
      f.i32Const(0).set(k)
      f.block().loop()
      f.get(k).get(kStart).i32GeS().brIf(1)
      f.get(out).get(k).i32Const(4 * W).i32Mul().i32Add().set(o)
      for (let g = 0; g < W / 4; g++) {
        f.get(base).get(k).i32Const(4).i32Mul().i32Add().get(ps).i32Const(4 * g).i32Mul().i32Add().set(s)
        for (let i = 0; i < 4; i++) {
          f.get(s).v128Load({ align: 0 }).set(quad[i])
          if (i < 3) f.get(s).get(ps).i32Add().set(s)
        }
        // t0 = (a0 b0 a1 b1), t1 = (a2 b2 a3 b3), t2 = (c0 d0 c1 d1), t3 = (c2 d2 c3 d3)
        f.get(quad[0]).get(quad[1]).i32x4Shuffle([0, 4, 1, 5]).set(tmp[0])
        f.get(quad[0]).get(quad[1]).i32x4Shuffle([2, 6, 3, 7]).set(tmp[1])
        f.get(quad[2]).get(quad[3]).i32x4Shuffle([0, 4, 1, 5]).set(tmp[2])
        f.get(quad[2]).get(quad[3]).i32x4Shuffle([2, 6, 3, 7]).set(tmp[3])
        // row j of the block = (a_j b_j c_j d_j), stored at k + j
        const rowsOut: [number, number, number[]][] = [
          [tmp[0], tmp[2], [0, 1, 4, 5]],
          [tmp[0], tmp[2], [2, 3, 6, 7]],
          [tmp[1], tmp[3], [0, 1, 4, 5]],
          [tmp[1], tmp[3], [2, 3, 6, 7]],
        ]
        rowsOut.forEach(([x, y, lanes], j) => f.get(o).get(x).get(y).i32x4Shuffle(lanes).v128Store({ offset: 4 * (j * W + 4 * g), align: 0 }))
      }
      f.get(k).i32Const(4).i32Add().set(k)
      f.br(0)
      f.end().end()
      f.end()
    } else if (W === 6) {
      // The same for the 6-row A panel of a row-major A (every NN / NT product): rows 0–3 through a 4 × 4
      // transpose, rows 4–5 interleaved in pairs, and the 4 k-rows × 6 values written as six v128 stores.
      f.get(rows).i32Const(W).i32Eq().get(ks).i32Const(4).i32Eq().i32And().if()
      f.get(kc).i32Const(-4).i32And().set(kStart)
      f.i32Const(0).set(k)
      f.block().loop()
      f.get(k).get(kStart).i32GeS().brIf(1)
      f.get(out).get(k).i32Const(4 * W).i32Mul().i32Add().set(o)
      f.get(base).get(k).i32Const(4).i32Mul().i32Add().set(s)
      for (let i = 0; i < 4; i++) {
        f.get(s).v128Load({ align: 0 }).set(quad[i])
        f.get(s).get(ps).i32Add().set(s)
      }
      f.get(quad[0]).get(quad[1]).i32x4Shuffle([0, 4, 1, 5]).set(tmp[0])
      f.get(quad[0]).get(quad[1]).i32x4Shuffle([2, 6, 3, 7]).set(tmp[1])
      f.get(quad[2]).get(quad[3]).i32x4Shuffle([0, 4, 1, 5]).set(tmp[2])
      f.get(quad[2]).get(quad[3]).i32x4Shuffle([2, 6, 3, 7]).set(tmp[3])
      // quad[j] = rows 0–3 at k + j
      f.get(tmp[0]).get(tmp[2]).i32x4Shuffle([0, 1, 4, 5]).set(quad[0])
      f.get(tmp[0]).get(tmp[2]).i32x4Shuffle([2, 3, 6, 7]).set(quad[1])
      f.get(tmp[1]).get(tmp[3]).i32x4Shuffle([0, 1, 4, 5]).set(quad[2])
      f.get(tmp[1]).get(tmp[3]).i32x4Shuffle([2, 3, 6, 7]).set(quad[3])
      // tmp[2] = (r4 r5 at k, r4 r5 at k + 1), tmp[3] = the same at k + 2, k + 3
      f.get(s).v128Load({ align: 0 }).set(tmp[0])
      f.get(s).get(ps).i32Add().v128Load({ align: 0 }).set(tmp[1])
      f.get(tmp[0]).get(tmp[1]).i32x4Shuffle([0, 4, 1, 5]).set(tmp[2])
      f.get(tmp[0]).get(tmp[1]).i32x4Shuffle([2, 6, 3, 7]).set(tmp[3])
      // 24 floats: [q0 | t2.0 t2.1 q1.0 q1.1 | q1.2 q1.3 t2.2 t2.3 | q2 | t3.0 t3.1 q3.0 q3.1 | q3.2 q3.3 t3.2 t3.3]
      const store = (at: number) => f.v128Store({ offset: 16 * at, align: 0 })
      f.get(o).get(quad[0]), store(0)
      f.get(o).get(tmp[2]).get(quad[1]).i32x4Shuffle([0, 1, 4, 5]), store(1)
      f.get(o).get(quad[1]).get(tmp[2]).i32x4Shuffle([2, 3, 6, 7]), store(2)
      f.get(o).get(quad[2]), store(3)
      f.get(o).get(tmp[3]).get(quad[3]).i32x4Shuffle([0, 1, 4, 5]), store(4)
      f.get(o).get(quad[3]).get(tmp[3]).i32x4Shuffle([2, 3, 6, 7]), store(5)
      f.get(k).i32Const(4).i32Add().set(k)
      f.br(0)
      f.end().end()
      f.end()
    }
    f.i32Const(0).set(w)
    f.block().get(rows).i32Const(0).i32LeS().brIf(0).get(kc).get(kStart).i32LeS().brIf(0).loop()
    f.get(base).get(w).get(ps).i32Mul().i32Add().get(kStart).get(ks).i32Mul().i32Add().set(s)
    f.get(out).get(w).i32Const(4).i32Mul().i32Add().get(kStart).i32Const(4 * W).i32Mul().i32Add().set(o)
    f.get(kc).get(kStart).i32Sub().set(k)
    f.loop()
    f.get(o).get(s).f32Load({ align: 0 }).f32Store()
    f.get(s).get(ks).i32Add().set(s)
    f.get(o).i32Const(4 * W).i32Add().set(o)
    f.get(k).i32Const(1).i32Sub().tee(k).brIf(0)
    f.end()
    f.get(w).i32Const(1).i32Add().tee(w).get(rows).i32LtS().brIf(0)
    f.end().end()
  }
  f.end()
  f.get(p).i32Const(1).i32Add().set(p)
  f.br(0)
  f.end().end()
  return f
}

function emitFused(
  mod: ModuleBuilder,
  { mr, nr }: GemmShape,
  block: FunctionBuilder,
  packA: FunctionBuilder,
  packB: FunctionBuilder,
  scratch: ExportedGlobal,
  suffix: string,
): FunctionBuilder {
  const f = mod.func(`gemm_fused${suffix}`, [I32])
  const params = 0
  const field = (name: (typeof FUSED_FIELDS)[number]) => {
    const local = f.local(I32)
    f.get(params).i32Load({ offset: 4 * FUSED_FIELDS.indexOf(name) }).set(local)
    return local
  }
  const pA = field("pA")
  const aps = field("aps")
  const bSrc = field("bSrc")
  const bps = field("bps")
  const bks = field("bks")
  const nc = field("nc")
  const pC = field("pC")
  const ldc = field("ldc")
  const M = field("M")
  const K = field("K")
  const kcMax = field("kcMax")
  const mcMax = field("mcMax")
  const aSrc = field("aSrc")
  const aRowStride = field("aRowStride")
  const aColStride = field("aColStride")
  const aTag = field("aTag")
  const pc = f.local(I32)
  const kc = f.local(I32)
  const ic = f.local(I32)
  const mc = f.local(I32)
  const packed = f.local(I32)
  const srcK = f.local(I32) // B at depth pc
  const full = f.local(I32)
  // Rows of B contiguous along N (bps = 4) and a first block with a full row panel (M ≥ mr): the block's first
  // row of tiles packs B (gemm_micro_pack) instead of a separate pass over it.
  const fuse = f.local(I32)
  f.get(bps).i32Const(4).i32Eq().get(M).i32Const(mr).i32GeS().i32And().set(fuse)
  f.globalGet(scratch.index).i32Const(SCRATCH_B_OFFSET).i32Add().set(packed)
  // A thread-private A: pack it unless this thread's area already holds this tag's packing.
  f.get(aTag).if()
  f.globalGet(scratch.index).i32Const(SCRATCH_A_OFFSET).i32Add().set(pA)
  f.globalGet(scratch.index).i32Load({ offset: SCRATCH_A_TAG }).get(aTag).i32Ne().if()
  // pack_a(dst, src, P = M, K, ps, ks, p0 = 0, p1 = ⌈M / mr⌉, k0 = 0, kc = K)
  f.get(pA).get(aSrc).get(M).get(K).get(aRowStride).get(aColStride)
  f.i32Const(0).get(M).i32Const(mr - 1).i32Add().i32Const(mr).i32DivS().i32Const(0).get(K)
  f.call(packA)
  f.globalGet(scratch.index).get(aTag).i32Store({ offset: SCRATCH_A_TAG })
  f.end()
  f.end()
  f.i32Const(0).set(pc)
  f.block().loop()
  f.get(pc).get(K).i32GeS().brIf(1)
  f.get(K).get(pc).i32Sub().set(kc)
  f.get(kcMax).get(kc).get(kc).get(kcMax).i32GtS().select().set(kc)
  f.get(bSrc).get(pc).get(bks).i32Mul().i32Add().set(srcK)
  f.get(fuse).if()
  // Full panels are packed by the first block's first row of tiles (gemm_micro_pack); only a partial last
  // panel goes through pack_b: pack_b(packed + full·kc·nr·4, srcK + full·nr·4, P = nc − full·nr, kc, 4, bks, 0, 1, 0, kc)
  f.get(nc).i32Const(nr).i32DivS().set(full)
  f.get(nc).get(full).i32Const(nr).i32Mul().i32Ne().if()
  f.get(packed).get(full).get(kc).i32Mul().i32Const(4 * nr).i32Mul().i32Add()
  f.get(srcK).get(full).i32Const(4 * nr).i32Mul().i32Add()
  f.get(nc).get(full).i32Const(nr).i32Mul().i32Sub().get(kc).i32Const(4).get(bks)
  f.i32Const(0).i32Const(1).i32Const(0).get(kc)
  f.call(packB)
  f.end()
  f.else()
  // pack_b(dst, srcK, P = nc, K = kc, ps = bps, ks = bks, p0 = 0, p1 = ⌈nc / nr⌉, k0 = 0, kc)
  f.get(packed).get(srcK).get(nc).get(kc).get(bps).get(bks)
  f.i32Const(0).get(nc).i32Const(nr - 1).i32Add().i32Const(nr).i32DivS().i32Const(0).get(kc)
  f.call(packB)
  f.end()
  f.i32Const(0).set(ic)
  f.block().loop()
  f.get(ic).get(M).i32GeS().brIf(1)
  f.get(M).get(ic).i32Sub().set(mc)
  f.get(mcMax).get(mc).get(mc).get(mcMax).i32GtS().select().set(mc)
  // gemm_block(pA + (ic / mr)·aps + pc·mr·4, packed, pC + ic·ldc, ldc, mc, nc, kc, aps, kc·nr·4, pc > 0,
  //            fuse && ic = 0 ? srcK : 0, bks)
  f.get(pA).get(ic).i32Const(mr).i32DivS().get(aps).i32Mul().i32Add().get(pc).i32Const(4 * mr).i32Mul().i32Add()
  f.get(packed).get(pC).get(ic).get(ldc).i32Mul().i32Add().get(ldc).get(mc).get(nc).get(kc).get(aps)
  f.get(kc).i32Const(4 * nr).i32Mul().get(pc).i32Const(0).i32GtS()
  f.get(srcK).i32Const(0).get(fuse).get(ic).i32Eqz().i32And().select().get(bks)
  f.call(block)
  f.get(ic).get(mcMax).i32Add().set(ic)
  f.br(0)
  f.end().end()
  f.get(pc).get(kc).i32Add().set(pc)
  f.br(0)
  f.end().end()
  return f
}
