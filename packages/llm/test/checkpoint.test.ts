import { mkdtempSync, readFileSync, writeFileSync, cpSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Device } from "@bdvax/core-tensor"
import { describe, expect, it } from "vitest"
import { loadModelFolder, saveModelFolder } from "../src/checkpoint.js"
import { writeSafetensors } from "../src/safetensors.js"

const FIXTURE = join(import.meta.dirname, "fixtures/parity/llama-gqa-untied")
const TOKENIZER = join(import.meta.dirname, "fixtures/tokenizer/bpe")

describe("model folders", () => {
  it("save → load keeps every tensor, the config, generation config and tokenizer files", async () => {
    const dev = await Device.create("cpu")
    const m = await loadModelFolder(dev, FIXTURE)
    const out = mkdtempSync(join(tmpdir(), "bdvax-ckpt-"))
    await saveModelFolder(out, m.config, m.params, { generationConfig: m.generationConfig, tokenizerFrom: TOKENIZER })
    const again = await loadModelFolder(dev, out)
    expect(again.config).toEqual(m.config)
    expect(again.generationConfig).toEqual(m.generationConfig)
    for (const [name, t] of Object.entries(m.params)) expect(await again.params[name].toArray()).toEqual(await t.toArray())
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) expect(readFileSync(join(out, f), "utf8")).toBe(readFileSync(join(TOKENIZER, f), "utf8"))
    dev.destroy()
  })

  it("a checkpoint that disagrees with config.json names the tensor", async () => {
    const dev = await Device.create("cpu")
    const dir = mkdtempSync(join(tmpdir(), "bdvax-bad-"))
    cpSync(join(FIXTURE, "config.json"), join(dir, "config.json"))
    await writeSafetensors(join(dir, "model.safetensors"), { "model.embed_tokens.weight": { shape: [128, 32], data: new Float32Array(128 * 32) } })
    await expect(loadModelFolder(dev, dir)).rejects.toMatchObject({ _tag: "CheckpointError", tensor: "model.embed_tokens.weight", message: expect.stringContaining("[128, 64]") })
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...JSON.parse(readFileSync(join(FIXTURE, "config.json"), "utf8")), num_attention_heads: 3 }))
    await expect(loadModelFolder(dev, dir)).rejects.toMatchObject({ _tag: "ConfigError" })
    await expect(loadModelFolder(dev, join(dir, "nope"))).rejects.toMatchObject({ _tag: "MissingFileError" })
    dev.destroy()
  })
})
