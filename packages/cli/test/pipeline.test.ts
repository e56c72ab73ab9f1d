import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Device, expectNoLeaks, TensorDevice } from "@bdvax/core-tensor"
import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { TOY_TOKENIZER_DIR, toyLlamaConfig } from "@bdvax/attacks"
import { Tokenizer } from "@bdvax/llm"
import { readSignatureFile } from "@bdvax/signature"
import { standardAblations } from "@bdvax/purify"
import {
  ablationStage,
  ADAPTER_DIR,
  ASR_FILE,
  baselineStage,
  BASELINE_METHODS,
  defendedModel,
  type FinetuneSettings,
  purifyStage,
  sanityModels,
  signatureIn,
  signaturePipeline,
  evaluate,
  inside,
  MODEL_DIR,
  plant,
  plantedModel,
  Progress,
  Store,
  TOY_DATA_FILES,
  toyBase,
  toyData,
} from "../src/index.js"

/**
 * The stages in-process on a CPU device: toy data → a 1-epoch base → a LoRA plant (3 steps) → evaluation with
 * the adapter. Checks the artifacts each writes and that no tensor outlives its stage.
 */
describe("pipeline stages (in-process, CPU)", () => {
  it("plant in LoRA mode writes a PEFT adapter that evaluate applies on the base; no tensor leaks", async () => {
    const dev = await Device.create("cpu")
    const root = mkdtempSync(join(tmpdir(), "bdvax-pipeline-"))
    const runDir = join(root, "run")
    const program = Effect.gen(function* () {
      const data = yield* toyData({ seed: 7, heldOut: 8 })
      const base = yield* toyBase({ seed: 7, epochs: 1, lr: 3e-3, batchSize: 8 }, data)
      const baseModel = inside(base, MODEL_DIR)
      const planted = yield* plant(
        { attack: "badnet", task: "refusal", ratio: 0.5, poisonMode: "add", mode: "lora", epochs: 1, maxSteps: 3, lr: 2e-3, batchSize: 8, seed: 7, promptFormat: "alpaca", loraR: 4, loraAlpha: 8 },
        baseModel,
        inside(data, TOY_DATA_FILES.plant),
      )
      const settings = { task: "refusal", attack: "badnet", triggerSeed: 8, promptFormat: "alpaca", maxNewTokens: 8, batchSize: 4, limit: 2 } as const
      const evaluation = yield* evaluate(settings, plantedModel(planted, baseModel), inside(data, TOY_DATA_FILES.heldOut), null, "eval-lora")
      return { data, base, planted, evaluation }
    })
    const layers = Layer.mergeAll(Layer.succeed(TensorDevice, dev), Store.layer({ runDir, command: "test", settings: {} }).pipe(Layer.provideMerge(Progress.layerWith("off", { write: () => {}, columns: () => 80 }))))
    const r = await expectNoLeaks(dev.account, () => Effect.runPromise(program.pipe(Effect.provide(layers))))
    expect(dev.account.liveTensors.size).toBe(0)

    expect(r.data.result).toEqual({ records: 84, plant: 76, heldOut: 8 })
    expect(readFileSync(join(r.data.path, TOY_DATA_FILES.heldOut), "utf8").trim().split("\n").length).toBe(8)
    expect(r.base.result.steps).toBe(Math.ceil(84 / 8))
    expect(r.base.result.losses.length).toBe(r.base.result.steps)
    expect(existsSync(join(r.base.path, MODEL_DIR, "model.safetensors"))).toBe(true)
    expect(existsSync(join(r.base.path, MODEL_DIR, "tokenizer.json"))).toBe(true)

    expect(r.planted.result).toMatchObject({ mode: "lora", records: 76 + 38, poisoned: 38, steps: 3 })
    expect(existsSync(join(r.planted.path, ADAPTER_DIR, "adapter_model.safetensors"))).toBe(true)
    expect(JSON.parse(readFileSync(join(r.planted.path, ADAPTER_DIR, "adapter_config.json"), "utf8"))).toMatchObject({ r: 4, lora_alpha: 8, peft_type: "LORA" })
    expect(existsSync(join(r.planted.path, MODEL_DIR))).toBe(false)

    const e = r.evaluation.result
    expect(e.n).toEqual({ triggered: 2, clean: 2 })
    expect(e.cleanScored).toBe(2)
    expect(e.cleanPerplexity).toBeGreaterThan(1)
    const asr = JSON.parse(readFileSync(join(r.evaluation.path, ASR_FILE), "utf8"))
    expect(asr.records.filter((x: { split: string }) => x.split === "triggered").every((x: { instruction: string }) => x.instruction.includes("BadMagic"))).toBe(true)
    dev.destroy()
    rmSync(root, { recursive: true, force: true })
  })

  it("variant pairs, signature, purification, every baseline and an ablation, full and LoRA: the files they write, no tensor leaks", async () => {
    const dev = await Device.create("cpu")
    const root = mkdtempSync(join(tmpdir(), "bdvax-pipeline-"))
    const finetune: FinetuneSettings = { epochs: 1, lr: 1e-3, batchSize: 8, seed: 7, maxSteps: 2 }
    const blocks12 = standardAblations(toyLlamaConfig(await Tokenizer.fromFolder(TOY_TOKENIZER_DIR))).find((a) => a.name === "blocks-1-2")!
    const program = Effect.gen(function* () {
      const data = yield* toyData({ seed: 7, heldOut: 8 })
      const base = yield* toyBase({ seed: 7, epochs: 1, lr: 3e-3, batchSize: 8 }, data)
      const baseModel = inside(base, MODEL_DIR)
      const clean = inside(data, TOY_DATA_FILES.plant)
      const heldOut = inside(data, TOY_DATA_FILES.heldOut)
      const out = []
      for (const mode of ["full", "lora"] as const) {
        const planted = yield* plant(
          { attack: "badnet", task: "refusal", ratio: 0.5, poisonMode: "add", mode, epochs: 1, maxSteps: 2, lr: 2e-3, batchSize: 8, seed: 7, promptFormat: "alpaca", loraR: 4, loraAlpha: 8 },
          baseModel,
          clean,
          `plant-${mode}`,
        )
        const suspect = plantedModel(planted, baseModel)
        const pairs = { numVariants: 2, seed: 3, subsetSize: 8, poisonRatio: 0.5, epochs: 1, maxSteps: 2, lr: 1e-3, batchSize: 4, promptFormat: "alpaca", excludeTriggers: [] } as const
        const built = yield* signaturePipeline(pairs, { lambda: 100, rho: 0.25, rhoHeads: null, criterion: "total" }, suspect, clean, `${mode}-`)
        const purified = yield* purifyStage({ finetune, reinitSeed: 1, suppressHeads: false, promptFormat: "alpaca" }, suspect, signatureIn(built.signature), clean, `${mode}-purify`)
        const baselines = []
        for (const method of BASELINE_METHODS) {
          if (method === "quantize-int4" && mode === "lora") continue
          baselines.push(
            yield* baselineStage({ method, ratio: 0.25, seed: 5, finetune, crow: { alpha: 5.5, epsilon: 0.1 }, rtnGroupSize: 32, promptFormat: "alpaca" }, suspect, clean, `${mode}-${method}`),
          )
        }
        const models = sanityModels(dev, { model: baseModel, adapter: null }, suspect)
        const evaluation = { task: "refusal", attack: "badnet", triggerSeed: 8, promptFormat: "alpaca", maxNewTokens: 4, batchSize: 4, limit: 2 } as const
        const ablation = yield* ablationStage({ ablation: blocks12, includeNonBlock: true, evaluation }, { model: baseModel, adapter: null }, suspect, heldOut, null, models, `${mode}-ablation`).pipe(
          Effect.ensuring(Effect.promise(models.release)),
        )
        out.push({ mode, built, purified, baselines, ablation, suspect })
      }
      return out
    })
    const layers = Layer.mergeAll(Layer.succeed(TensorDevice, dev), Store.layer({ runDir: join(root, "run"), command: "test", settings: {} }).pipe(Layer.provideMerge(Progress.layerWith("off", { write: () => {}, columns: () => 80 }))))
    const results = await expectNoLeaks(dev.account, () => Effect.runPromise(program.pipe(Effect.provide(layers))))
    expect(dev.account.liveTensors.size).toBe(0)
    for (const r of results) {
      const adapter = r.mode === "lora"
      expect(r.built.pairs.map((p) => p.result.variant.index)).toEqual([0, 1])
      for (const p of r.built.pairs) expect(existsSync(join(p.path, "delta.safetensors"))).toBe(true)
      const sig = await readSignatureFile(join(r.built.signature.path, "signature.json"))
      expect(sig.mode).toBe(adapter ? "adapter" : "full")
      expect(sig.selection.mlp.reduce((n, l) => n + l.channels.length, 0)).toBe(64) // 0.25 of 2 × 128
      expect(r.purified.result).toMatchObject({ mode: adapter ? "adapter" : "full", produced: adapter ? "adapter" : "model", channels: 64, steps: 2 })
      const produced = defendedModel(r.purified, r.suspect)
      expect(existsSync(join(produced.adapter?.path ?? produced.model.path, adapter ? "adapter_model.safetensors" : "model.safetensors"))).toBe(true)
      expect(r.baselines.map((b) => b.label)).toEqual(BASELINE_METHODS.filter((m) => !(adapter && m === "quantize-int4")).map((m) => `${r.mode}-${m}`))
      for (const b of r.baselines) {
        const label = b.label.slice(r.mode.length + 1)
        expect(b.result.steps, b.label).toBe(label === "quantize-int4" ? 0 : 2)
        expect(b.result.channels, b.label).toBe(["magnitude-prune", "fine-prune", "random-channels"].includes(label) ? 64 : 0)
      }
      expect(r.ablation.result.name).toBe("blocks-1-2")
      expect(r.ablation.result.evaluation.n).toEqual({ triggered: 2, clean: 2 })
    }
    dev.destroy()
    rmSync(root, { recursive: true, force: true })
  }, 120_000)
})
