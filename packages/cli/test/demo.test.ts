import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { readSignatureFile } from "@bdvax/signature"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { DEMO_DEFAULTS, decodeValue, ReportData } from "../src/index.js"
import { runBdvax } from "./cli-process.js"

/**
 * The whole demo at small settings (a 3-epoch base, 2 variant pairs of one epoch, one-epoch finetunes, 4 evaluation
 * prompts): every stage runs, every condition reaches the printed table, report.md, report-data.json and the SVG.
 * Then `bdvax signature`, `purify` and `sanity` on the demo's files as a user would pass them (HF folders and
 * JSONL records), end to end. Numbers at these settings are not meaningful; the checks are on structure, on what
 * each stage wrote, and on the defender never seeing the attack's trigger.
 */
const DEMO_SMALL = [
  "demo", "--base-epochs", "3", "--plant-epochs", "2", "--variants", "2", "--variant-epochs", "1", "--variant-subset", "16",
  "--purify-epochs", "1", "--random-draws", "2", "--eval-limit", "4", "--max-new-tokens", "16",
]

const CONDITIONS = [
  "clean base",
  "backdoored",
  "bdvax: signature reinit + finetune",
  "signature reinit, no finetune",
  "signature at λ = 0.01 + finetune",
  "random channels (same ratio) + finetune",
  "finetuning",
  "magnitude pruning + finetune",
  "fine-pruning (Wanda) + finetune",
  "INT4 RTN",
  "CROW",
]

const root = mkdtempSync(join(tmpdir(), "bdvax-demo-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

interface DemoJson {
  conditions: Array<{ name: string; role: string; asr: number | null; falseTrigger: number | null; cleanAccuracy: number | null; wallSeconds: number | null; draws: number }>
  stages: Record<string, { path: string; reused: boolean }>
  signature: { channels: number; perLayer: Array<{ layer: number; channels: number }> }
  report: Record<string, string>
}

describe("bdvax demo (small settings)", () => {
  const runDir = join(root, "demo")
  let demo: DemoJson

  it("runs every stage and reports every condition in the table, report.md, report-data.json and report.svg", async () => {
    const r = await runBdvax([...DEMO_SMALL, "--run-dir", runDir, "--json"], { timeoutMs: 120_000 })
    expect(r.code, r.stderr).toBe(0)
    demo = JSON.parse(r.stdout) as DemoJson
    expect(demo.conditions.map((c) => c.name)).toEqual(CONDITIONS)
    for (const c of demo.conditions) {
      // a rate is null when nothing was scored (a 3-epoch model may answer with nothing: empty outputs are skipped)
      for (const v of [c.asr, c.falseTrigger, c.cleanAccuracy]) if (v !== null) expect(v >= 0 && v <= 1, `${c.name}: ${v}`).toBe(true)
      expect(c.cleanAccuracy, c.name).not.toBeNull()
      // references have no defense time; every defense took some
      if (c.role === "reference" || c.role === "attacked") expect(c.wallSeconds).toBeNull()
      else expect(c.wallSeconds!).toBeGreaterThan(0)
    }
    expect(demo.conditions.find((c) => c.name.startsWith("random channels"))!.draws).toBe(2)
    // the method's time includes its signature: at least the two pairs' time
    const pairSeconds = [0, 1].map((i) => JSON.parse(readFileSync(join(demo.stages[`variant-pair-${i}`].path, "stage.json"), "utf8")).result.wallSeconds as number)
    expect(demo.conditions[2].wallSeconds!).toBeGreaterThanOrEqual(pairSeconds[0] + pairSeconds[1])

    // the printed table (text mode, every stage reused) has a row per condition
    const text = await runBdvax([...DEMO_SMALL, "--run-dir", runDir])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stderr).not.toMatch(/▶/) // nothing recomputed
    for (const name of CONDITIONS) expect(text.stdout).toContain(name)
    expect(text.stdout).toMatch(/condition\s+role\s+ASR\s+false trigger\s+clean exact match\s+wall time/)

    const md = readFileSync(join(runDir, "report.md"), "utf8")
    expect(md).toContain("## Summary")
    expect(md).toContain("| condition | role | ASR | false trigger | clean exact match | wall time | note |")
    for (const name of CONDITIONS) expect(md).toMatch(new RegExp(`^\\| ${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}( \\(mean of 2\\))? \\|`, "m"))
    expect(md).toContain("why λ = 100, not the paper's 0.01")
    const svg = readFileSync(join(runDir, "report.svg"), "utf8")
    expect(svg.startsWith("<?xml")).toBe(true)
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true)
    for (const name of CONDITIONS) expect(svg).toContain(name.replace(/&/g, "&amp;"))
    expect(svg).toContain('stroke-dasharray="6,4"') // the attacked model's ASR as the "before" line
    const data = await Effect.runPromise(decodeValue(ReportData, JSON.parse(readFileSync(join(runDir, "report-data.json"), "utf8")), "report-data.json"))
    expect(data.summary?.map((s) => s.name)).toEqual(CONDITIONS)
    expect(data.report.conditions).toEqual(CONDITIONS)
  })

  it("keeps the defender blind: variant keys are synthetic, the signature names its pairs", async () => {
    for (const i of [0, 1]) expect(existsSync(join(demo.stages[`variant-pair-${i}`].path, "delta.safetensors"))).toBe(true)
    const sig = await readSignatureFile(join(demo.stages.signature.path, "signature.json"))
    expect(sig.settings.numVariants).toBe(2)
    expect(sig.settings.lambda).toBe(100)
    expect(JSON.stringify(sig.settings.variants)).not.toContain("BadMagic")
    const channels = sig.selection.mlp.reduce((n, l) => n + l.channels.length, 0)
    expect(channels).toBe(Math.round(DEMO_DEFAULTS.rho * 2 * 128)) // ρ of 2 layers × 128 MLP channels
    // the variant draw follows --seed by a fixed rule (default --seed 1234 → 1241), and the report says so
    expect(sig.settings.seed).toBe(DEMO_DEFAULTS.seed + 7)
    expect(readFileSync(join(runDir, "report.md"), "utf8")).toContain(`signature seed ${DEMO_DEFAULTS.seed + 7} (the defender's variant draw; --seed + 7, a fixed rule, not a draw picked for its result)`)
    expect(demo.signature.channels).toBe(channels)
  })

  it("signature, purify and sanity run end to end on the demo's files", async () => {
    const plantModel = join(demo.stages.plant.path, "model")
    const baseModel = join(demo.stages["toy-base"].path, "model")
    const records = join(demo.stages["toy-data"].path, "plant.jsonl")
    const heldOut = join(demo.stages["toy-data"].path, "held-out.jsonl")
    const sigFile = join(root, "sig.json")
    const s = await runBdvax([
      "signature", "--model", plantModel, "--records", records, "--variants", "2", "--subset", "16", "--epochs", "1", "--lr", "1e-3", "--batch-size", "8",
      "--lambda", "100", "--rho", "0.1", "--seed", "5", "--out", sigFile, "--run-dir", join(root, "sig"), "--json",
    ])
    expect(s.code, s.stderr).toBe(0)
    const sj = JSON.parse(s.stdout)
    expect(sj).toMatchObject({ file: sigFile, mode: "full", variants: 2, lambda: 100, rho: 0.1, channels: Math.round(0.1 * 256) })
    expect(sj.pairs.map((p: { reused: boolean }) => p.reused)).toEqual([false, false])
    expect((await readSignatureFile(sigFile)).selection.mlp.length).toBeGreaterThan(0)
    expect(s.stderr).toMatch(/▶ variant-pair-1: running/)

    const p = await runBdvax([
      "purify", "--model", plantModel, "--signature", sigFile, "--records", records, "--epochs", "1", "--lr", "1e-3", "--batch-size", "8",
      "--out", join(root, "purified"), "--run-dir", join(root, "purify"), "--json",
    ])
    expect(p.code, p.stderr).toBe(0)
    expect(JSON.parse(p.stdout)).toMatchObject({ output: join(root, "purified"), mode: "full", produced: "model", channels: 26, steps: Math.ceil(60 / 8) })
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) expect(existsSync(join(root, "purified", f)), f).toBe(true)

    // a signature for another shape is refused before any training, naming the config.json field
    const wrong = JSON.parse(readFileSync(sigFile, "utf8"))
    wrong.model.hidden_size = 128
    writeFileSync(join(root, "wrong.json"), JSON.stringify(wrong))
    const refused = await runBdvax(["purify", "--model", plantModel, "--signature", join(root, "wrong.json"), "--records", records, "--run-dir", join(root, "purify-wrong")])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain("hidden_size = 128, the model has hidden_size = 64")
    expect(refused.stderr).not.toMatch(/\[purify\] step/)

    const missing = await runBdvax(["purify", "--model", plantModel, "--records", records, "--run-dir", join(root, "purify-missing")])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("--signature: required with --model")

    const y = await runBdvax([
      "sanity", "--base", baseModel, "--model", plantModel, "--records", heldOut, "--limit", "4", "--max-new-tokens", "16", "--seed", "1235",
      "--run-dir", join(root, "sanity"), "--json",
    ])
    expect(y.code, y.stderr).toBe(0)
    const yj = JSON.parse(y.stdout) as { file: string; mode: string; results: Array<{ name: string; evaluation: { asr: { keyword: number } } }> }
    expect(yj.mode).toBe("full")
    expect(yj.results.map((x) => x.name)).toEqual(["θ_0 (base)", "θ_b (backdoored)", "all-blocks", "attention-only", "mlp-only", "blocks-0-1", "blocks-1-2", "shuffled-s0", "shuffled-s1"])
    // all-blocks with the non-block updates is θ_b itself: the same generations, the same ASR
    expect(yj.results[2].evaluation).toEqual(yj.results[1].evaluation)
    expect(existsSync(yj.file)).toBe(true)
    // the demo evaluated θ_b with the same prompts and trigger seed: the same ASR again
    expect(yj.results[1].evaluation.asr.keyword).toBe(demo.conditions[1].asr)

    const bad = await runBdvax(["sanity", "--base", baseModel, "--model", plantModel, "--records", heldOut, "--check", "mlp-only,blocks-0-9", "--run-dir", join(root, "sanity")])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("--check: unknown ablation(s) blocks-0-9")
  })
})
