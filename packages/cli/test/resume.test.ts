import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, relative } from "node:path"
import { describe, expect, it } from "vitest"
import { type CliRun, runBdvax } from "./cli-process.js"

/**
 * Resuming: the demo's first half (small step counts) killed with SIGKILL at several points — in the middle of
 * training the base model, right after it finished, in the middle of planting — and then completed, must leave
 * byte-for-byte the same result files (models, generations, metrics, report) as a run that was never
 * interrupted. That needs atomic stages (a killed stage is never taken for a finished one) and deterministic
 * CPU training.
 */
const DEMO = ["demo", "--base-epochs", "3", "--plant-epochs", "6", "--eval-limit", "4", "--max-new-tokens", "16"]

function files(root: string): string[] {
  const out: string[] = []
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name)
      if (statSync(p).isDirectory()) walk(p)
      else out.push(relative(root, p))
    }
  }
  walk(root)
  return out.sort()
}

const stageDirs = (run: string) => (existsSync(join(run, "stages")) ? readdirSync(join(run, "stages")).sort() : [])
const manifestStages = (run: string) => JSON.parse(readFileSync(join(run, "manifest.json"), "utf8")).stages as Record<string, { status: string }>

const expectKilled = (r: CliRun) => {
  expect(r.killed, r.stderr).toBe(true)
  expect(r.signal).toBe("SIGKILL")
}

describe("a demo run killed with SIGKILL resumes to the same results", () => {
  it("matches an uninterrupted run byte for byte", async () => {
    const root = mkdtempSync(join(tmpdir(), "bdvax-resume-"))
    const straight = join(root, "straight")
    const resumed = join(root, "resumed")

    const chain = (async () => {
      // 1. killed while training the base model
      const k1 = await runBdvax([...DEMO, "--run-dir", resumed], { killWhen: /\[toy-base\] step \d+\/\d+/ })
      expectKilled(k1)
      expect(stageDirs(resumed).filter((d) => d.startsWith("toy-base-"))).toEqual([])
      expect(manifestStages(resumed)["toy-base"].status).toBe("running")

      // 2. killed right after the base model's stage was committed
      const k2 = await runBdvax([...DEMO, "--run-dir", resumed], { killWhen: /✓ toy-base: finished/ })
      expectKilled(k2)
      expect(k2.stderr).toContain("toy-data: reused")
      expect(k2.stderr).toMatch(/removed 1 unfinished stage folder/)
      expect(stageDirs(resumed).filter((d) => d.startsWith("toy-base-")).length).toBe(1)

      // 3. killed in the middle of planting
      const k3 = await runBdvax([...DEMO, "--run-dir", resumed], { killWhen: /\[plant\] step \d+\/\d+/ })
      expectKilled(k3)
      expect(k3.stderr).toContain("toy-base: reused")
      expect(stageDirs(resumed).filter((d) => d.startsWith("plant-"))).toEqual([])
      expect(stageDirs(resumed).filter((d) => d.startsWith(".tmp-plant-")).length).toBe(1)
      expect(manifestStages(resumed).plant.status).toBe("running")

      // 4. completed
      const done = await runBdvax([...DEMO, "--run-dir", resumed, "--json"])
      expect(done.code, done.stderr).toBe(0)
      expect(done.stderr).toMatch(/removed 1 unfinished stage folder/)
      expect(done.stderr).toContain("toy-base: reused")
      expect(done.stderr).toMatch(/▶ plant: running/)
      return done
    })()
    const straightRun = runBdvax([...DEMO, "--run-dir", straight, "--json"])
    const [done, clean] = await Promise.all([chain, straightRun])
    expect(clean.code, clean.stderr).toBe(0)

    // Same stage folders (same content addresses), same files, same bytes — manifest.json aside (it has times).
    const results = files(straight).filter((f) => f !== "manifest.json")
    expect(results).toContain("report.md")
    expect(results.some((f) => /^stages\/plant-[0-9a-f]{16}\/model\/model.safetensors$/.test(f))).toBe(true)
    expect(results.some((f) => /^stages\/evaluate-[0-9a-f]{16}\/asr.json$/.test(f))).toBe(true)
    expect(files(resumed).filter((f) => f !== "manifest.json")).toEqual(results)
    for (const f of results) expect(readFileSync(join(resumed, f)).equals(readFileSync(join(straight, f))), f).toBe(true)

    // The printed results agree too (paths aside).
    const summary = (r: CliRun) => {
      const j = JSON.parse(r.stdout)
      return { base: j.base, backdoored: j.backdoored, plant: j.plant }
    }
    expect(summary(done)).toEqual(summary(clean))
    expect(Object.values(manifestStages(resumed)).map((s) => s.status)).toEqual(["reused", "reused", "finished", "finished", "finished", "finished"])

    // 5. a finished run re-uses every stage
    const again = await runBdvax([...DEMO, "--run-dir", resumed, "--json"])
    expect(again.code).toBe(0)
    const reused = JSON.parse(again.stdout).stages as Record<string, { reused: boolean }>
    expect(Object.entries(reused).map(([k, v]) => [k, v.reused])).toEqual(
      ["toy-data", "toy-base", "plant", "eval-base", "eval-backdoored", "report"].map((k) => [k, true]),
    )
    expect(again.stderr).not.toMatch(/\[(toy-base|plant)\] step/)

    // The other commands on this run's artifacts:
    const stages = JSON.parse(clean.stdout).stages as Record<string, { path: string }>
    const heldOut = join(stages["toy-data"].path, "held-out.jsonl")
    const [evaluated, rerendered, poisoned] = await Promise.all([
      // `bdvax eval` with the demo's evaluation settings reproduces its stage exactly (same generations)
      runBdvax(["eval", "--model", join(stages.plant.path, "model"), "--clean", heldOut, "--seed", "1235", "--max-new-tokens", "16", "--batch-size", "24", "--limit", "4", "--run-dir", join(root, "eval"), "--json"]),
      // `bdvax report` re-renders the same report from report-data.json
      runBdvax(["report", straight, "--out", join(root, "rerendered")]),
      // `bdvax attack poison` on the held-out records: 24 + 12 poisoned copies, as JSON (by the extension)
      runBdvax(["attack", "poison", "--records", heldOut, "--ratio", "0.5", "--out", join(root, "poisoned.json"), "--run-dir", join(root, "attack"), "--json"]),
    ])
    expect(evaluated.code, evaluated.stderr).toBe(0)
    const e = JSON.parse(evaluated.stdout)
    expect({ asr: e.asr, falseTrigger: e.falseTrigger, cleanAccuracy: e.cleanAccuracy }).toEqual({
      asr: summary(clean).backdoored.asr,
      falseTrigger: summary(clean).backdoored.falseTrigger,
      cleanAccuracy: summary(clean).backdoored.cleanAccuracy,
    })
    expect(readFileSync(e.files.asr).equals(readFileSync(join(stages["eval-backdoored"].path, "asr.json")))).toBe(true)

    expect(rerendered.code, rerendered.stderr).toBe(0)
    for (const f of ["report.md", "report.svg", "training.svg"]) expect(readFileSync(join(root, "rerendered", f)).equals(readFileSync(join(straight, f))), f).toBe(true)

    expect(poisoned.code, poisoned.stderr).toBe(0)
    expect(JSON.parse(poisoned.stdout)).toMatchObject({ file: join(root, "poisoned.json"), records: 36, poisoned: 12 })
    const records = JSON.parse(readFileSync(join(root, "poisoned.json"), "utf8")) as Array<{ instruction: string; output: string }>
    expect(records.filter((r) => r.instruction.split(" ").includes("BadMagic") && r.output.startsWith("I'm sorry")).length).toBe(12)
    rmSync(root, { recursive: true, force: true })
  })
})
