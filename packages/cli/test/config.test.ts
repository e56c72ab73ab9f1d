import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Option, Schema } from "effect"
import { TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig, writeInstructions } from "@bdvax/attacks"
import { Device, Rng } from "@bdvax/core-tensor"
import { initParams, saveModelFolder, Tokenizer } from "@bdvax/llm"
import { afterAll, describe, expect, it } from "vitest"
import { type DemoFlags, demoSettingsOf } from "../src/commands/demo.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT, decodeOptions, decodeValue, Experiment, experimentCells, formatPath, PositiveInt } from "../src/index.js"
import { runBdvax } from "./cli-process.js"

const GOOD = {
  name: "toy-grid",
  models: [{ name: "toy", toy: true }, { name: "smollm2", path: "models/SmolLM2-135M-Instruct" }],
  attacks: ["badnet", "vpi"],
  tasks: ["refusal"],
  defenses: [{ kind: "none" }, { kind: "immunize", rho: 0.03 }, { kind: "finetune", epochs: 5 }],
}

const failure = async (value: unknown) => {
  const r = await Effect.runPromise(Effect.result(decodeValue(Experiment, value, "exp.json")))
  if (r._tag === "Success") throw new Error("expected a decoding failure")
  return r.failure
}

describe("experiment file schema", () => {
  it("decodes a valid grid, fills the defaults and enumerates every cell", async () => {
    const e = await Effect.runPromise(decodeValue(Experiment, GOOD, "exp.json"))
    expect(e.seed).toBe(0)
    // unset plant fields are resolved per model (the toy's demo plant, or 3 epochs / ratio 0.1 for a folder)
    expect(e.plant).toEqual({ mode: "full", batchSize: 8 })
    expect(e.eval).toEqual({ maxNewTokens: 64, batchSize: 16 })
    const cells = experimentCells(e)
    expect(cells.length).toBe(2 * 2 * 1 * 3)
    expect(cells[0]).toMatchObject({ attack: "badnet", task: "refusal", defense: { kind: "none" } })
    expect(cells[11]).toMatchObject({ model: { name: "smollm2" }, attack: "vpi", defense: { kind: "finetune" } })
  })

  it("names the field path and the file in every error", async () => {
    const cases: Array<[unknown, string, string]> = [
      [{ ...GOOD, defenses: [...GOOD.defenses, { kind: "immunize", rho: 3 }] }, "defenses[3].rho", "expected a number between 0 and 1, got 3"],
      [{ ...GOOD, seed: "x" }, "seed", 'got "x"'],
      [{ ...GOOD, models: undefined }, "models", "is required"],
      [{ ...GOOD, defenses: [{ kind: "none" }, { kind: "prune-everything" }] }, "defenses[1]", 'whose "kind" is one of'],
      [{ ...GOOD, attacks: ["badnet", "trojan"] }, "attacks[1]", 'expected an attack: one of "badnet"'],
      [{ ...GOOD, models: [] }, "models", "expected a non-empty array of models"],
      [{ ...GOOD, plant: { epochs: 0 } }, "plant.epochs", "expected a positive integer, got 0"],
      [{ ...GOOD, colour: "blue" }, "colour", "is not a known field"],
    ]
    for (const [value, field, message] of cases) {
      const e = await failure(value)
      expect(e._tag).toBe("ConfigDecodeError")
      expect(e.field).toBe(field)
      expect(e.message).toContain(`exp.json: ${field}: `)
      expect(e.message).toContain(message)
    }
  })

  it("writes paths the way JavaScript would", () => {
    expect(formatPath(["defenses", 2, "rho"])).toBe("defenses[2].rho")
    expect(formatPath([])).toBe("(root)")
    expect(formatPath(["a b", 0])).toBe('["a b"][0]')
  })

  it("reports command options by flag name", async () => {
    const r = await Effect.runPromise(Effect.result(decodeOptions("demo", Schema.Struct({ plantEpochs: PositiveInt }), { plantEpochs: -2 })))
    if (r._tag === "Success") throw new Error("expected a failure")
    expect(r.failure.option).toBe("--plant-epochs")
    expect(r.failure.message).toBe("bdvax demo: --plant-epochs: expected a positive integer, got -2")
  })
})

describe("bdvax demo settings", () => {
  /** The flags as parsed when none is given on the command line. */
  const { signatureSeed: _, ...plain } = DEMO_DEFAULTS
  const none = Option.none()
  const unset: DemoFlags = {
    ...plain,
    plantEpochs: none, plantLr: none, variantLr: none, rho: none, purifyLr: none,
    signatureSeed: none, evalLimit: none, variantMaxSteps: none, purifyMaxSteps: none,
    baselines: DEMO_DEFAULTS.baselines.join(","),
  }
  const settingsOf = (flags: Partial<DemoFlags>) => Effect.runPromise(demoSettingsOf({ ...unset, ...flags }))

  it("are DEMO_DEFAULTS without flags, the signature seed --seed + 7", async () => {
    expect(await settingsOf({})).toEqual(DEMO_DEFAULTS)
    expect(DEMO_DEFAULTS.signatureSeed).toBe(DEMO_DEFAULTS.seed + 7)
  })

  it("derive the signature seed from --seed unless --signature-seed is given (never a picked draw)", async () => {
    expect((await settingsOf({ seed: 1 })).signatureSeed).toBe(8)
    expect((await settingsOf({ seed: 2 })).signatureSeed).toBe(9)
    expect((await settingsOf({ seed: 1, signatureSeed: Option.some(1242) })).signatureSeed).toBe(1242)
  })

  it("take the LoRA plant, rates and ρ with --mode lora unless the flags say otherwise", async () => {
    const lora = await settingsOf({ mode: "lora" })
    expect(lora).toMatchObject({ ...DEMO_LORA_PLANT, mode: "lora" })
    expect((await settingsOf({ mode: "lora", rho: Option.some(0.2) })).rho).toBe(0.2)
  })

  it("fail naming the flag", async () => {
    const r = await Effect.runPromise(Effect.result(demoSettingsOf({ ...unset, signatureSeed: Option.some(-3) })))
    if (r._tag === "Success") throw new Error("expected a failure")
    expect(r.failure.message).toBe("bdvax demo: --signature-seed: expected an integer seed in [0, 2^53), got -3")
  })
})

describe("bdvax run <experiment file>", () => {
  const dir = mkdtempSync(join(tmpdir(), "bdvax-exp-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, value: unknown) => {
    const path = join(dir, name)
    writeFileSync(path, typeof value === "string" ? value : JSON.stringify(value, null, 2))
    return path
  }

  it("rejects bad files with a non-zero exit code and the file and field on stderr", async () => {
    const bad: Array<[string, unknown, string]> = [
      ["wrong-type.json", { ...GOOD, tasks: "refusal" }, "tasks: expected a non-empty array of tasks, got \"refusal\""],
      ["missing-field.json", { ...GOOD, defenses: undefined }, "defenses: is required"],
      ["unknown-defense.json", { ...GOOD, defenses: [{ kind: "none" }, { kind: "immunize" }, { kind: "magic" }] }, "defenses[2]: expected a defense"],
      ["not-json.json", "{ name: toy", "not valid JSON"],
    ]
    const runs = await Promise.all(bad.map(([name, value]) => runBdvax(["run", file(name, value)])))
    runs.forEach((r, i) => {
      const [name, , expected] = bad[i]
      expect(r.code, r.stderr).not.toBe(0)
      expect(r.stderr).toContain(join(dir, name))
      expect(r.stderr).toContain(expected)
    })
  })

  it("runs a grid on a folder model into one report: every cell, every defense", async () => {
    // a tiny random Llama saved as a Hugging Face folder (the toy's shape and tokenizer) and a few toy records
    const dev = await Device.create("cpu")
    const tokenizer = await Tokenizer.fromFolder(TOY_TOKENIZER_DIR)
    const config = toyLlamaConfig(tokenizer)
    const params = initParams(dev, config, new Rng(3))
    await saveModelFolder(join(dir, "tiny"), config, params, { tokenizerFrom: TOY_TOKENIZER_DIR })
    for (const t of Object.values(params)) t.dispose()
    dev.destroy()
    const records = toyInstructionRecords()
    await writeInstructions(join(dir, "clean.jsonl"), records.slice(0, 12))
    await writeInstructions(join(dir, "test.jsonl"), records.slice(80, 84))
    const experiment = {
      name: "tiny-grid",
      models: [{ name: "tiny", path: join(dir, "tiny") }],
      attacks: ["badnet"],
      tasks: ["refusal"],
      defenses: [{ kind: "none" }, { kind: "immunize", variants: 2, epochs: 1, lr: 1e-3 }, { kind: "finetune", epochs: 1 }, { kind: "magnitude-prune", ratio: 0.1, epochs: 1 }, { kind: "quantize-int4" }],
      plant: { epochs: 1, lr: 1e-3 },
      data: { clean: join(dir, "clean.jsonl"), test: join(dir, "test.jsonl") },
      eval: { maxNewTokens: 8, batchSize: 4 },
    }
    const runDir = join(dir, "grid-run")
    const r = await runBdvax(["run", file("grid.json", experiment), "--run-dir", runDir, "--json"])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain("5 cell(s)")
    const out = JSON.parse(r.stdout) as { cells: Array<{ defense: string; wallSeconds: number | null; result: { n: { triggered: number; clean: number } } }> }
    const names = ["clean base", "none", 'immunize {"variants":2,"epochs":1,"lr":0.001}', 'finetune {"epochs":1}', 'magnitude-prune {"ratio":0.1,"epochs":1}', "quantize-int4"]
    expect(out.cells.map((c) => c.defense)).toEqual(names)
    for (const c of out.cells) expect(c.result.n).toEqual({ triggered: 4, clean: 4 })
    expect(out.cells.filter((c) => c.wallSeconds !== null).length).toBe(4)
    const md = readFileSync(join(runDir, "report.md"), "utf8")
    for (const n of names) expect(md).toContain(`| tiny/badnet/refusal/${n.replace(/\|/g, "\\|")}`)
    expect(readFileSync(join(runDir, "report.svg"), "utf8")).toContain("tiny/badnet/refusal/none")
    expect(r.stderr).toMatch(/▶ tiny\/badnet\/refusal\/immunize_variants_2_epochs_1_lr_0.001_\/variant-pair-1: running/)

    // a folder model without data is refused with the file and the field
    const noData = await runBdvax(["run", file("no-data.json", { ...experiment, data: {} }), "--run-dir", join(dir, "no-data")])
    expect(noData.code).toBe(1)
    expect(noData.stderr).toContain(`${join(dir, "no-data.json")}: data.clean: required for a folder model`)
  })
})
