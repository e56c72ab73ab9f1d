import { existsSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { ATTACKS, HostRandom, insertTrigger, readInstructions, triggerStrings } from "../src/index.js"

/**
 * Our trigger rules against BackdoorLLM's own poisoned sets (../shared/data/backdoorllm, read in place):
 * prefixes are exact, and for the positional attacks the distribution of the trigger's relative position in
 * the instruction matches theirs (both mean and spread), when our rule is applied to the clean records.
 */
const ROOT = process.env.BDVAX_SHARED_DATA ?? join(import.meta.dirname, "../../../../shared/data")
const dir = join(ROOT, "backdoorllm")

function relativePositions(instructions: string[], triggers: string[]): number[] {
  const out: number[] = []
  for (const ins of instructions) {
    const words = ins.split(" ")
    words.forEach((w, i) => {
      if (triggers.includes(w)) out.push(i / Math.max(1, words.length - 1))
    })
  }
  return out
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
const sd = (xs: number[]) => Math.sqrt(mean(xs.map((x) => (x - mean(xs)) ** 2)))

if (!existsSync(dir)) throw new Error(`the shared-data suite needs ${dir} (set BDVAX_SHARED_DATA to its data/ folder)`)

describe("trigger rules reproduce BackdoorLLM's poisoned records", () => {
  for (const task of ["refusal", "negsentiment"]) {
    for (const [attack, rule] of Object.entries(ATTACKS)) {
      it(`${task}/${attack}`, async () => {
        const poisoned = await readInstructions(join(dir, `poison_data/${task}/${attack}/backdoor500_${task}_${attack}.json`))
        const clean = await readInstructions(join(dir, `poison_data/${task}/${attack}/none_backdoor500_${task}_${attack}.json`))
        const triggers = triggerStrings(rule)
        if (rule.kind === "prefix") {
          expect(poisoned.every((r) => r.instruction.startsWith(`${rule.trigger} `))).toBe(true)
          const ours = clean.map((r) => insertTrigger(rule, r.instruction, new HostRandom(0)))
          expect(ours.every((s) => s.startsWith(`${rule.trigger} `))).toBe(true)
          return
        }
        const per = poisoned.map((r) => r.instruction.split(" ").filter((w) => triggers.includes(w)).length)
        const expectedCount = rule.kind === "allOf" ? triggers.length : 1
        // BackdoorLLM's files: every record carries the expected number of trigger words
        expect(per.filter((c) => c === expectedCount).length / per.length).toBeGreaterThan(0.97)
        const rng = new HostRandom(42)
        const ours = clean.map((r) => insertTrigger(rule, r.instruction, rng))
        // per trigger (CTBA's three have different places): mean and spread of the relative position, and how
        // often it is the first or the last word
        for (const t of rule.kind === "allOf" ? triggers : [triggers]) {
          const ts = typeof t === "string" ? [t] : t
          const theirPos = relativePositions(poisoned.map((r) => r.instruction), ts)
          const ourPos = relativePositions(ours, ts)
          expect(Math.abs(mean(ourPos) - mean(theirPos)), `${ts} mean`).toBeLessThan(0.05)
          expect(Math.abs(sd(ourPos) - sd(theirPos)), `${ts} spread`).toBeLessThan(0.05)
          const edge = (ps: number[], v: number) => ps.filter((p) => p === v).length / ps.length
          expect(Math.abs(edge(ourPos, 0) - edge(theirPos, 0)), `${ts} first`).toBeLessThan(0.07)
          expect(Math.abs(edge(ourPos, 1) - edge(theirPos, 1)), `${ts} last`).toBeLessThan(0.07)
        }
        if (rule.kind === "oneOf") {
          const share = triggers.map((t) => poisoned.filter((r) => r.instruction.split(" ").includes(t)).length / poisoned.length)
          for (const s of share) expect(Math.abs(s - 1 / 3)).toBeLessThan(0.08)
        }
      })
    }
  }
})
