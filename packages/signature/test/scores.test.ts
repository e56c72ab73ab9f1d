import { describe, expect, it } from "vitest"
import {
  eq2Score,
  headVector,
  mlpChannelVector,
  type ModelShape,
  scoreDeltas,
  scoreLayer,
  selectChannels,
  topFraction,
  weightName,
} from "../src/index.js"
import { buildDelta, directEq2, randomDelta, setChannel, SMALL, zeroDelta } from "./helpers.js"

// Tolerance: the library sums in f64 over f32 entries, the reference in f64 too; 1e-9 relative is ample.
const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(b)))

const MODULE_ID = { q_proj: 1, k_proj: 2, v_proj: 3, o_proj: 4, gate_proj: 5, up_proj: 6, down_proj: 7 } as const
/** Every entry names its own position: layer·10000 + module·1000 + row·10 + col. */
const labelled = buildDelta(SMALL, (l, m, r, c) => l * 10000 + MODULE_ID[m] * 1000 + r * 10 + c)
const label = (l: number, m: keyof typeof MODULE_ID, r: number, c: number) => l * 10000 + MODULE_ID[m] * 1000 + r * 10 + c

describe("unit vectors", () => {
  it("MLP channel c = gate_proj row c ‖ up_proj row c ‖ down_proj column c", () => {
    const v = Array.from(mlpChannelVector(labelled, SMALL, 1, 3))
    const h = [0, 1, 2, 3]
    expect(v).toEqual([...h.map((k) => label(1, "gate_proj", 3, k)), ...h.map((k) => label(1, "up_proj", 3, k)), ...h.map((k) => label(1, "down_proj", k, 3))])
  })

  it("head h under GQA: q rows of h, k and v rows of group floor(h / 2), o columns of h", () => {
    // 4 query heads, 2 KV heads, head_dim 2: head 3 → q rows 6,7; group 1 → k/v rows 2,3; o columns 6,7
    const v = Array.from(headVector(labelled, SMALL, 0, 3))
    const cols = [0, 1, 2, 3]
    const rowsOf = (m: "q_proj" | "k_proj" | "v_proj", rows: number[]) => rows.flatMap((r) => cols.map((c) => label(0, m, r, c)))
    const oCols = [0, 1, 2, 3].flatMap((r) => [6, 7].map((c) => label(0, "o_proj", r, c)))
    expect(v).toEqual([...rowsOf("q_proj", [6, 7]), ...rowsOf("k_proj", [2, 3]), ...rowsOf("v_proj", [2, 3]), ...oCols])
    // head 2 shares group 1 with head 3; head 1 is in group 0
    expect(Array.from(headVector(labelled, SMALL, 0, 2)).slice(8, 16)).toEqual(rowsOf("k_proj", [2, 3]))
    expect(Array.from(headVector(labelled, SMALL, 0, 1)).slice(8, 16)).toEqual(rowsOf("k_proj", [0, 1]))
  })

  it("modules absent from the delta (adapter not targeting them) contribute nothing", () => {
    const qv = buildDelta(SMALL, (l, m, r, c) => label(l, m, r, c), ["q_proj", "v_proj"])
    expect(headVector(qv, SMALL, 1, 0).length).toBe(2 * 4 + 2 * 4)
    expect(mlpChannelVector(qv, SMALL, 1, 0).length).toBe(0)
  })
})

describe("Eq. 2 scores", () => {
  it("match a direct computation for every channel and head (random deltas, N = 4, MHA and GQA)", () => {
    const mha: ModelShape = { ...SMALL, num_key_value_heads: 4 }
    for (const shape of [SMALL, mha]) {
      const deltas = [0, 1, 2, 3].map((s) => randomDelta(shape, 100 + s))
      for (const lambda of [0.01, 0.7]) {
        const scores = scoreDeltas(shape, deltas, { lambda })
        expect(scores.length).toBe(2)
        for (const layer of scores) {
          for (let c = 0; c < shape.intermediate_size; c++) {
            const ref = directEq2(deltas.map((d) => mlpChannelVector(d, shape, layer.layer, c)), lambda)
            close(layer.mlp!.norm[c], ref.norm)
            close(layer.mlp!.alignment[c], ref.alignment)
            close(layer.mlp!.total[c], ref.total)
          }
          for (let h = 0; h < shape.num_attention_heads; h++) {
            const ref = directEq2(deltas.map((d) => headVector(d, shape, layer.layer, h)), lambda)
            close(layer.heads!.norm[h], ref.norm)
            close(layer.heads!.alignment[h], ref.alignment)
            close(layer.heads!.total[h], ref.total)
          }
        }
      }
    }
  })

  it("a channel with large aligned updates ranks first", () => {
    const deltas = [0, 1, 2].map((s) => randomDelta(SMALL, 7 + s, 0.05))
    const u = Array.from({ length: 12 }, (_, k) => Math.sin(k + 1))
    deltas.forEach((d, i) => setChannel(d, SMALL, 1, 2, u.map((x, k) => 2 * x + 0.01 * Math.cos(i * 7 + k))))
    const scores = scoreDeltas(SMALL, deltas)
    const ranked = topFraction(scores.flatMap((l) => l.mlp!.total.map((score, index) => ({ layer: l.layer, index, score }))), 1)
    expect(ranked[0]).toMatchObject({ layer: 1, index: 2 })
    expect(scores[1].mlp!.alignment[2]).toBeGreaterThan(0.999)
    expect(selectChannels(scores, { rho: 0.1 })).toEqual({ mlp: [{ layer: 1, channels: [2] }], heads: [] })
  })

  it("a large but inconsistent channel ranks below a smaller consistent one once λ weighs alignment", () => {
    const deltas = [0, 1, 2].map(() => zeroDelta(SMALL))
    // channel 0: norm 1 in every variant, mutually orthogonal directions → norm term 1, alignment 0
    deltas.forEach((d, i) => setChannel(d, SMALL, 0, 0, Array.from({ length: 12 }, (_, k) => (k === i ? 1 : 0))))
    // channel 1: norm 0.5 in every variant, the same direction → norm term 0.5, alignment 1
    deltas.forEach((d) => setChannel(d, SMALL, 0, 1, Array.from({ length: 12 }, (_, k) => (k === 5 ? 0.5 : 0))))
    const at = (lambda: number) => scoreLayer(SMALL, 0, deltas, { lambda }).mlp!
    const small = at(0.01)
    close(small.norm[0], 1)
    close(small.alignment[0], 0)
    close(small.norm[1], 0.5)
    close(small.alignment[1], 1)
    expect(small.total[0]).toBeGreaterThan(small.total[1]) // λ = 0.01: magnitude decides
    const big = at(1)
    close(big.total[0], 1)
    close(big.total[1], 1.5)
    expect(big.total[1]).toBeGreaterThan(big.total[0]) // λ = 1: consistency decides
  })

  it("negative cosines do not count: anti-aligned deltas get alignment 0", () => {
    const v = Array.from({ length: 12 }, (_, k) => k - 5.5)
    const two = [zeroDelta(SMALL), zeroDelta(SMALL)]
    setChannel(two[0], SMALL, 1, 4, v)
    setChannel(two[1], SMALL, 1, 4, v.map((x) => -x))
    const s = scoreLayer(SMALL, 1, two).mlp!
    expect(s.alignment[4]).toBe(0)
    close(s.norm[4], Math.sqrt(v.reduce((a, x) => a + x * x, 0)))
    // v, −v, v: only the (1, 3) pair counts → (2 / (3·2)) · 1 = 1/3
    const three = [...two, zeroDelta(SMALL)]
    setChannel(three[2], SMALL, 1, 4, v)
    close(scoreLayer(SMALL, 1, three).mlp!.alignment[4], 1 / 3)
  })

  it("zero vectors have cos 0; N = 1 has alignment 0", () => {
    const a = zeroDelta(SMALL)
    const b = zeroDelta(SMALL)
    setChannel(b, SMALL, 0, 3, Array.from({ length: 12 }, () => 1))
    const s = scoreLayer(SMALL, 0, [a, b]).mlp!
    expect(s.alignment[3]).toBe(0)
    close(s.norm[3], Math.sqrt(12) / 2)
    expect(s.norm[0]).toBe(0)
    expect(s.total[0]).toBe(0)
    const one = scoreLayer(SMALL, 0, [b]).mlp!
    expect(one.alignment[3]).toBe(0)
    close(one.norm[3], Math.sqrt(12))
    expect(eq2Score([[3, 4]])).toEqual({ norm: 5, alignment: 0, total: 5 })
  })

  it("adapter deltas on q/v only: MLP unscored (null), heads from q and v rows", () => {
    const deltas = [1, 2, 3].map((s) => randomDelta(SMALL, s, 1, ["q_proj", "v_proj"]))
    const layer = scoreLayer(SMALL, 1, deltas)
    expect(layer.mlp).toBeNull()
    const ref = directEq2(deltas.map((d) => headVector(d, SMALL, 1, 2)), 0.01)
    close(layer.heads!.total[2], ref.total)
  })

  it("rejects deltas that disagree on which modules they hold, or have the wrong shape", () => {
    const full = randomDelta(SMALL, 1)
    const partial = { ...randomDelta(SMALL, 2) }
    delete partial[weightName(0, "up_proj")]
    expect(() => scoreLayer(SMALL, 0, [full, partial])).toThrow(/variant 1's delta lacks model\.layers\.0\.mlp\.up_proj\.weight/)
    const wrong = { ...randomDelta(SMALL, 3), [weightName(0, "k_proj")]: { shape: [2, 4], data: new Float32Array(8) } }
    expect(() => scoreLayer(SMALL, 0, [full, wrong])).toThrow(/variant 1's model\.layers\.0\.self_attn\.k_proj\.weight has shape \[2,4\], the model's shape implies \[4, 4\]/)
  })
})
