import { describe, expect, it } from "vitest"
import { type LayerScores, selectChannels, selectionSize, topFraction } from "../src/index.js"

const unitScores = (total: number[], norm = total, alignment = total.map(() => 0)) => ({ norm, alignment, total })

describe("percentile selection", () => {
  // 3 layers × 10 channels with distinct scores: unit u = 10·layer + c scores 100·(7u mod 30), a permutation
  const scores: LayerScores[] = [0, 1, 2].map((layer) => ({
    layer,
    mlp: unitScores(Array.from({ length: 10 }, (_, c) => (((layer * 10 + c) * 7) % 30) * 100)),
    heads: unitScores([layer, 10 - layer]),
  }))
  const all = scores.flatMap((l) => l.mlp!.total.map((score, index) => ({ layer: l.layer, index, score })))

  it("takes exactly round(ρ·M) channels over all layers together, the highest scores", () => {
    expect(new Set(all.map((u) => u.score)).size).toBe(30)
    for (const [rho, k] of [[0.03, 1], [0.1, 3], [0.35, 11], [0.5, 15], [0, 0], [1, 30]] as const) {
      const sel = selectChannels(scores, { rho })
      expect(selectionSize(sel).channels).toBe(k)
      const threshold = [...all].sort((a, b) => b.score - a.score)[Math.max(0, k - 1)].score
      for (const { layer, channels } of sel.mlp) for (const c of channels) expect(scores[layer].mlp!.total[c]).toBeGreaterThanOrEqual(threshold)
    }
    // the top 3 scores are 2900, 2800, 2700
    const top = selectChannels(scores, { rho: 0.1 })
    const picked = top.mlp.flatMap(({ layer, channels }) => channels.map((c) => scores[layer].mlp!.total[c])).sort((a, b) => b - a)
    expect(picked).toEqual([2900, 2800, 2700])
  })

  it("lists layers ascending, channels ascending, only non-empty layers; heads only with rhoHeads", () => {
    const sel = selectChannels(scores, { rho: 0.5 })
    expect(sel.heads).toEqual([])
    expect(sel.mlp.map((l) => l.layer)).toEqual([...sel.mlp.map((l) => l.layer)].sort((a, b) => a - b))
    for (const l of sel.mlp) {
      expect(l.channels.length).toBeGreaterThan(0)
      expect(l.channels).toEqual([...l.channels].sort((a, b) => a - b))
    }
    // heads scores: layer0 [0, 10], layer1 [1, 9], layer2 [2, 8] → top half (3 of 6) = 10, 9, 8
    expect(selectChannels(scores, { rho: 0, rhoHeads: 0.5 }).heads).toEqual([
      { layer: 0, heads: [1] },
      { layer: 1, heads: [1] },
      { layer: 2, heads: [1] },
    ])
  })

  it("breaks ties deterministically: earlier layer, then lower index", () => {
    const tied: LayerScores[] = [0, 1].map((layer) => ({ layer, mlp: unitScores([5, 1, 5, 5]), heads: null }))
    // six units score 5; take 3 → layer 0 channels 0, 2, 3
    expect(selectChannels(tied, { rho: 3 / 8 })).toEqual({ mlp: [{ layer: 0, channels: [0, 2, 3] }], heads: [] })
    expect(selectChannels(tied, { rho: 0.5 })).toEqual({ mlp: [{ layer: 0, channels: [0, 2, 3] }, { layer: 1, channels: [0] }], heads: [] })
    // the order the units come in does not matter
    const units = tied.flatMap((l) => l.mlp!.total.map((score, index) => ({ layer: l.layer, index, score })))
    expect(topFraction([...units].reverse(), 0.5)).toEqual(topFraction(units, 0.5))
  })

  it("ranks by one term alone for the ablation, and skips unscored layers", () => {
    const s: LayerScores[] = [
      { layer: 0, mlp: unitScores([3, 2, 1], [3, 2, 1], [0, 0.5, 1]), heads: null },
      { layer: 1, mlp: null, heads: null },
    ]
    expect(selectChannels(s, { rho: 1 / 3 }).mlp).toEqual([{ layer: 0, channels: [0] }])
    expect(selectChannels(s, { rho: 1 / 3, criterion: "norm" }).mlp).toEqual([{ layer: 0, channels: [0] }])
    expect(selectChannels(s, { rho: 1 / 3, criterion: "alignment" }).mlp).toEqual([{ layer: 0, channels: [2] }])
    expect(() => selectChannels(s, { rho: 1.5 })).toThrow(/rho must be in \[0, 1\], got 1.5/)
    expect(() => topFraction([{ layer: 0, index: 4, score: NaN }], 0.5)).toThrow(/layer 0 unit 4 has a NaN score/)
  })
})
