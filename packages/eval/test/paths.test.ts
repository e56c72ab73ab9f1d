import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { backdoorllmTestFiles, loadAsrPrompts, sharedDataRoot, sharedPaths } from "../src/index.js"

describe("shared data paths (no data needed)", () => {
  it("BDVAX_SHARED_DATA wins; otherwise <repo>/../shared/data", () => {
    expect(sharedDataRoot({ BDVAX_SHARED_DATA: "/data/x" })).toBe("/data/x")
    const repo = resolve(import.meta.dirname, "../../..")
    expect(sharedDataRoot({})).toBe(resolve(repo, "../shared/data"))
    const p = sharedPaths("/d")
    expect(p.arcChallenge).toBe("/d/arc/ARC-Challenge-Test.jsonl")
    expect(p.hellaswag).toEqual([1, 2, 3].map((k) => `/d/hellaswag/hellaswag_val_klosax_part${k}of3.jsonl`))
    expect(backdoorllmTestFiles("refusal", "badnet", "/d")).toEqual({
      triggered: "/d/backdoorllm/test_data/poison/refusal/badnet/backdoor200_refusal_badnet.json",
      clean: "/d/backdoorllm/test_data/clean/refusal/test_data_no_trigger.json",
    })
  })

  it("reads ASR prompts (input defaults to empty) and names the line of a broken record", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bdvax-asr-"))
    const ok = join(dir, "ok.json")
    writeFileSync(ok, JSON.stringify([{ instruction: "a", input: "b", output: "c" }, { instruction: "d", output: "e" }], null, 2))
    expect(await loadAsrPrompts(ok)).toEqual([{ instruction: "a", input: "b" }, { instruction: "d", input: "" }])
    const bad = join(dir, "bad.json")
    writeFileSync(bad, '[\n  {"instruction": "a"},\n  {\n    "instruction": 3\n  }\n]\n')
    await expect(loadAsrPrompts(bad)).rejects.toMatchObject({ _tag: "EvalDataError", file: bad, line: 3 })
    await expect(loadAsrPrompts(join(dir, "missing.json"))).rejects.toMatchObject({ _tag: "EvalDataError", line: null })
  })
})
