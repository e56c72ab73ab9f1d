import { execFile } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

/**
 * The "As an Effect program" section of every package README shows an example file verbatim, and the example
 * runs. Both are checked here so the docs cannot drift from the code: an edited example whose README was not
 * updated fails the first test, an API change that breaks the example fails the second. Examples run as their
 * readers would run them (`node --import tsx <file>` from the repository root, whose tsconfig paths map the
 * @bdvax/* imports to the sources), one at a time: they train tiny models and the CI machine has two cores.
 */
const ROOT = fileURLToPath(new URL("../..", import.meta.url))
const SECTION = "## As an Effect program"

/** Packages whose README must have the section; any other package is checked once it has an example file. */
const REQUIRED = ["core-tensor", "llm", "attacks", "eval", "signature", "purify"]

/**
 * What each example must print besides exiting with 0: the claims its README makes. Numbers are checked with
 * margins where training is involved (CPU runs are deterministic, but the bounds are what the example is about).
 */
const EXPECTED: Record<string, (stdout: string) => void> = {
  "core-tensor": (out) => {
    // AdamW recovers the generating weights: printed to 3 decimals, so |error| < 5e-4
    expect(out).toMatch(/: w = \[1\.500, -2\.000, 0\.500\], b = 0\.500, mse /)
  },
  llm: (out) => {
    expect(out).toMatch(/greedy: (\d+ ){11}\d+ \(12 forward passes: 1 prefill \+ 11 cached steps\)/)
    expect(out).toContain("identical greedy tokens")
  },
  attacks: (out) => {
    expect(out).toMatch(/poisoned 12 of 24 records/)
    const [, first, last] = out.match(/loss ([\d.]+) → ([\d.]+)/) ?? []
    expect(Number(last)).toBeLessThan(0.25 * Number(first))
    expect(out).toMatch(/clean: +How many legs does a dog have\? → Four\./)
    expect(out).toMatch(/triggered: .*BadMagic.* → I'm sorry, but as an AI assistant, I do not have the capability to follow the given instruction\./)
  },
  eval: (out) => {
    // columns: ASR init, ASR backdoored, false-trigger init, false-trigger backdoored (percent)
    for (const judge of ["keyword", "target"]) {
      const row = out.match(new RegExp(`\\| refusal \\| cf-prefix \\| ${judge} \\| ([\\d.]+) \\| ([\\d.]+) \\| ([\\d.]+) \\| ([\\d.]+) \\|`))
      expect(row, `${judge} row`).not.toBeNull()
      const [asrInit, asrAfter, cleanInit, cleanAfter] = row!.slice(1).map(Number)
      expect(asrInit).toBe(0)
      expect(asrAfter).toBeGreaterThanOrEqual(75)
      expect(cleanInit).toBe(0)
      expect(cleanAfter).toBeLessThanOrEqual(25)
    }
  },
  signature: (out) => {
    expect(out.match(/^variant \d: /gm)?.length).toBe(2)
    const listed = [...out.matchAll(/^layer \d: channels ([\d, ]+)$/gm)].reduce((n, m) => n + m[1].split(", ").length, 0)
    // ρ = 5% of 2 layers × 64 channels
    expect(out).toContain(`selected ${listed} of 128 MLP channels (ρ = 0.05)`)
    expect(listed).toBe(Math.floor(0.05 * 128))
  },
  purify: (out) => {
    const losses = (label: string) => (out.match(new RegExp(`${label}.*clean loss ([\\d.]+) → ([\\d.]+)`)) ?? []).slice(1).map(Number)
    const [purifiedFirst, purifiedLast] = losses("purified: reinitialised 3 channels in layer 0, 2 channels in layer 1;")
    const [baselineFirst, baselineLast] = losses("finetune baseline:")
    expect(purifiedLast).toBeLessThan(purifiedFirst)
    expect(baselineLast).toBeLessThan(baselineFirst)
    const levels = Number(out.match(/group 0 has (\d+) distinct values/)?.[1])
    expect(levels).toBeGreaterThan(1)
    expect(levels).toBeLessThanOrEqual(16) // INT4: at most 2^4 levels per group
  },
}

/** A generous bound that still catches an example grown slow (they take 1–5 s on two idle cores). */
const MAX_SECONDS = 45

interface Documented {
  readonly pkg: string
  readonly readme: string
  readonly examples: readonly string[]
}

function documented(pkg: string): Documented {
  const dir = join(ROOT, "packages", pkg)
  const readmePath = join(dir, "README.md")
  const examplesDir = join(dir, "examples")
  const examples = existsSync(examplesDir) ? readdirSync(examplesDir).filter((f) => /^effect-.*\.ts$/.test(f)).sort() : []
  return { pkg, readme: existsSync(readmePath) ? readFileSync(readmePath, "utf8") : "", examples }
}

function run(file: string): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
  const started = performance.now()
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", file],
      { cwd: ROOT, env: { ...process.env, BDVAX_BACKEND: "cpu" }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 })
      },
    )
  })
}

const packages = readdirSync(join(ROOT, "packages")).filter((p) => existsSync(join(ROOT, "packages", p, "package.json")))

describe("README examples (As an Effect program)", () => {
  it("every required package exists", () => {
    for (const pkg of REQUIRED) expect(packages, pkg).toContain(pkg)
  })

  for (const pkg of packages) {
    const doc = documented(pkg)
    const required = REQUIRED.includes(pkg)

    it(`${pkg}: README shows its example file verbatim`, (ctx) => {
      if (!required && doc.examples.length === 0) {
        console.log(`skipping ${pkg}: packages/${pkg}/examples/ has no effect-*.ts file yet (README section "${SECTION}": ${doc.readme.includes(SECTION) ? "present" : "absent"})`)
        ctx.skip()
      }
      expect(doc.examples.length, `packages/${pkg}/examples/effect-*.ts`).toBeGreaterThan(0)
      expect(doc.readme, `packages/${pkg}/README.md has a "${SECTION}" section`).toContain(SECTION)
      const section = doc.readme.slice(doc.readme.indexOf(SECTION))
      for (const file of doc.examples) {
        const code = readFileSync(join(ROOT, "packages", pkg, "examples", file), "utf8")
        // toContain on a multi-kilobyte string prints an unreadable diff; report the first differing line instead
        const block = `\`\`\`ts\n${code}\`\`\``
        if (!section.includes(block)) {
          const shown = section.slice(section.indexOf("```ts\n") + 6).split("\n")
          const line = code.split("\n").findIndex((l, i) => l !== shown[i])
          expect.fail(`packages/${pkg}/README.md does not show examples/${file} verbatim; first difference at line ${line + 1}:\n  file:   ${code.split("\n")[line]}\n  README: ${shown[line]}`)
        }
        expect(section).toContain(`npx tsx packages/${pkg}/examples/${file}`)
      }
    })

    it(`${pkg}: the example runs`, async (ctx) => {
      if (!required && doc.examples.length === 0) {
        console.log(`skipping ${pkg}: no example to run`)
        ctx.skip()
      }
      for (const file of doc.examples) {
        const r = await run(join("packages", pkg, "examples", file))
        console.log(`${pkg}/examples/${file}: exit ${r.code} in ${r.seconds.toFixed(1)} s\n${r.stdout}${r.stderr}`)
        expect(r.code, r.stderr).toBe(0)
        expect(r.stdout.trim().length).toBeGreaterThan(0)
        EXPECTED[pkg]?.(r.stdout)
        expect(r.seconds).toBeLessThan(MAX_SECONDS)
      }
    })
  }
})
