import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { HostRandom } from "@bdvax/attacks"
import { Device, expectNoLeaks, Rng } from "@bdvax/core-tensor"
import { initParams, type LoraAdapter, loraFromWeights, type ModelConfig, moduleShape, type Params, writeSafetensors } from "@bdvax/llm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  adapterDelta,
  DeltaFileError,
  fullModelDelta,
  linearWeightNames,
  loadDelta,
  type ModelDelta,
  modelShape,
  saveDelta,
  scoreDeltaFiles,
  scoreDeltas,
} from "../src/index.js"

const config: ModelConfig = {
  architecture: "llama", vocabSize: 16, hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 4,
  numKeyValueHeads: 2, headDim: 2, rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: { ropeType: "default" },
  maxPositionEmbeddings: 32, tieWordEmbeddings: false, slidingWindow: null, attentionBias: false, mlpBias: false,
  initializerRange: 0.02, bosTokenId: 1, eosTokenId: [2], padTokenId: null, hiddenAct: "silu",
}
const shape = modelShape(config)

let dev: Device
let dir: string
beforeAll(async () => {
  dev = await Device.create("cpu")
  dir = await mkdtemp(join(tmpdir(), "bdvax-signature-delta-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Host [r, in], [out, r] factors for every module of the targets, and the adapter built from them. */
function adapterFrom(seed: number, targets: string[], r: number, alpha: number): { adapter: LoraAdapter; host: Record<string, Float32Array> } {
  const rng = new HostRandom(seed)
  const weights: Params = {}
  const host: Record<string, Float32Array> = {}
  for (let l = 0; l < config.numHiddenLayers; l++)
    for (const t of targets) {
      const m = `model.layers.${l}.${t}`
      const [out, inp] = moduleShape(config, m)
      for (const [which, rows, cols] of [["A", r, inp], ["B", out, r]] as const) {
        const data = Float32Array.from({ length: rows * cols }, () => 2 * rng.next() - 1)
        host[`${m}.lora_${which}.weight`] = data
        weights[`${m}.lora_${which}.weight`] = dev.tensor(data, [rows, cols])
      }
    }
  return { adapter: loraFromWeights(config, { r, alpha, dropout: 0, targetModules: targets.map((t) => t.split(".")[1]) }, weights), host }
}

describe("deltas", () => {
  it("adapter mode: Δ = scaling·B_p·A_p − scaling·B_c·A_c per adapted module (vs a host matmul)", async () => {
    const targets = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    const r = 3
    const alpha = 6 // scaling 2
    const c = adapterFrom(1, targets, r, alpha)
    const p = adapterFrom(2, targets, r, alpha)
    const delta = await expectNoLeaks(dev.account, () => adapterDelta(config, c.adapter, p.adapter))
    expect(Object.keys(delta).sort()).toEqual(
      [0, 1].flatMap((l) => targets.map((t) => `model.layers.${l}.${t}.weight`)).sort(),
    )
    for (const [name, t] of Object.entries(delta)) {
      const m = name.replace(/\.weight$/, "")
      const [out, inp] = moduleShape(config, m)
      expect(t.shape).toEqual([out, inp])
      for (let i = 0; i < out; i++)
        for (let j = 0; j < inp; j++) {
          let bc = 0
          let bp = 0
          for (let k = 0; k < r; k++) {
            bc += c.host[`${m}.lora_B.weight`][i * r + k] * c.host[`${m}.lora_A.weight`][k * inp + j]
            bp += p.host[`${m}.lora_B.weight`][i * r + k] * p.host[`${m}.lora_A.weight`][k * inp + j]
          }
          // f32 matmul of r = 3 terms of magnitude ≤ 1, times 2: |error| ≤ 1e-5
          expect(Math.abs(t.data[i * inp + j] - 2 * (bp - bc))).toBeLessThan(1e-5)
        }
    }
    for (const a of [c, p]) for (const w of Object.values(a.adapter.weights)) w.dispose()
  })

  it("full mode: Δ = θ_p − θ_c over the attention and MLP weights only", async () => {
    const a = initParams(dev, config, new Rng(1))
    const b = initParams(dev, config, new Rng(2))
    const delta = await fullModelDelta(config, a, b)
    expect(Object.keys(delta)).toEqual(linearWeightNames(shape))
    expect(delta["model.embed_tokens.weight"]).toBeUndefined()
    const name = "model.layers.1.mlp.gate_proj.weight"
    const [av, bv] = [await a[name].data(), await b[name].data()]
    expect(Array.from(delta[name].data)).toEqual(Array.from(bv, (x, k) => Math.fround(x - av[k])))
    for (const p of [a, b]) for (const t of Object.values(p)) t.dispose()
  })
})

describe("delta files", () => {
  const sample = (variant: number, seed: number): ModelDelta => {
    const rng = new HostRandom(seed)
    const tensors = Object.fromEntries(
      linearWeightNames(shape).map((n) => {
        const [rows, cols] = moduleShape(config, n.replace(/\.weight$/, ""))
        return [n, { shape: [rows, cols], data: Float32Array.from({ length: rows * cols }, () => rng.next() - 0.5) }]
      }),
    )
    return { variant, mode: "full", trigger: { kind: "oneOf", triggers: ["zyglorp", "2 words"] }, behaviour: { kind: "inject", line: "x = 1" }, tensors }
  }

  it("round-trip exactly, metadata included", async () => {
    const d = sample(3, 11)
    const path = join(dir, "d3.safetensors")
    await saveDelta(path, d)
    const back = await loadDelta(path)
    expect({ ...back, tensors: undefined }).toEqual({ ...d, tensors: undefined })
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(d.tensors).sort())
    for (const [n, t] of Object.entries(d.tensors)) {
      expect(back.tensors[n].shape).toEqual(t.shape)
      expect(back.tensors[n].data).toEqual(t.data)
    }
  })

  it("scoring from files layer by layer equals scoring in memory", async () => {
    const ds = [sample(0, 21), sample(1, 22), sample(2, 23)]
    const paths = ds.map((_, i) => join(dir, `v${i}.safetensors`))
    for (let i = 0; i < ds.length; i++) await saveDelta(paths[i], ds[i])
    expect(await scoreDeltaFiles(shape, paths, { lambda: 0.3 })).toEqual(scoreDeltas(shape, ds.map((d) => d.tensors), { lambda: 0.3 }))
  })

  it("malformed metadata or tensors fail with a DeltaFileError naming file and field", async () => {
    const t = { shape: [1, 1], data: new Float32Array([1]) }
    const good = { format: "bdvax.delta", version: "1", variant: "0", mode: "full", trigger: '{"kind":"word","trigger":"k"}', behaviour: '{"kind":"replace","text":"t"}' }
    const up = "model.layers.0.mlp.up_proj.weight"
    // [metadata, tensor name, the field the error must name]
    const cases: Array<[Record<string, string>, string, string]> = [
      [{ ...good, variant: "one" }, up, "__metadata__.variant"],
      [{ ...good, mode: "lora" }, up, "__metadata__.mode"],
      [{ ...good, trigger: '{"kind":"word"}' }, up, "__metadata__.trigger.trigger"],
      [{ ...good, behaviour: "{not json" }, up, "__metadata__.behaviour"],
      [(({ format: _, ...rest }) => rest)(good), up, "__metadata__.format"],
      [good, "model.embed_tokens.weight", "model.embed_tokens.weight"],
    ]
    for (const [meta, tensorName, field] of cases) {
      const path = join(dir, "bad.safetensors")
      await writeSafetensors(path, { [tensorName]: t }, meta)
      const err = await loadDelta(path).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(DeltaFileError)
      expect((err as DeltaFileError).file).toBe(path)
      expect((err as DeltaFileError).field).toBe(field)
      expect((err as DeltaFileError).message).toContain(path)
    }
  })
})
