import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CheckpointError } from "../src/errors.js"
import { parseGguf, parseGgufTensors, readGguf } from "../src/gguf.js"
import { parseSafetensors, readSafetensors } from "../src/safetensors.js"

/**
 * Hostile checkpoints: thousands of seeded random mutations of valid safetensors and GGUF files (bit flips,
 * truncations, length and count fields set to huge values, random bytes, header text edits). Each mutant must
 * either parse or fail with a CheckpointError — never a RangeError, TypeError or out-of-memory — in bounded
 * time, and whatever parses must not have produced more data than the file can back.
 */
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/formats/${name}`, import.meta.url))

/** mulberry32: a tiny seeded PRNG, so every failure is reproducible from its iteration number. */
function rngFrom(seed: number) {
  let s = seed >>> 0
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] }
}
type Rng = ReturnType<typeof rngFrom>

const HUGE_U64 = [0xffffffffffffffffn, 1n << 63n, 1n << 62n, 1n << 32n, 0xffffffffn, 0x7fffffffn, 1n << 53n, 0n, 1n]

/** Mutations on raw bytes; `hot` is the length of the header region, where most of them land. */
const byteMutations: Record<string, (b: Uint8Array, r: Rng, hot: number) => Uint8Array> = {
  flipBits(b, r, hot) {
    const out = b.slice()
    for (let k = 1 + r.int(8); k > 0; k--) {
      const at = r.next() < 0.85 ? r.int(hot) : r.int(out.length)
      out[at] ^= 1 << r.int(8)
    }
    return out
  },
  truncate: (b, r, hot) => b.slice(0, r.next() < 0.7 ? r.int(hot + 1) : r.int(b.length)),
  hugeU64(b, r, hot) {
    const out = b.slice()
    const at = r.int(Math.max(1, Math.min(hot, out.length - 8)))
    const value = r.next() < 0.8 ? r.pick(HUGE_U64) : BigInt(b.length + r.int(64) - 32) & 0xffffffffffffffffn
    new DataView(out.buffer).setBigUint64(at, value, true)
    return out
  },
  hugeU32(b, r, hot) {
    const out = b.slice()
    new DataView(out.buffer).setUint32(r.int(Math.max(1, Math.min(hot, out.length - 4))), r.pick([0xffffffff, 0x80000000, 13, 99, 5, 0]), true)
    return out
  },
  randomBytes(b, r, hot) {
    const out = b.slice()
    const at = r.int(hot)
    for (let i = 0, n = 1 + r.int(16); i < n && at + i < out.length; i++) out[at + i] = r.int(256)
    return out
  },
  spliceChunk(b, r, hot) {
    const from = r.int(hot)
    const length = 1 + r.int(24)
    if (r.next() < 0.5) return Uint8Array.from([...b.subarray(0, from), ...b.subarray(from + length)]) // delete
    return Uint8Array.from([...b.subarray(0, from + length), ...b.subarray(from)]) // duplicate
  },
}

/** Edits of a safetensors header's JSON text, with the length prefix kept consistent (or not). */
function mutateSafetensorsHeader(b: Uint8Array, r: Rng): Uint8Array {
  if (b.length < 8) return b
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true))
  if (n > b.length - 8) return b // an earlier mutation already broke the length prefix
  let text = new TextDecoder().decode(b.subarray(8, 8 + n))
  const numbers = [...text.matchAll(/-?\d+(\.\d+)?/g)]
  const edit = r.int(5)
  if (edit === 0 && numbers.length > 0) {
    const m = r.pick(numbers)
    const replacement = r.pick(["-1", "1.5", "1e300", "9007199254740993", "18446744073709551615", "0", String(r.int(5000)), "null", '"7"', "[]"])
    text = text.slice(0, m.index) + replacement + text.slice(m.index! + m[0].length)
  } else if (edit === 1) {
    text = text.replace(r.pick([/"F32"/, /"F16"/, /"BF16"/, /"I64"/, /"U8"/]), r.pick(['"F12"', '"F64"', '"I8"', "7", '"F8_E4M3"']))
  } else if (edit === 2) {
    const at = r.int(text.length)
    text = text.slice(0, at) + r.pick(["{", "}", "[", "]", ",", ":", '"', "\\", "\u00ff", "\ud800"]) + text.slice(at + r.int(2))
  } else if (edit === 3) {
    text = text.replace(/"data_offsets":\[(\d+),(\d+)\]/, (_, a, e) => `"data_offsets":[${e},${a}]`)
  } else {
    text = text.replace(/"shape":\[[^\]]*\]/, r.pick(['"shape":[1099511627776,1099511627776]', '"shape":[-3]', '"shape":"x"', '"shape":[]', '"shape":[0]']))
  }
  const header = new TextEncoder().encode(text)
  const out = new Uint8Array(8 + header.length + (b.length - 8 - n))
  const declared = r.next() < 0.9 ? BigInt(header.length) : r.pick(HUGE_U64)
  new DataView(out.buffer).setBigUint64(0, declared, true)
  out.set(header, 8)
  out.set(b.subarray(8 + n), 8 + header.length)
  return out
}

interface Outcome {
  parsed: number
  rejected: number
  slowestMs: number
}

/** Runs `iterations` mutants through `parse`; anything thrown other than CheckpointError fails the test. */
function fuzz(
  name: string,
  original: Uint8Array,
  hot: number,
  iterations: number,
  seed: number,
  parse: (bytes: Uint8Array) => Float32Array[],
  textMutation?: (b: Uint8Array, r: Rng) => Uint8Array,
): Outcome {
  const r = rngFrom(seed)
  const mutators = Object.entries(byteMutations)
  const outcome: Outcome = { parsed: 0, rejected: 0, slowestMs: 0 }
  const rssBefore = process.memoryUsage().rss
  for (let i = 0; i < iterations; i++) {
    const [kind, mutate] = textMutation && r.next() < 0.4 ? ["headerText", textMutation] : r.pick(mutators)
    // Stack 1–3 mutations so that damage can compound.
    let bytes = original
    for (let k = 1 + r.int(3); k > 0; k--) bytes = (mutate as (b: Uint8Array, r: Rng, hot: number) => Uint8Array)(bytes, r, Math.min(hot, bytes.length || 1))
    const started = performance.now()
    try {
      const outputs = parse(bytes)
      const produced = outputs.reduce((s, t) => s + t.byteLength, 0)
      // f32 output is at most ~7× the bytes it came from (Q4_0 blocks: 18 bytes → 32 floats).
      if (produced > 8 * bytes.length + 64) expect.fail(`${name} #${i} (${kind}): ${produced} bytes of tensors from a ${bytes.length}-byte file`)
      outcome.parsed++
    } catch (e) {
      if (!(e instanceof CheckpointError))
        expect.fail(`${name} #${i} (${kind}): threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`)
      expect(e.message.startsWith(name)).toBe(true)
      outcome.rejected++
    }
    outcome.slowestMs = Math.max(outcome.slowestMs, performance.now() - started)
  }
  expect(outcome.slowestMs, `${name}: slowest mutant`).toBeLessThan(2000)
  expect(process.memoryUsage().rss - rssBefore, `${name}: memory growth`).toBeLessThan(512 * 2 ** 20)
  return outcome
}

describe("fuzzed checkpoints parse or fail with CheckpointError", () => {
  it("safetensors: 3000 mutants of a file written by Python safetensors", async () => {
    const original = new Uint8Array(await readFile(fixture("torch-tensors.safetensors")))
    const headerEnd = 8 + Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true))
    const outcome = fuzz("fuzz.safetensors", original, headerEnd, 3000, 1, (b) =>
      [...parseSafetensors(b, "fuzz.safetensors").tensors.values()].map((t) => t.data),
    mutateSafetensorsHeader)
    // Both outcomes must actually occur, or the mutations are not exercising the validator.
    expect(outcome.rejected).toBeGreaterThan(1000)
    expect(outcome.parsed).toBeGreaterThan(50)
  })

  it("GGUF: 3000 mutants of a GGUFWriter file with quantized tensors", async () => {
    const original = new Uint8Array(await readFile(fixture("quants.gguf")))
    const dataStart = original.length - 1024 // the tensor data is the last ~1 KB; the rest is header
    const outcome = fuzz("fuzz.gguf", original, dataStart, 3000, 2, (b) =>
      [...parseGgufTensors(b, "fuzz.gguf").values()].map((t) => t.data),
    )
    expect(outcome.rejected).toBeGreaterThan(1000)
    expect(outcome.parsed).toBeGreaterThan(50)
  })

  it("GGUF: 1000 mutants of a Llama (config, names, shapes, q/k permutation)", async () => {
    const original = new Uint8Array(await readFile(fixture("tiny-llama.gguf")))
    const outcome = fuzz("fuzz-llama.gguf", original, 1400, 1000, 3, (b) =>
      [...parseGguf(b, "fuzz-llama.gguf").tensors.values()].map((t) => t.data),
    )
    expect(outcome.rejected).toBeGreaterThan(300)
    expect(outcome.parsed).toBeGreaterThan(20)
  })
})

describe("fuzzed checkpoint files on disk", () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bdvax-fuzz-"))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("200 mutants each through the file readers", async () => {
    const r = rngFrom(4)
    for (const [name, read] of [
      ["torch-tensors.safetensors", (p: string) => readSafetensors(p)],
      ["tiny-llama.gguf", (p: string) => readGguf(p)],
    ] as const) {
      const original = new Uint8Array(await readFile(fixture(name)))
      for (let i = 0; i < 200; i++) {
        const [kind, mutate] = r.pick(Object.entries(byteMutations))
        const path = join(dir, `${i}-${name}`)
        await writeFile(path, mutate(original, r, Math.min(1400, original.length)))
        try {
          await read(path)
        } catch (e) {
          if (!(e instanceof CheckpointError)) expect.fail(`${name} #${i} (${kind}): threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`)
          expect((e as CheckpointError).file).toBe(path)
        }
        await rm(path)
      }
    }
  })
})
