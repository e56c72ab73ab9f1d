import { Device, ops, Rng, type Tensor, valueAndGrad } from "@bdvax/core-tensor"
import { existsSync } from "node:fs"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parseModelConfig } from "../src/config.js"
import { ConfigError, CheckpointError } from "../src/errors.js"
import { createLora, disposeLora, disposeMerged, effectiveDelta, type LoraAdapter, loraFromWeights, loraWeights, mergeLora, targetedModules } from "../src/lora.js"
import { forward, initParams, type Params } from "../src/model.js"
import type { ModelConfig } from "../src/model-config.js"
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadPeftAdapter, peftTensorName, savePeftAdapter } from "../src/peft.js"
import { readSafetensors } from "../src/safetensors.js"
import { collateSft } from "../src/sft-data.js"
import { sftLossTensor, trainSft } from "../src/trainer.js"
import { tinyConfig } from "./tiny-config.js"

const config: ModelConfig = tinyConfig()

const ids = [[1, 5, 9, 13, 7, 22, 31, 8]]

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

async function logits(dev: Device, params: Params, lora?: LoraAdapter): Promise<Float32Array> {
  const input = dev.tensor(ids.flat(), [ids.length, ids[0].length], "int32")
  const { logits } = forward(config, params, input, { lora: lora ? loraWeights(lora) : undefined })
  const data = (await logits.data()) as Float32Array
  logits.dispose()
  input.dispose()
  return data
}

/** An adapter with non-zero B, so it changes the model. */
function randomAdapter(dev: Device, seed: number, targetModules: readonly string[] | "all-linear" = ["q_proj", "v_proj", "gate_proj", "down_proj"]): LoraAdapter {
  const rng = new Rng(seed)
  const fresh = createLora(dev, config, { r: 4, alpha: 8, dropout: 0, targetModules, rng })
  for (const m of fresh.modules) {
    const name = `${m}.lora_B.weight`
    const zero = fresh.weights[name]
    fresh.weights[name] = dev.randn(zero.shape, rng, 0, 0.1)
    zero.dispose()
  }
  return fresh
}

for (const backend of ["cpu", "webgpu"] as const) {
  describe(`LoRA (${backend})`, () => {
    let dev: Device
    beforeAll(async () => {
      dev = await Device.create(backend)
    })
    afterAll(() => dev.destroy())

    // WebGPU on lavapipe compiles a pipeline per kernel shape (seconds each when cold): it runs the merge test only.
    if (backend === "cpu") it("initialises like PEFT: A ~ U(±1/√in) with shape [r, in], B = 0 [out, r]", async () => {
      const adapter = createLora(dev, config, { r: 4, alpha: 16, dropout: 0.1, targetModules: ["q_proj", "v_proj"], rng: new Rng(1) })
      expect(adapter.modules).toEqual(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"])
      const a = adapter.weights["model.layers.0.self_attn.v_proj.lora_A.weight"]
      const b = adapter.weights["model.layers.0.self_attn.v_proj.lora_B.weight"]
      expect(a.shape).toEqual([4, 32])
      expect(b.shape).toEqual([16, 4]) // 2 kv heads · 8
      const av = await a.toArray()
      const bound = 1 / Math.sqrt(32)
      expect(av.every((x) => Math.abs(x) <= bound)).toBe(true)
      expect(Math.max(...av.map(Math.abs))).toBeGreaterThan(bound * 0.8)
      expect((await b.toArray()).every((x) => x === 0)).toBe(true)
      expect(loraWeights(adapter).scaling).toBe(4)
      expect(loraWeights(adapter).rng).toBeUndefined()
      expect(() => loraWeights(adapter, { train: true })).toThrow(/rng/)
      disposeLora(adapter)
    })

    it("targets modules as PEFT does (suffix match, all-linear, regex) and rejects a target matching nothing", () => {
      expect(targetedModules(config, "all-linear")).toHaveLength(14)
      expect(targetedModules(config, ["mlp.down_proj"])).toEqual(["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"])
      expect(targetedModules(config, { regex: String.raw`.*\.1\.self_attn\.(q|k)_proj` })).toEqual(["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"])
      expect(() => targetedModules(config, ["proj"])).toThrow(/match no linear layer/)
    })

    if (backend === "cpu") it("a zero B leaves the logits exactly as the base's", async () => {
      const params = initParams(dev, config, new Rng(2))
      const adapter = createLora(dev, config, { r: 8, alpha: 16, dropout: 0, targetModules: "all-linear", rng: new Rng(3) })
      expect(maxDiff(await logits(dev, params, adapter), await logits(dev, params))).toBe(0)
      disposeLora(adapter)
    })

    it("merge(base, adapter) gives the logits of base + adapter", async () => {
      const params = initParams(dev, config, new Rng(4))
      const adapter = randomAdapter(dev, 5)
      const withAdapter = await logits(dev, params, adapter)
      const base = await logits(dev, params)
      expect(maxDiff(withAdapter, base)).toBeGreaterThan(1e-3)
      const merged = mergeLora(config, params, adapter)
      expect(merged["model.layers.0.self_attn.q_proj.weight"]).not.toBe(params["model.layers.0.self_attn.q_proj.weight"])
      expect(merged["model.layers.0.self_attn.k_proj.weight"]).toBe(params["model.layers.0.self_attn.k_proj.weight"])
      expect(maxDiff(await logits(dev, merged), withAdapter)).toBeLessThan(1e-5)
      disposeMerged(merged, params)
      expect(params["model.layers.0.self_attn.q_proj.weight"].isDisposed).toBe(false)
      disposeLora(adapter)
    })

    if (backend === "cpu") it("effectiveDelta is scaling · B·A", async () => {
      const adapter = randomAdapter(dev, 6)
      const m = "model.layers.1.mlp.down_proj"
      const delta = effectiveDelta(adapter, m)
      expect(delta.shape).toEqual([32, 48])
      const a = await adapter.weights[`${m}.lora_A.weight`].toArray() // [4, 48]
      const b = await adapter.weights[`${m}.lora_B.weight`].toArray() // [32, 4]
      const want = new Float64Array(32 * 48)
      for (let o = 0; o < 32; o++)
        for (let i = 0; i < 48; i++) {
          let s = 0
          for (let k = 0; k < 4; k++) s += b[o * 4 + k] * a[k * 48 + i]
          want[o * 48 + i] = 2 * s // alpha 8 / r 4
        }
      expect(maxDiff(await delta.toArray(), want)).toBeLessThan(1e-6)
      expect(() => effectiveDelta(adapter, "model.layers.0.self_attn.k_proj")).toThrow(/does not adapt/)
      delta.dispose()
      disposeLora(adapter)
    })
  })
}

describe("LoRA training (cpu)", () => {
  it("gradients reach only the adapter; a training step leaves the base untouched", async () => {
    const dev = await Device.create("cpu")
    const params = initParams(dev, config, new Rng(7))
    const adapter = createLora(dev, config, { r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj"], rng: new Rng(8) })
    // valueAndGrad over the adapter only: one gradient per adapter tensor; B gets a gradient, A none yet (B = 0)
    const input = dev.tensor(ids.flat(), [1, 8], "int32")
    const target = dev.tensor([5, 9, 13, 7, 22, 31, 8, 3], [1, 8], "int32")
    const [loss, grads] = valueAndGrad((w: Params) =>
      ops.softmaxCrossEntropy(forward(config, params, input, { lora: loraWeights(adapter, { train: false }, w) }).logits, target),
    )(adapter.weights)
    expect(Object.keys(grads).sort()).toEqual(Object.keys(adapter.weights).sort())
    const gB = await grads["model.layers.0.self_attn.q_proj.lora_B.weight"].toArray()
    const gA = await grads["model.layers.0.self_attn.q_proj.lora_A.weight"].toArray()
    expect(Math.max(...gB.map(Math.abs))).toBeGreaterThan(0)
    expect(gA.every((x) => x === 0)).toBe(true)
    for (const g of Object.values(grads) as Tensor[]) g.dispose()
    loss.dispose()

    const before = Object.fromEntries(await Promise.all(Object.entries(params).map(async ([n, t]) => [n, await t.toArray()] as const)))
    const bBefore = await adapter.weights["model.layers.1.self_attn.v_proj.lora_B.weight"].toArray()
    await trainSft(config, params, [{ promptIds: [1, 5, 9], responseIds: [13, 7, 22] }], {
      mode: { kind: "lora", adapter },
      batchSize: 1,
      lr: 1e-2,
      epochs: 2,
      schedule: "constant",
    })
    for (const [n, t] of Object.entries(params)) expect(await t.toArray(), n).toEqual(before[n])
    const bAfter = await adapter.weights["model.layers.1.self_attn.v_proj.lora_B.weight"].toArray()
    expect(maxDiff(bAfter, bBefore)).toBeGreaterThan(1e-4)
    dev.destroy()
  })
})

describe("PEFT adapter folders", () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bdvax-peft-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("save → load round-trips names, config and values", async () => {
    const dev = await Device.create("cpu")
    const adapter = randomAdapter(dev, 9)
    const out = join(dir, "a")
    await savePeftAdapter(out, config, adapter, { baseModelNameOrPath: "tiny/llama" })
    const cfg = JSON.parse(await readFile(join(out, ADAPTER_CONFIG_FILE), "utf8"))
    expect(cfg).toMatchObject({
      peft_type: "LORA",
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: ["q_proj", "v_proj", "gate_proj", "down_proj"],
      bias: "none",
      task_type: "CAUSAL_LM",
      base_model_name_or_path: "tiny/llama",
      fan_in_fan_out: false,
      use_rslora: false,
      use_dora: false,
    })
    const file = await readSafetensors(join(out, ADAPTER_WEIGHTS_FILE))
    expect([...file.keys()].sort()).toEqual(adapter.modules.flatMap((m) => [peftTensorName(m, "A"), peftTensorName(m, "B")]).sort())
    expect(file.has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")).toBe(true)
    expect(file.get("base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight")!.shape).toEqual([48, 4])

    const { adapter: back, config: peftConfig } = await loadPeftAdapter(dev, out, config)
    expect(peftConfig.baseModelNameOrPath).toBe("tiny/llama")
    expect(back.config).toMatchObject({ r: 4, alpha: 8, dropout: 0 })
    expect(back.modules).toEqual(adapter.modules)
    for (const [n, t] of Object.entries(adapter.weights)) expect(await back.weights[n].toArray(), n).toEqual(await t.toArray())

    // all-linear is written as the expanded module names, as PEFT does after injecting the adapter
    const all = randomAdapter(dev, 10, "all-linear")
    await savePeftAdapter(join(dir, "all"), config, all)
    const allCfg = JSON.parse(await readFile(join(dir, "all", ADAPTER_CONFIG_FILE), "utf8"))
    expect(allCfg.target_modules).toEqual(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"])
    expect((await loadPeftAdapter(dev, join(dir, "all"), config)).adapter.modules).toHaveLength(14)
    dev.destroy()
  })

  it("rejects unsupported or broken configs with a ConfigError naming the field", async () => {
    const dev = await Device.create("cpu")
    const adapter = randomAdapter(dev, 11)
    const out = join(dir, "b")
    await savePeftAdapter(out, config, adapter)
    const original = JSON.parse(await readFile(join(out, ADAPTER_CONFIG_FILE), "utf8"))
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ use_dora: true }, "use_dora"],
      [{ use_rslora: true }, "use_rslora"],
      [{ bias: "all" }, "bias"],
      [{ peft_type: "IA3" }, "peft_type"],
      [{ r: 0 }, "r"],
      [{ lora_dropout: 1.5 }, "lora_dropout"],
      [{ target_modules: [] }, "target_modules"],
      [{ target_modules: ["nonexistent"] }, "target_modules"],
      [{ rank_pattern: { q_proj: 8 } }, "rank_pattern"],
      [{ modules_to_save: ["lm_head"] }, "modules_to_save"],
      [{ init_lora_weights: "pissa" }, "init_lora_weights"],
      [{ alora_invocation_tokens: [5, 6] }, "alora_invocation_tokens"],
    ]
    for (const [patch, field] of cases) {
      await writeFile(join(out, ADAPTER_CONFIG_FILE), JSON.stringify({ ...original, ...patch }))
      const err = await loadPeftAdapter(dev, out, config).then(
        () => null,
        (e: unknown) => e,
      )
      expect(err, field).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).field).toBe(field)
      expect((err as ConfigError).message).toContain(ADAPTER_CONFIG_FILE)
    }
    // r in the config disagreeing with the tensors: a CheckpointError naming the tensor
    await writeFile(join(out, ADAPTER_CONFIG_FILE), JSON.stringify({ ...original, r: 8 }))
    const err = await loadPeftAdapter(dev, out, config).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(CheckpointError)
    expect((err as CheckpointError).tensor).toMatch(/lora_A\.weight$/)
    // targets narrower than the file: an unexpected tensor
    await writeFile(join(out, ADAPTER_CONFIG_FILE), JSON.stringify({ ...original, target_modules: ["q_proj"] }))
    expect(await loadPeftAdapter(dev, out, config).catch((e: unknown) => e)).toBeInstanceOf(CheckpointError)
    dev.destroy()
  })

  it("loraFromWeights checks shapes", async () => {
    const dev = await Device.create("cpu")
    const w = { "model.layers.0.self_attn.q_proj.lora_A.weight": dev.zeros([4, 32]), "model.layers.0.self_attn.q_proj.lora_B.weight": dev.zeros([32, 3]) }
    expect(() => loraFromWeights(config, { r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj"] }, w)).toThrow(/lora_B/)
    dev.destroy()
  })
})

// ---- a real PEFT adapter (fixtures from tests/parity/make_llm_fixtures.py) ------------------------------------

const fixtures = join(import.meta.dirname, "fixtures", "parity")

for (const model of ["llama-gqa-untied", "mistral-window"]) {
  const dir = join(fixtures, model)
  describe.skipIf(!existsSync(join(dir, "adapter", ADAPTER_CONFIG_FILE)))(`PEFT adapter saved by peft (${model})`, () => {
    it("loads, and gives peft's logits, merged logits and LoRA gradients; saving writes peft's tensor names", async () => {
      const expected = JSON.parse(await readFile(join(dir, "expected.json"), "utf8"))
      const c = parseModelConfig(JSON.parse(await readFile(join(dir, "config.json"), "utf8")), "config.json")
      const arrays = await readSafetensors(join(dir, expected.arrays))
      const dev = await Device.create("cpu")
      const params: Params = {}
      for (const [name, t] of await readSafetensors(join(dir, "model.safetensors"))) params[name] = dev.tensor(t.data, t.shape)
      const { adapter, config: peftConfig } = await loadPeftAdapter(dev, join(dir, "adapter"), c)
      expect(peftConfig.baseModelNameOrPath).toBe("..")
      expect(loraWeights(adapter).scaling).toBe(expected.lora.scaling)
      expect(adapter.modules).toHaveLength(4 * c.numHiddenLayers)

      const rows: number[][] = expected.inputs.input_ids
      const input = dev.tensor(rows.flat(), [rows.length, rows[0].length], "int32")
      const run = async (p: Params, lora?: LoraAdapter) => {
        const { logits } = forward(c, p, input, { lora: lora ? loraWeights(lora) : undefined })
        const out = await logits.toArray()
        logits.dispose()
        return out
      }
      expect(maxDiff(await run(params, adapter), arrays.get(expected.lora.logits.f64)!.data)).toBeLessThan(1e-4)
      const merged = mergeLora(c, params, adapter)
      expect(maxDiff(await run(merged), arrays.get(expected.lora.merged_logits.f32)!.data)).toBeLessThan(1e-4)
      disposeMerged(merged, params)

      // loss and gradients w.r.t. the adapter, base frozen (peft: requires_grad only on lora_A / lora_B)
      const promptLen: number = expected.inputs.prompt_masked_positions
      const batch = collateSft(
        rows.map((r) => ({ promptIds: r.slice(0, promptLen), responseIds: r.slice(promptLen) })),
        { padTokenId: 0 },
      )
      const [loss, grads] = valueAndGrad((w: Params) => sftLossTensor(c, params, batch, { lora: loraWeights(adapter, { train: false }, w) }))(adapter.weights)
      expect(Math.abs((await loss.item()) - expected.lora.loss)).toBeLessThan(1e-5)
      for (const [key, arrayName] of Object.entries(expected.lora.grads as Record<string, string>)) {
        const internal = key.replace(/^base_model\.model\./, "")
        const want = arrays.get(arrayName)!.data
        const scale = Math.max(...Array.from(want, Math.abs))
        expect(maxDiff(await grads[internal].toArray(), want) / scale, key).toBeLessThan(1e-4)
      }
      loss.dispose()
      for (const g of Object.values(grads) as Tensor[]) g.dispose()

      const out = await mkdtemp(join(tmpdir(), "bdvax-peft-fixture-"))
      try {
        await savePeftAdapter(out, c, adapter, { baseModelNameOrPath: ".." })
        const ours = await readSafetensors(join(out, ADAPTER_WEIGHTS_FILE))
        const theirs = await readSafetensors(join(dir, "adapter", ADAPTER_WEIGHTS_FILE))
        expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort())
        for (const [k, t] of theirs) expect(ours.get(k)!.data).toEqual(t.data)
        const cfg = JSON.parse(await readFile(join(out, ADAPTER_CONFIG_FILE), "utf8"))
        const peftCfg = JSON.parse(await readFile(join(dir, "adapter", ADAPTER_CONFIG_FILE), "utf8"))
        for (const f of ["peft_type", "r", "lora_alpha", "lora_dropout", "bias", "task_type", "fan_in_fan_out", "use_rslora", "use_dora"])
          expect(cfg[f], f).toEqual(peftCfg[f])
        expect([...cfg.target_modules].sort()).toEqual([...peftCfg.target_modules].sort())
      } finally {
        await rm(out, { recursive: true, force: true })
      }
      input.dispose()
      dev.destroy()
    })
  })
}
