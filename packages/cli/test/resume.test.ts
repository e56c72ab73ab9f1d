import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, relative } from "node:path"
import { describe, expect, it } from "vitest"
import { type CliRun, runBdvax } from "./cli-process.js"

/**
 * Resuming: the demo (small step counts) killed with SIGKILL at several points — in the middle of training the
 * base model, right after it finished, in the middle of planting, inside the second variant pair (after the first
 * was committed) — and then completed, must leave byte-for-byte the same result files (models, deltas, the
 * signature, purified models, generations, metrics, report) as a run that was never interrupted. That needs
 * atomic stages (a killed stage is never taken for a finished one) and deterministic CPU training. The only
 * difference allowed is the measured wall time (`wallSeconds` and the report's wall-time column), which is a
 * measurement, not part of any content address.
 */
const DEMO = [
  "demo", "--base-epochs", "3", "--plant-epochs", "6", "--eval-limit", "4", "--max-new-tokens", "16",
  "--variants", "3", "--variant-epochs", "2", "--variant-subset", "16", "--purify-epochs", "1", "--random-draws", "1", "--baselines", "finetune,magnitude-prune",
]

/** A result file with its measured wall times blanked out (JSON fields and the Markdown wall-time column). */
const withoutTimes = (file: string, bytes: Buffer): Buffer =>
  /\.(json|md)$/.test(file)
    ? Buffer.from(bytes.toString("utf8").replace(/"wallSeconds": [-+0-9.e]+/g, '"wallSeconds": 0').replace(/\| (\d+\.\d s|\d+ min \d+ s) \|/g, "| T |"))
    : bytes

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

      // 4. killed inside the second variant pair: the first pair's stage stays committed
      const k4 = await runBdvax([...DEMO, "--run-dir", resumed], { killWhen: /\[variant-pair-1 (clean|poisoned)\] step \d+\/\d+/ })
      expectKilled(k4)
      expect(k4.stderr).toMatch(/removed 1 unfinished stage folder/)
      expect(k4.stderr).toMatch(/▶ plant: running/)
      expect(k4.stderr).toMatch(/✓ variant-pair-0: finished/)
      expect(stageDirs(resumed).filter((d) => d.startsWith("variant-pair-")).length).toBe(1)
      expect(stageDirs(resumed).filter((d) => d.startsWith(".tmp-variant-pair-")).length).toBe(1)
      expect(manifestStages(resumed)["variant-pair-1"].status).toBe("running")

      // 5. completed
      const done = await runBdvax([...DEMO, "--run-dir", resumed, "--json"])
      expect(done.code, done.stderr).toBe(0)
      expect(done.stderr).toMatch(/removed 1 unfinished stage folder/)
      expect(done.stderr).toContain("plant: reused")
      expect(done.stderr).toContain("variant-pair-0: reused")
      expect(done.stderr).toMatch(/▶ variant-pair-1: running/)
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
    for (const kind of ["variant-pair", "signature", "purify", "baseline"]) expect(results.some((f) => f.startsWith(`stages/${kind}-`)), kind).toBe(true)
    expect(results.filter((f) => /^stages\/variant-pair-[0-9a-f]{16}\/delta.safetensors$/.test(f)).length).toBe(3)
    expect(files(resumed).filter((f) => f !== "manifest.json")).toEqual(results)
    const timed: string[] = []
    for (const f of results) {
      const [a, b] = [readFileSync(join(resumed, f)), readFileSync(join(straight, f))]
      if (!a.equals(b)) timed.push(f)
      expect(withoutTimes(f, a).equals(withoutTimes(f, b)), f).toBe(true)
    }
    // only files that record wall times may differ at all; weights, deltas, signatures and generations never do
    expect(timed.filter((f) => !/(stage\.json|report-data\.json|report\.md)$/.test(f))).toEqual([])

    // The printed results agree too (paths aside).
    const summary = (r: CliRun) => {
      const j = JSON.parse(r.stdout)
      return { base: j.base, backdoored: j.backdoored, plant: j.plant }
    }
    expect(summary(done)).toEqual(summary(clean))
    const conditions = (r: CliRun) => (JSON.parse(r.stdout).conditions as Array<Record<string, unknown>>).map(({ wallSeconds: _, ...c }) => c)
    expect(conditions(done)).toEqual(conditions(clean))
    expect(conditions(done).length).toBe(8)
    const statuses = Object.entries(manifestStages(resumed)).map(([label, s]) => [label, s.status])
    expect(statuses.slice(0, 6)).toEqual([["toy-data", "reused"], ["toy-base", "reused"], ["plant", "reused"], ["eval-base", "reused"], ["eval-backdoored", "reused"], ["variant-pair-0", "reused"]])
    expect(statuses.slice(6).every(([, s]) => s === "finished")).toBe(true)

    // 6. a finished run re-uses every stage
    const again = await runBdvax([...DEMO, "--run-dir", resumed, "--json"])
    expect(again.code).toBe(0)
    const reused = JSON.parse(again.stdout).stages as Record<string, { reused: boolean }>
    expect(Object.keys(reused)).toContain("variant-pair-2")
    expect(Object.entries(reused).filter(([, v]) => !v.reused)).toEqual([])
    expect(again.stderr).not.toMatch(/\[(toy-base|plant|variant-pair-\d [a-z]+)\] step/)

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
  }, 300_000)
})
