import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AdamW, Device, ops, Rng, valueAndGrad } from "@bdvax/core-tensor"
import { describe, expect, it } from "vitest"
import { loadModelFolder, saveModelFolder } from "../src/checkpoint.js"
import { createLora, loraWeights } from "../src/lora.js"
import { forward, type Params } from "../src/model.js"
import { savePeftAdapter } from "../src/peft.js"
import { runPython } from "./python.js"

/**
 * Live round trip, bdvax → transformers/peft: bdvax changes a model (one AdamW step, so the weights are no
 * longer the fixture's), saves it as a Hugging Face folder, and a fresh Python process loads it with
 * transformers and must reproduce bdvax's logits (max abs error ≤ 1e-4). The same for a LoRA adapter trained a
 * step by bdvax and saved in PEFT format, loaded with peft on top of the base.
 */
const FIXTURE = join(import.meta.dirname, "../test/fixtures/parity")
const IDS = [[1, 17, 33, 49, 65, 81, 97, 113, 2, 5], [3, 9, 27, 81, 115, 101, 4, 12, 36, 108]]

function writeLogits(path: string, data: Float32Array, shape: number[]): void {
  const nest = (offset: number, dims: number[]): unknown =>
    dims.length === 1
      ? Array.from(data.subarray(offset, offset + dims[0]))
      : Array.from({ length: dims[0] }, (_, i) => nest(offset + i * dims.slice(1).reduce((a, b) => a * b, 1), dims.slice(1)))
  writeFileSync(path, JSON.stringify({ logits: nest(0, shape) }))
}

function check(args: string[]): void {
  const r = runPython(["tests/parity/live_roundtrip.py", ...args])
  expect(r.status, r.output).toBe(0)
  console.log(r.output.trim().split("\n").slice(-2).join("\n"))
}

describe("bdvax checkpoints load in transformers / peft with identical logits", () => {
  for (const model of ["llama-gqa-untied", "llama-tied-llama3rope", "mistral-window"]) {
    it(`${model}: full checkpoint after a training step`, async () => {
      const dev = await Device.create("cpu")
      const { config, params } = await loadModelFolder(dev, join(FIXTURE, model))
      const ids = dev.tensor(IDS.flat(), [2, 10], "int32")
      const opt = new AdamW({ lr: 1e-2 })
      const [loss, grads] = valueAndGrad((p: Params) => ops.mean(ops.square(forward(config, p, ids).logits)))(params)
      opt.step(params, grads)
      loss.dispose()
      const out = mkdtempSync(join(tmpdir(), `bdvax-rt-${model}-`))
      await saveModelFolder(out, config, params)
      const { logits } = forward(config, params, ids)
      writeLogits(join(out, "bdvax-logits.json"), (await logits.data()) as Float32Array, [...logits.shape])
      check(["--model", out, "--input-ids", JSON.stringify(IDS), "--expect-logits", join(out, "bdvax-logits.json"), "--atol", "1e-4"])
      // and bdvax reads back exactly what it wrote
      const again = await loadModelFolder(dev, out)
      for (const [name, t] of Object.entries(params)) expect(Array.from(await again.params[name].data())).toEqual(Array.from(await t.data()))
      dev.destroy()
    })
  }

  for (const model of ["llama-gqa-untied", "mistral-window"]) {
    it(`${model}: LoRA adapter trained by bdvax, saved in PEFT format`, async () => {
      const dev = await Device.create("cpu")
      const { config, params } = await loadModelFolder(dev, join(FIXTURE, model))
      const adapter = createLora(dev, config, { r: 4, alpha: 16, dropout: 0, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], rng: new Rng(3) })
      const ids = dev.tensor(IDS.flat(), [2, 10], "int32")
      const opt = new AdamW({ lr: 5e-2 })
      for (let i = 0; i < 2; i++) {
        const [loss, grads] = valueAndGrad((w: Params) => ops.mean(ops.square(forward(config, params, ids, { lora: loraWeights(adapter, { train: false }, w) }).logits)))(adapter.weights)
        opt.step(adapter.weights, grads)
        loss.dispose()
      }
      const out = mkdtempSync(join(tmpdir(), `bdvax-rt-lora-${model}-`))
      await savePeftAdapter(join(out, "adapter"), config, adapter)
      const { logits } = forward(config, params, ids, { lora: loraWeights(adapter) })
      writeLogits(join(out, "bdvax-logits.json"), (await logits.data()) as Float32Array, [...logits.shape])
      check(["--model", join(FIXTURE, model), "--adapter", join(out, "adapter"), "--input-ids", JSON.stringify(IDS), "--expect-logits", join(out, "bdvax-logits.json"), "--atol", "1e-4"])
      dev.destroy()
    })
  }
})
