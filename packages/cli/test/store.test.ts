import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import {
  canonicalJson,
  defineStage,
  fingerprintPath,
  LOCK_FILE,
  MANIFEST_FILE,
  Progress,
  readManifest,
  stage,
  STAGE_FILE,
  STAGES_DIR,
  stageHash,
  Store,
  StageError,
} from "../src/index.js"

const COUNT = defineStage("count-words", 1, Schema.Struct({ words: Schema.Number, file: Schema.String }))

/** A stage whose work is counted, writing one output file. */
function countWords(settings: { text: string; upper: boolean }, calls: { n: number }, fail = false) {
  return stage(COUNT, settings, {}, ({ dir, label }) =>
    Effect.gen(function* () {
      calls.n++
      writeFileSync(join(dir, "out.txt"), settings.upper ? settings.text.toUpperCase() : settings.text)
      if (fail) return yield* new StageError({ stage: label, message: `${label}: failed on purpose` })
      return { words: settings.text.split(" ").length, file: "out.txt" }
    }),
  )
}

/** Run `program` against the store of `runDir`, with progress lines collected into `lines`. */
function withStore<A, E>(runDir: string, program: Effect.Effect<A, E, Store>, lines: string[] = []) {
  const sink = { write: (t: string) => void lines.push(t), columns: () => 100 }
  return Effect.runPromise(
    program.pipe(Effect.provide(Store.layer({ runDir, command: "test", settings: { n: 1 } })), Effect.provide(Progress.layerWith("lines", sink))),
  )
}

/** The same, as a Result: failures of opening the store (lock, manifest) included. */
function tryWithStore<A, E>(runDir: string, program: Effect.Effect<A, E, Store>) {
  return Effect.runPromise(
    Effect.result(program.pipe(Effect.provide(Store.layer({ runDir, command: "test", settings: {} })))).pipe(Effect.provide(Progress.layerWith("off", { write: () => {}, columns: () => 80 }))),
  )
}

const temporaries: string[] = []
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temporaries.push(dir)
  return dir
}
const tempRun = () => join(tempDir("bdvax-store-"), "run")
afterAll(() => temporaries.forEach((d) => rmSync(d, { recursive: true, force: true })))

describe("stage hashing", () => {
  const key = { kind: "plant", version: 1, settings: { lr: 0.001, epochs: 3, mode: "full" }, inputs: { base: "ab", data: "cd" } }

  it("is the same for the same settings, whatever the key order", () => {
    const h = stageHash(key)
    expect(h).toMatch(/^[0-9a-f]{64}$/)
    expect(stageHash({ ...key, settings: { mode: "full", epochs: 3, lr: 0.001 }, inputs: { data: "cd", base: "ab" } })).toBe(h)
  })

  it("changes with any setting, input, kind or version", () => {
    const h = stageHash(key)
    const variants = [
      { ...key, settings: { ...key.settings, lr: 0.002 } },
      { ...key, settings: { ...key.settings, extra: null } },
      { ...key, inputs: { ...key.inputs, base: "ac" } },
      { ...key, kind: "plant2" },
      { ...key, version: 2 },
    ]
    const hashes = new Set([h, ...variants.map(stageHash)])
    expect(hashes.size).toBe(1 + variants.length)
  })

  it("refuses values JSON cannot represent instead of hashing them as null", () => {
    expect(() => canonicalJson({ a: [1, Number.NaN] })).toThrow(/a\[1\] is NaN/)
    expect(canonicalJson({ b: 1, a: [true, "x", null], c: undefined })).toBe('{"a":[true,"x",null],"b":1}')
  })

  it("fingerprints files by content", () => {
    const dir = tempDir("bdvax-fp-")
    writeFileSync(join(dir, "a.jsonl"), '{"instruction":"x","output":"y"}\n')
    return (async () => {
      const before = await fingerprintPath(dir)
      expect(await fingerprintPath(dir)).toBe(before)
      writeFileSync(join(dir, "a.jsonl"), '{"instruction":"x","output":"z"}\n')
      expect(await fingerprintPath(dir)).not.toBe(before)
    })()
  })
})

describe("the artifact store", () => {
  it("runs a stage once and re-uses its folder afterwards (prints 'reused')", async () => {
    const runDir = tempRun()
    const calls = { n: 0 }
    const first = await withStore(runDir, countWords({ text: "a b c", upper: false }, calls))
    expect(first).toMatchObject({ reused: false, result: { words: 3, file: "out.txt" } })
    expect(first.path).toBe(join(runDir, STAGES_DIR, `count-words-${first.hash.slice(0, 16)}`))
    expect(readFileSync(join(first.path, "out.txt"), "utf8")).toBe("a b c")
    const stageJson = JSON.parse(readFileSync(join(first.path, STAGE_FILE), "utf8"))
    expect(stageJson).toMatchObject({ kind: "count-words", version: 1, hash: first.hash, settings: { text: "a b c", upper: false }, result: { words: 3 } })

    const lines: string[] = []
    const again = await withStore(runDir, countWords({ upper: false, text: "a b c" }, calls), lines)
    expect(calls.n).toBe(1)
    expect(again).toEqual({ ...first, reused: true })
    expect(lines.join("")).toMatch(/count-words: reused stages\/count-words-/)

    const changed = await withStore(runDir, countWords({ text: "a b c", upper: true }, calls))
    expect(calls.n).toBe(2)
    expect(changed.hash).not.toBe(first.hash)
    expect(readFileSync(join(changed.path, "out.txt"), "utf8")).toBe("A B C")

    const manifest = await Effect.runPromise(readManifest(join(runDir, MANIFEST_FILE)))
    expect(manifest?.stages["count-words"]).toMatchObject({ status: "finished", hash: changed.hash, dir: `${STAGES_DIR}/count-words-${changed.hash.slice(0, 16)}` })
    expect(existsSync(join(runDir, LOCK_FILE))).toBe(false)
  })

  it("ignores and deletes the temporary folder of a killed stage, and recomputes a folder without stage.json", async () => {
    const runDir = tempRun()
    const calls = { n: 0 }
    const first = await withStore(runDir, countWords({ text: "x y", upper: false }, calls))
    // what a SIGKILL leaves behind: a half-written temporary folder, and (worse) a final folder lacking stage.json
    const leftover = join(runDir, STAGES_DIR, `.tmp-count-words-${first.hash.slice(0, 16)}-99999`)
    mkdirSync(leftover)
    writeFileSync(join(leftover, "out.txt"), "half")
    writeFileSync(join(first.path, STAGE_FILE), '{"format": "bdvax-store/1", "kind": "count-wo')

    const lines: string[] = []
    const again = await withStore(runDir, countWords({ text: "x y", upper: false }, calls), lines)
    expect(existsSync(leftover)).toBe(false)
    expect(lines.join("")).toContain("removed 1 unfinished stage folder")
    expect(lines.join("")).toMatch(/not valid JSON.*recomputing/)
    expect(calls.n).toBe(2)
    expect(again).toMatchObject({ reused: false, hash: first.hash, result: first.result })
    expect(readdirSync(join(runDir, STAGES_DIR)).filter((n) => n.startsWith(".tmp-"))).toEqual([])
  })

  it("leaves nothing behind when a stage fails, records the failure, and succeeds on the next run", async () => {
    const runDir = tempRun()
    const calls = { n: 0 }
    const failed = await withStore(runDir, Effect.result(countWords({ text: "p q", upper: false }, calls, true)))
    expect(failed._tag).toBe("Failure")
    expect(readdirSync(join(runDir, STAGES_DIR))).toEqual([])
    const manifest = await Effect.runPromise(readManifest(join(runDir, MANIFEST_FILE)))
    expect(manifest?.stages["count-words"]).toMatchObject({ status: "failed", error: "count-words: failed on purpose" })
    const ok = await withStore(runDir, countWords({ text: "p q", upper: false }, calls))
    expect(ok).toMatchObject({ reused: false, result: { words: 2 } })
  })

  it("refuses a run folder locked by a live process and takes over the lock of a dead one", async () => {
    const runDir = tempRun()
    mkdirSync(runDir, { recursive: true })
    // a live process that is not us: our parent (vitest's main process)
    writeFileSync(join(runDir, LOCK_FILE), `${process.ppid}\n`)
    const locked = await tryWithStore(runDir, countWords({ text: "z", upper: false }, { n: 0 }))
    expect(locked._tag).toBe("Failure")
    if (locked._tag === "Failure") {
      expect(locked.failure._tag).toBe("StoreError")
      expect(locked.failure.message).toContain(`in use by process ${process.ppid}`)
    }
    // a process that has exited
    const dead = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!
    writeFileSync(join(runDir, LOCK_FILE), `${dead}\n`)
    const ok = await withStore(runDir, countWords({ text: "z", upper: false }, { n: 0 }))
    expect(ok.reused).toBe(false)
    expect(existsSync(join(runDir, LOCK_FILE))).toBe(false)
  })

  it("publishes outputs atomically into the run folder and records them", async () => {
    const runDir = tempRun()
    const dest = await withStore(
      runDir,
      Effect.gen(function* () {
        const done = yield* countWords({ text: "m n o", upper: false }, { n: 0 })
        const store = yield* Store
        return yield* store.publish("words", join(done.path, done.result.file), "words.txt")
      }),
    )
    expect(dest).toBe(join(runDir, "words.txt"))
    expect(readFileSync(dest, "utf8")).toBe("m n o")
    const manifest = await Effect.runPromise(readManifest(join(runDir, MANIFEST_FILE)))
    expect(manifest?.outputs).toEqual({ words: "words.txt" })
    expect(readdirSync(runDir).filter((n) => n.startsWith(".tmp-"))).toEqual([])
  })

  it("names the manifest when it is not a run manifest", async () => {
    const runDir = tempRun()
    mkdirSync(runDir, { recursive: true })
    writeFileSync(join(runDir, MANIFEST_FILE), JSON.stringify({ format: "bdvax-run/1", name: 3 }))
    const r = await tryWithStore(runDir, countWords({ text: "z", upper: false }, { n: 0 }))
    expect(r._tag).toBe("Failure")
    if (r._tag === "Failure") expect(r.failure.message).toContain(`${join(runDir, MANIFEST_FILE)}: name: expected a string, got 3`)
  })
})
