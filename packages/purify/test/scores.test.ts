import { type Device, expectNoLeaks, keep, noGrad, ops, Rng, type Tensor, ShapeError } from "@bdvax/core-tensor"
import { collateSft, embedTokens, forward, initParams, loraFromWeights, type ModelConfig, moduleShape, type Params, targetedModules } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import {
  channelNorms,
  magnitudePrune,
  mlpActivationSquares,
  randomSelection,
  selectionSize,
  wandaFromSquares,
  wandaScores,
  wandaSelection,
} from "../src/index.js"
import { cpuDevice, disposeAll, examples, hostOf, sameBits, tinyConfig } from "./helpers.js"

const relErr = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-12, Math.abs(b))

/** Run forward on one example (no padding) and return each layer's MLP activation [T, F] on the host. */
async function activationsOf(dev: Device, config: ModelConfig, params: Params, ids: number[]): Promise<Float32Array[]> {
  const kept: Tensor[] = []
  noGrad(() => {
    const input = dev.tensor(ids, [1, ids.length], "int32")
    const { logits } = forward(config, params, input, { onMlpActivation: (l, act) => (kept[l] = keep(ops.mul(act, 1))) })
    logits.dispose()
    input.dispose()
  })
  const out = await Promise.all(kept.map(hostOf))
  for (const t of kept) t.dispose()
  return out
}

describe("forward options added for purification (model.ts)", () => {
  it("inputsEmbeds = the embedding lookup gives bit-identical logits; a wrong shape is a ShapeError", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(1))
    const batch = collateSft(examples.slice(0, 3), { padTokenId: 0 })
    const ids = dev.tensor(batch.inputIds, [batch.batch, batch.length], "int32")
    const keyMask = dev.tensor(batch.keyMask, [batch.batch, batch.length], "bool")
    await expectNoLeaks(dev.account, async () => {
      const plain = forward(config, params, ids, { keyMask })
      const embeds = embedTokens(config, params, ids)
      const viaEmbeds = forward(config, params, ids, { keyMask, inputsEmbeds: embeds, collectHidden: true })
      expect(sameBits(await hostOf(plain.logits), await hostOf(viaEmbeds.logits))).toBe(true)
      expect(embeds.isDisposed).toBe(false) // the caller keeps its tensor
      expect(sameBits(await hostOf(viaEmbeds.hidden[0]), await hostOf(embeds))).toBe(true)
      const wrong = dev.zeros([batch.batch, batch.length, 16])
      expect(() => forward(config, params, ids, { inputsEmbeds: wrong })).toThrow(ShapeError)
      for (const t of [plain.logits, viaEmbeds.logits, ...viaEmbeds.hidden, embeds, wrong]) t.dispose()
    })
    ids.dispose()
    keyMask.dispose()
    disposeAll(params)
  })

  it("onMlpActivation sees silu(gate(y))·up(y), and observing does not change the logits", async () => {
    const config = tinyConfig({ numHiddenLayers: 1 })
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(2))
    // With down_proj = 0 the layer's output is the post-attention residual, so the MLP input is computable from it.
    params["model.layers.0.mlp.down_proj.weight"].dispose()
    params["model.layers.0.mlp.down_proj.weight"] = dev.zeros([32, 48])
    const ids = [1, 5, 9, 13, 7, 2]
    const input = dev.tensor(ids, [1, ids.length], "int32")
    const seen: Tensor[] = []
    const hooked = forward(config, params, input, { collectHidden: true, onMlpActivation: (_l, act) => seen.push(keep(ops.mul(act, 1))) })
    const plain = forward(config, params, input)
    expect(seen.length).toBe(1)
    expect(sameBits(await hostOf(hooked.logits), await hostOf(plain.logits))).toBe(true)
    const h = await hostOf(hooked.hidden[1])
    const norm = await hostOf(params["model.layers.0.post_attention_layernorm.weight"])
    const wg = await hostOf(params["model.layers.0.mlp.gate_proj.weight"])
    const wu = await hostOf(params["model.layers.0.mlp.up_proj.weight"])
    const act = await hostOf(seen[0])
    let worst = 0
    for (let t = 0; t < ids.length; t++) {
      const row = h.subarray(t * 32, (t + 1) * 32)
      const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / 32 + config.rmsNormEps)
      const y = Array.from(row, (v, i) => (v / rms) * norm[i])
      for (let c = 0; c < 48; c++) {
        let g = 0
        let u = 0
        for (let i = 0; i < 32; i++) {
          g += y[i] * wg[c * 32 + i]
          u += y[i] * wu[c * 32 + i]
        }
        const expected = (g / (1 + Math.exp(-g))) * u
        worst = Math.max(worst, Math.abs(act[t * 48 + c] - expected))
      }
    }
    expect(worst).toBeLessThan(1e-5) // f32 matmul vs f64 host
    for (const t of [...seen, hooked.logits, ...hooked.hidden, plain.logits, input]) t.dispose()
    disposeAll(params)
  })
})

describe("Wanda (fine-pruning)", () => {
  it("activation squares over non-pad tokens match per-example activations; scores = Σ|W_down|·‖a‖", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(3))
    // Direct: every example alone (no padding at all), squares summed on the host in f64.
    const direct = Array.from({ length: 2 }, () => new Float64Array(48))
    for (const e of examples) {
      const acts = await activationsOf(dev, config, params, [...e.promptIds, ...e.responseIds])
      acts.forEach((a, l) => a.forEach((v, i) => (direct[l][i % 48] += v * v)))
    }
    const squares = await expectNoLeaks(dev.account, () => mlpActivationSquares(config, params, examples, { batchSize: 4 }))
    let worst = 0
    for (let l = 0; l < 2; l++) for (let c = 0; c < 48; c++) worst = Math.max(worst, relErr(squares[l][c], direct[l][c]))
    expect(worst).toBeLessThan(1e-4) // padded batches vs single sequences: f32 noise only

    // Scores from known squares vs a direct host computation.
    const known = [Float64Array.from({ length: 48 }, (_, c) => (c + 1) * 0.5), Float64Array.from({ length: 48 }, (_, c) => (48 - c) ** 2)]
    const scores = await wandaFromSquares(config, params, known)
    for (let l = 0; l < 2; l++) {
      const w = await hostOf(params[`model.layers.${l}.mlp.down_proj.weight`])
      for (let c = 0; c < 48; c++) {
        let colAbs = 0
        for (let i = 0; i < 32; i++) colAbs += Math.abs(w[i * 48 + c])
        expect(relErr(scores[l][c], colAbs * Math.sqrt(known[l][c]))).toBeLessThan(1e-5)
      }
    }

    // The selection is the lowest-scoring ratio of all channels.
    const full = await wandaScores(config, params, examples)
    const sel = await wandaSelection(config, params, examples, 0.25)
    expect(selectionSize(sel).channels).toBe(24)
    const ranked = full.flatMap((row, l) => Array.from(row, (s, c) => ({ s, key: `${l}:${c}` }))).sort((a, b) => a.s - b.s)
    const chosen = new Set(sel.mlp.flatMap((e) => e.channels.map((c) => `${e.layer}:${c}`)))
    expect(chosen).toEqual(new Set(ranked.slice(0, 24).map((r) => r.key)))
    disposeAll(params)
  })

  it("adapter mode prunes a seeded random selection", () => {
    const config = tinyConfig()
    const a = randomSelection(config, 0.1, 7)
    const b = randomSelection(config, 0.1, 7)
    const c = randomSelection(config, 0.1, 8)
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
    expect(selectionSize(a).channels).toBe(Math.round(0.1 * 96))
    for (const e of a.mlp) expect([...e.channels].sort((x, y) => x - y)).toEqual(e.channels)
  })
})

describe("magnitude pruning", () => {
  it("full model: norms of concat(gate row, up row, down col); picks the smallest", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const params = initParams(dev, config, new Rng(4))
    // Shrink channels 3 and 40 of layer 1 so the expected choice is unambiguous.
    for (const [m, axis] of [["gate_proj", "rows"], ["up_proj", "rows"], ["down_proj", "cols"]] as const) {
      const name = `model.layers.1.mlp.${m}.weight`
      const old = params[name]
      const shape = axis === "rows" ? [48, 1] : [1, 48]
      const scale = dev.tensor(Array.from({ length: 48 }, (_, c) => (c === 3 || c === 40 ? 0.01 : 1)), shape)
      params[name] = ops.mul(old, scale)
      old.dispose()
      scale.dispose()
    }
    const norms = await channelNorms(config, params)
    for (let l = 0; l < 2; l++) {
      const g = await hostOf(params[`model.layers.${l}.mlp.gate_proj.weight`])
      const u = await hostOf(params[`model.layers.${l}.mlp.up_proj.weight`])
      const d = await hostOf(params[`model.layers.${l}.mlp.down_proj.weight`])
      for (let c = 0; c < 48; c++) {
        let sq = 0
        for (let i = 0; i < 32; i++) sq += g[c * 32 + i] ** 2 + u[c * 32 + i] ** 2 + d[i * 48 + c] ** 2
        expect(relErr(norms[l][c], Math.sqrt(sq))).toBeLessThan(1e-5)
      }
    }
    const sel = await magnitudePrune(config, params, 2 / 96)
    expect(sel).toEqual({ mlp: [{ layer: 1, channels: [3, 40] }], heads: [] })
    const bigger = await magnitudePrune(config, params, 0.25)
    const all = norms.flatMap((row, l) => Array.from(row, (n, c) => ({ n, key: `${l}:${c}` }))).sort((a, b) => a.n - b.n)
    expect(new Set(bigger.mlp.flatMap((e) => e.channels.map((c) => `${e.layer}:${c}`)))).toEqual(new Set(all.slice(0, 24).map((x) => x.key)))
    await expect(magnitudePrune(config, params, 1.5)).rejects.toThrow(/ratio: 1.5 is not a fraction/)
    disposeAll(params)
  })

  it("adapter: norms of the effective update scaling·B·A (untargeted modules count 0)", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const rng = new Rng(5)
    const weights: Params = {}
    for (const m of targetedModules(config, ["gate_proj", "down_proj"])) {
      const [out, inp] = moduleShape(config, m)
      weights[`${m}.lora_A.weight`] = dev.randn([2, inp], rng)
      weights[`${m}.lora_B.weight`] = dev.randn([out, 2], rng)
    }
    const adapter = loraFromWeights(config, { r: 2, alpha: 6, dropout: 0, targetModules: ["gate_proj", "down_proj"] }, weights)
    const norms = await expectNoLeaks(dev.account, () => channelNorms(config, adapter))
    const s = 6 / 2
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}.mlp`
      const [gA, gB, dA, dB] = await Promise.all(
        [`${p}.gate_proj.lora_A.weight`, `${p}.gate_proj.lora_B.weight`, `${p}.down_proj.lora_A.weight`, `${p}.down_proj.lora_B.weight`].map((n) => hostOf(weights[n])),
      )
      for (let c = 0; c < 48; c++) {
        let sq = 0
        for (let i = 0; i < 32; i++) {
          const gate = s * (gB[c * 2] * gA[i] + gB[c * 2 + 1] * gA[32 + i]) // ΔW_gate[c, i]
          const down = s * (dB[i * 2] * dA[c] + dB[i * 2 + 1] * dA[48 + c]) // ΔW_down[i, c]
          sq += gate ** 2 + down ** 2
        }
        expect(relErr(norms[l][c], Math.sqrt(sq))).toBeLessThan(1e-4)
      }
    }
    disposeAll(weights)
  })
})
