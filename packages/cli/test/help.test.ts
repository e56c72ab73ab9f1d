import { describe, expect, it } from "vitest"
import { runBdvax } from "./cli-process.js"

/** Every command answers --help with exit code 0 and documents its options (and the global ones). */
const COMMANDS: ReadonlyArray<readonly [string[], string[]]> = [
  [[], ["info", "attack", "eval", "signature", "purify", "sanity", "run", "ablate", "demo", "report"]],
  [["info"], []],
  [["attack"], ["poison", "plant"]],
  [["attack", "poison"], ["--records", "--attack", "--task", "--ratio", "--poison-mode", "--seed", "--out"]],
  [["attack", "plant"], ["--model", "--toy", "--records", "--attack", "--task", "--ratio", "--mode", "--epochs", "--max-steps", "--lr", "--batch-size", "--prompt-format", "--lora-r", "--lora-alpha", "--out"]],
  [["eval"], ["--model", "--adapter", "--clean", "--triggered", "--attack", "--task", "--prompt-format", "--max-new-tokens", "--batch-size", "--limit", "--seed"]],
  [["signature"], ["--model", "--adapter", "--records", "--toy", "--mode", "--variants", "--subset", "--poison-ratio", "--epochs", "--max-steps", "--lr", "--batch-size", "--lambda", "--rho", "--rho-heads", "--seed", "--out"]],
  [["purify"], ["--model", "--adapter", "--signature", "--records", "--toy", "--mode", "--epochs", "--lr", "--batch-size", "--max-steps", "--no-finetune", "--seed", "--heads", "--out"]],
  [["sanity"], ["--base", "--model", "--adapter", "--records", "--triggered", "--attack", "--task", "--check", "--block-updates-only", "--toy", "--mode", "--prompt-format", "--max-new-tokens", "--batch-size", "--limit", "--seed", "--out"]],
  [["run"], ["experiment"]],
  [["ablate"], ["n", "score", "rho", "transfer", "seeds"]],
  [["ablate", "n"], ["--mode", "--values"]],
  [["ablate", "score"], ["--mode"]],
  [["ablate", "rho"], ["--mode", "--values"]],
  [["ablate", "transfer"], ["--mode", "--cells"]],
  [["ablate", "seeds"], ["--mode", "--values"]],
  [
    ["demo"],
    [
      "--seed", "--held-out", "--base-epochs", "--base-lr", "--plant-epochs", "--plant-lr", "--batch-size", "--mode", "--ratio", "--max-new-tokens", "--eval-batch-size", "--eval-limit",
      "--signature-seed", "--variants", "--variant-subset", "--variant-ratio", "--variant-epochs", "--variant-lr", "--variant-max-steps", "--lambda", "--rho",
      "--purify-epochs", "--purify-lr", "--purify-max-steps", "--random-draws", "--baselines",
    ],
  ],
  [["report"], ["run", "--out"]],
]
const GLOBAL = ["--backend", "--json", "--run-dir"]

describe("bdvax --help", () => {
  it("exits 0 and lists the options of every command", async () => {
    // two at a time: the machine has two cores and each run starts a Node process
    const results: Array<{ args: string[]; code: number | null; stdout: string; missing: string[] }> = []
    for (let i = 0; i < COMMANDS.length; i += 2) {
      const batch = COMMANDS.slice(i, i + 2)
      const runs = await Promise.all(batch.map(([args]) => runBdvax([...args, "--help"])))
      runs.forEach((r, k) => {
        const [args, options] = batch[k]
        const missing = [...options, ...GLOBAL].filter((o) => !r.stdout.includes(o))
        results.push({ args, code: r.code, stdout: r.stdout, missing })
      })
    }
    for (const r of results) {
      expect({ command: r.args.join(" ") || "(root)", code: r.code, missing: r.missing }).toEqual({ command: r.args.join(" ") || "(root)", code: 0, missing: [] })
      expect(r.stdout).toMatch(/USAGE/)
    }
  })
})
