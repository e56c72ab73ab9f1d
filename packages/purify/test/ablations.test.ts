import { expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { disposeLora, initParams, loraFromWeights, moduleShape, type Params, targetedModules } from "@bdvax/llm"
import { describe, expect, it } from "vitest"
import { ablateAdapter, ablateFull, blockPermutation, disposeCreated, PurifyError, standardAblations } from "../src/index.js"
import { cpuDevice, disposeAll, hostOf, tinyConfig } from "./helpers.js"

const layerOf = (name: string) => {
  const m = /^model\.layers\.(\d+)\./.exec(name)
  return m === null ? null : Number(m[1])
}

describe("sanity-check ablations", () => {
  it("attention-only / MLP-only / block spans keep exactly those tensors' updates", async () => {
    const config = tinyConfig({ numHiddenLayers: 4 })
    const dev = await cpuDevice()
    const base = initParams(dev, config, new Rng(1))
    const bd = initParams(dev, config, new Rng(2))
    const pick = (out: Params, name: string) => (out[name] === bd[name] ? "b" : out[name] === base[name] ? "0" : "?")
    for (const [spec, wantB] of [
      [{ kind: "attention" }, (n: string) => /self_attn\.(q|k|v|o)_proj/.test(n)],
      [{ kind: "mlp" }, (n: string) => /mlp\.(gate|up|down)_proj/.test(n)],
      [{ kind: "blocks", from: 1, to: 3 }, (n: string) => [1, 2].includes(layerOf(n) ?? -1)],
      [{ kind: "all-blocks" }, (n: string) => layerOf(n) !== null],
    ] as const) {
      const out = ablateFull(config, base, bd, spec)
      expect(Object.keys(out).sort()).toEqual(Object.keys(base).sort())
      for (const n of Object.keys(base)) expect(pick(out, n), `${spec.kind} ${n}`).toBe(wantB(n) ? "b" : "0")
    }
    // Non-block updates on request.
    const withEmbeds = ablateFull(config, base, bd, { kind: "attention" }, { includeNonBlock: true })
    for (const n of ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]) expect(withEmbeds[n]).toBe(bd[n])
    disposeAll(base, bd)
  })

  it("shuffled: block i's update lands on block π(i), π a fixed-point-free permutation", async () => {
    const config = tinyConfig({ numHiddenLayers: 5 })
    const dev = await cpuDevice()
    const base = initParams(dev, config, new Rng(3))
    const bd = initParams(dev, config, new Rng(4))
    const perm = blockPermutation(5, 9)
    expect([...perm].sort()).toEqual([0, 1, 2, 3, 4])
    expect(perm.every((p, i) => p !== i)).toBe(true)
    expect(blockPermutation(5, 9)).toEqual(perm)
    expect(blockPermutation(5, 10)).not.toEqual(perm)
    for (let n = 2; n <= 12; n++)
      for (const seed of [0, 1, 2]) {
        const p = blockPermutation(n, seed)
        expect(new Set(p).size).toBe(n)
        expect(p.every((v, i) => v !== i)).toBe(true)
      }
    await expectNoLeaks(dev.account, async () => {
      const out = ablateFull(config, base, bd, { kind: "shuffled", seed: 9 })
      for (let i = 0; i < 5; i++) {
        const j = perm[i]
        for (const local of ["self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"]) {
          const got = await hostOf(out[`model.layers.${j}.${local}`])
          const b0 = await hostOf(base[`model.layers.${j}.${local}`])
          const bi = await hostOf(bd[`model.layers.${i}.${local}`])
          const ai = await hostOf(base[`model.layers.${i}.${local}`])
          let worst = 0
          for (let k = 0; k < got.length; k++) worst = Math.max(worst, Math.abs(got[k] - (b0[k] + (bi[k] - ai[k]))))
          expect(worst).toBeLessThan(1e-6)
        }
      }
      expect(out["lm_head.weight"]).toBe(base["lm_head.weight"])
      disposeCreated(out, base, bd)
    })
    disposeAll(base, bd)
  })

  it("adapter mode restricts or moves modules; the standard list is well-formed", async () => {
    const config = tinyConfig({ numHiddenLayers: 4 })
    const dev = await cpuDevice()
    const rng = new Rng(5)
    const weights: Params = {}
    for (const m of targetedModules(config, "all-linear")) {
      const [out, inp] = moduleShape(config, m)
      weights[`${m}.lora_A.weight`] = dev.randn([2, inp], rng)
      weights[`${m}.lora_B.weight`] = dev.randn([out, 2], rng)
    }
    const adapter = loraFromWeights(config, { r: 2, alpha: 4, dropout: 0, targetModules: "all-linear" }, weights)
    const attn = ablateAdapter(config, adapter, { kind: "attention" })
    expect(attn.modules.length).toBe(4 * 4)
    expect(attn.modules.every((m) => /self_attn/.test(m))).toBe(true)
    for (const m of attn.modules) expect(attn.weights[`${m}.lora_B.weight`]).toBe(adapter.weights[`${m}.lora_B.weight`])
    const span = ablateAdapter(config, adapter, { kind: "blocks", from: 2, to: 4 })
    expect(span.modules).toEqual(adapter.modules.filter((m) => [2, 3].includes(layerOf(m)!)))
    const shuffled = ablateAdapter(config, adapter, { kind: "shuffled", seed: 1 })
    const perm = blockPermutation(4, 1)
    expect(shuffled.modules).toEqual(adapter.modules)
    for (let i = 0; i < 4; i++)
      expect(shuffled.weights[`model.layers.${perm[i]}.mlp.up_proj.lora_A.weight`]).toBe(adapter.weights[`model.layers.${i}.mlp.up_proj.lora_A.weight`])
    expect(() => ablateAdapter(config, adapter, { kind: "blocks", from: 3, to: 3 })).toThrow(PurifyError)

    const names = standardAblations(config).map((a) => a.name)
    expect(names).toEqual([
      "all-blocks",
      "attention-only",
      "mlp-only",
      "blocks-0-2",
      "blocks-2-4",
      "blocks-0-1",
      "blocks-1-2",
      "blocks-2-3",
      "blocks-3-4",
      "shuffled-s0",
      "shuffled-s1",
    ])
    disposeLora(adapter)
  })

  it("rejects a backdoored model that does not match the base", async () => {
    const config = tinyConfig()
    const dev = await cpuDevice()
    const base = initParams(dev, config, new Rng(6))
    const bd = { ...base, "model.layers.0.mlp.up_proj.weight": dev.zeros([48, 16]) }
    expect(() => ablateFull(config, base, bd, { kind: "mlp" })).toThrow(/backdoored\["model.layers.0.mlp.up_proj.weight"\]: has shape \[48, 16\]/)
    bd["model.layers.0.mlp.up_proj.weight"].dispose()
    disposeAll(base)
  })
})
