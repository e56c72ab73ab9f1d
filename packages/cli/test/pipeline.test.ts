import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Device, expectNoLeaks, TensorDevice } from "@bdvax/core-tensor"
import { Effect, Layer } from "effect"
import { describe, expect, it } from "vitest"
import {
  ADAPTER_DIR,
  ASR_FILE,
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
})
