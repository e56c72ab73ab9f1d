import { mkdtemp, readdir, readFile, rm, writeFile, mkdir, copyFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CheckpointError, MissingFileError } from "../src/errors.js"
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToBf16Bits, f32ToF16, f32ToF16Bits } from "../src/half.js"
import {
  encodeSafetensors,
  openSafetensors,
  parseSafetensors,
  readSafetensors,
  readSafetensorsFolder,
  writeSafetensors,
} from "../src/safetensors.js"

/**
 * safetensors against the reference implementation: a file written by the Python `safetensors` library (see
 * tests/llm-formats/gen_format_fixtures.py) must read back to the values torch holds, our writer must
 * round-trip, and every malformed header must fail with a CheckpointError naming file and tensor.
 * The f16/bf16 conversions are checked against Node's native Float16Array and an exhaustive bf16 rounding.
 */
const fixtures = fileURLToPath(new URL("./fixtures/formats/", import.meta.url))

/** Expected values from the JSON fixtures: finite numbers, or "inf" / "-inf" / "nan". */
const expectedValue = (v: number | string) => (v === "inf" ? Infinity : v === "-inf" ? -Infinity : v === "nan" ? NaN : (v as number))

/** Exact equality, element by element (NaN equals NaN, +0 differs from −0), reporting the first mismatch. */
function expectExactly(actual: Float32Array | readonly number[], expected: readonly (number | string)[], what: string) {
  expect(actual.length, `${what}: length`).toBe(expected.length)
  for (let i = 0; i < expected.length; i++) {
    const want = expectedValue(expected[i])
    if (!Object.is(actual[i], want)) expect.fail(`${what}[${i}]: got ${actual[i]}, expected ${want}`)
  }
}

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bdvax-safetensors-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("half-precision conversions", () => {
  it("decodes all 65536 f16 patterns exactly as Float16Array does", () => {
    const bits = new Uint16Array(65536).map((_, i) => i)
    const ours = f16ToF32(bits)
    const native = new Float16Array(bits.buffer)
    for (let i = 0; i < 65536; i++) if (!Object.is(ours[i], native[i])) expect.fail(`f16 0x${i.toString(16)}`)
  })

  it("rounds f32 → f16 to nearest even, as Math.f16round does", () => {
    const values = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e6, -1e6, 6e-8, 2.98e-8, 2.9802322387695312e-8, 5.96e-8,
      1e-10, 6.103515625e-5, 6.1e-5, 1.0009765625, 1.00048828125, 1.00146484375, Infinity, -Infinity]
    let state = 12345
    for (let i = 0; i < 200_000; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0
      const f32 = new Float32Array(new Uint32Array([state]).buffer)[0] // every f32 bit pattern is fair game
      values.push(f32)
    }
    for (const v of values) {
      const ours = new Float16Array(new Uint16Array([f32ToF16Bits(v)]).buffer)[0]
      const want = Math.f16round(Math.fround(v))
      if (!Object.is(ours, want)) expect.fail(`f16 of ${v}: got ${ours}, expected ${want}`)
    }
    expect(Number.isNaN(f16ToF32(f32ToF16(new Float32Array([NaN])))[0])).toBe(true)
  })

  it("rounds f32 → bf16 to nearest even (checked against the two neighbouring bf16 values)", () => {
    const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]
    const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0]
    let state = 777
    for (let i = 0; i < 200_000; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0
      const x = fromBits(state)
      if (!Number.isFinite(x)) continue
      // Reference: the nearest of the bf16 values just below and just above (ties to the even pattern).
      const lo = bitsOf(x) >>> 16
      const hi = lo + 1
      const dLo = Math.abs(x - fromBits(lo << 16))
      // Past the largest finite bf16, IEEE rounding treats infinity as the next value, 2^128.
      const hiValue = (hi & 0x7f80) === 0x7f80 ? Math.sign(x) * 2 ** 128 : fromBits((hi & 0xffff) << 16)
      const dHi = Math.abs(hiValue - x)
      const want = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi
      const got = f32ToBf16Bits(x)
      if (got !== (want & 0xffff)) expect.fail(`bf16 of ${x}: 0x${got.toString(16)} vs 0x${want.toString(16)}`)
    }
    expect(bf16ToF32(f32ToBf16(new Float32Array([1, -2.5, 3.39e38, 3.4e38, Infinity]))).join()).toBe("1,-2.5,3.3895313892515355e+38,Infinity,Infinity")
    expect(Number.isNaN(bf16ToF32(f32ToBf16(new Float32Array([NaN])))[0])).toBe(true)
  })
})

describe("reading files written by Python safetensors", () => {
  it("reads every dtype with torch's values, metadata included", async () => {
    const expected = JSON.parse(await readFile(join(fixtures, "torch-tensors.expected.json"), "utf8"))
    const reader = await openSafetensors(join(fixtures, "torch-tensors.safetensors"))
    try {
      expect(reader.metadata).toEqual(expected.metadata)
      expect([...reader.tensors.keys()].sort()).toEqual(Object.keys(expected.tensors).sort())
      for (const [name, want] of Object.entries<{ dtype: string; shape: number[]; values: (number | string)[] }>(expected.tensors)) {
        const t = await reader.load(name)
        expect(t.dtype, name).toBe(want.dtype)
        expect(t.shape, name).toEqual(want.shape)
        expectExactly(t.data, want.values, name)
      }
    } finally {
      await reader.close()
    }
  })

  it("reads a sharded checkpoint through model.safetensors.index.json", async () => {
    const expected = JSON.parse(await readFile(join(fixtures, "sharded.expected.json"), "utf8"))
    const tensors = await readSafetensorsFolder(join(fixtures, "sharded"))
    expect([...tensors.keys()].sort()).toEqual(Object.keys(expected).sort())
    for (const [name, want] of Object.entries<{ shape: number[]; values: number[] }>(expected)) {
      expect(tensors.get(name)!.shape).toEqual(want.shape)
      expectExactly(tensors.get(name)!.data, want.values, name)
    }
    expect(tensors.get("model.norm.weight")!.dtype).toBe("BF16")
    expect(tensors.get("lm_head.weight")!.dtype).toBe("F16")
  })
})

describe("writing", () => {
  const values = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i + 1) * 10 ** ((i % 7) - 3))

  it("round-trips F32 exactly and F16/BF16 with round-to-nearest-even", async () => {
    const path = join(dir, "roundtrip.safetensors")
    await writeSafetensors(
      path,
      {
        "b.f16": { shape: [4, 6], data: values, dtype: "F16" },
        "a.f32": { shape: [2, 3, 4], data: values },
        "c.bf16": { shape: [24], data: values, dtype: "BF16" },
        scalar: { shape: [], data: new Float32Array([7]) },
        empty: { shape: [3, 0], data: new Float32Array(0) },
      },
      { format: "pt", purpose: "test" },
    )
    const reader = await openSafetensors(path)
    try {
      expect(reader.metadata).toEqual({ format: "pt", purpose: "test" })
      const a = await reader.load("a.f32")
      expect(a.shape).toEqual([2, 3, 4])
      expect([...a.data]).toEqual([...values])
      const h = await reader.load("b.f16")
      expect(h.dtype).toBe("F16")
      expect([...h.data]).toEqual([...values].map((v) => Math.f16round(v)))
      const b = await reader.read("c.bf16")
      expect([...b]).toEqual([...values].map((v) => bf16ToF32(new Uint16Array([f32ToBf16Bits(v)]))[0]))
      expect([...(await reader.read("scalar"))]).toEqual([7])
      expect((await reader.load("empty")).shape).toEqual([3, 0])
      await expect(reader.read("missing.weight")).rejects.toThrow(/roundtrip\.safetensors \(missing\.weight\)/)
    } finally {
      await reader.close()
    }
  })

  it("lays the file out as the reference writer does and leaves no temporary file", async () => {
    const path = join(dir, "layout.safetensors")
    await writeSafetensors(path, { z: { shape: [3], data: new Float32Array(3), dtype: "F16" }, y: { shape: [1], data: new Float32Array(1) } })
    expect(await readdir(dir)).not.toContainEqual(expect.stringContaining(".tmp-"))
    const bytes = new Uint8Array(await readFile(path))
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect(n % 8).toBe(0)
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n))
    expect(text.trimEnd().length).toBeLessThan(n) // space padding
    expect(text.endsWith(" ")).toBe(true)
    const header = JSON.parse(text)
    // 4-byte tensors first, then 2-byte ones, offsets ascending and tiling the data buffer.
    expect(Object.keys(header)).toEqual(["y", "z"])
    expect(header.y.data_offsets).toEqual([0, 4])
    expect(header.z.data_offsets).toEqual([4, 10])
    expect(bytes.byteLength).toBe(8 + n + 10)
  })

  it("rejects inconsistent tensors before touching the file", async () => {
    const path = join(dir, "never.safetensors")
    await expect(writeSafetensors(path, { w: { shape: [2, 2], data: new Float32Array(3) } })).rejects.toThrow(CheckpointError)
    await expect(writeSafetensors(path, { w: { shape: [2, 2], data: new Float32Array(3) } })).rejects.toThrow(/never\.safetensors \(w\)/)
    expect(await readdir(dir)).not.toContain("never.safetensors")
    await expect(writeSafetensors(join(dir, "no-such-dir", "x.safetensors"), {})).rejects.toThrow()
  })

  it("encodes in memory the same bytes it writes", async () => {
    const tensors = { w: { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]), dtype: "BF16" as const } }
    const path = join(dir, "same.safetensors")
    await writeSafetensors(path, tensors, { a: "b" })
    expect(new Uint8Array(await readFile(path))).toEqual(encodeSafetensors(tensors, { a: "b" }))
  })
})

describe("model folders", () => {
  it("reads a single model.safetensors and reports a folder with neither file", async () => {
    const single = join(dir, "single")
    await mkdir(single)
    await writeSafetensors(join(single, "model.safetensors"), { w: { shape: [1], data: new Float32Array([3]) } })
    expect([...(await readSafetensorsFolder(single)).get("w")!.data]).toEqual([3])
    const empty = join(dir, "empty")
    await mkdir(empty)
    await expect(readSafetensorsFolder(empty)).rejects.toBeInstanceOf(MissingFileError)
  })

  async function folderWithIndex(name: string, weightMap: unknown) {
    const folder = join(dir, name)
    await mkdir(folder)
    for (const shard of await readdir(join(fixtures, "sharded")))
      if (shard.endsWith(".safetensors")) await copyFile(join(fixtures, "sharded", shard), join(folder, shard))
    await writeFile(join(folder, "model.safetensors.index.json"), JSON.stringify({ weight_map: weightMap }))
    return folder
  }

  it("rejects a tensor the index places in a shard that lacks it", async () => {
    const folder = await folderWithIndex("wrong-shard", { "lm_head.weight": "model-00001-of-00002.safetensors" })
    await expect(readSafetensorsFolder(folder)).rejects.toThrow(/model-00001-of-00002\.safetensors \(lm_head\.weight\)/)
  })

  it("refuses shards outside the model folder and a missing shard", async () => {
    const outside = await folderWithIndex("escape", { w: "../../etc/passwd" })
    await expect(readSafetensorsFolder(outside)).rejects.toThrow(/outside the model folder/)
    const missing = await folderWithIndex("missing-shard", { w: "model-00009.safetensors" })
    await expect(readSafetensorsFolder(missing)).rejects.toBeInstanceOf(MissingFileError)
    const notJson = join(dir, "bad-index")
    await mkdir(notJson)
    await writeFile(join(notJson, "model.safetensors.index.json"), "{")
    await expect(readSafetensorsFolder(notJson)).rejects.toBeInstanceOf(CheckpointError)
  })
})

describe("malformed files", () => {
  /** A safetensors file with the given header (object or raw text) and data buffer. */
  function fileWith(header: unknown, data = new Uint8Array(0), declaredLength?: bigint): Uint8Array {
    const text = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header))
    const out = new Uint8Array(8 + text.byteLength + data.byteLength)
    new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(text.byteLength), true)
    out.set(text, 8)
    out.set(data, 8 + text.byteLength)
    return out
  }
  const t = (dtype: unknown, shape: unknown, data_offsets: unknown) => ({ dtype, shape, data_offsets })
  const bytes8 = new Uint8Array(8)

  /** Parses and expects a CheckpointError that names the file (and the tensor, when given). */
  function expectRejected(bytes: Uint8Array, pattern: RegExp, tensor?: string) {
    let error: unknown
    try {
      parseSafetensors(bytes, "bad.safetensors")
    } catch (e) {
      error = e
    }
    expect(error, `expected a CheckpointError matching ${pattern}`).toBeInstanceOf(CheckpointError)
    const e = error as CheckpointError
    expect(e.file).toBe("bad.safetensors")
    expect(e.message).toMatch(/^bad\.safetensors/)
    expect(e.message).toMatch(pattern)
    if (tensor !== undefined) {
      expect(e.tensor).toBe(tensor)
      expect(e.message).toContain(`(${tensor})`)
    }
  }

  it.each([
    ["shorter than 8 bytes", new Uint8Array(5), /shorter than the 8-byte/],
    ["header length beyond the file", fileWith({}, undefined, 1000n), /runs past the end of the file/],
    ["absurd header length", fileWith({}, undefined, 1n << 62n), /exceeds the 100000000-byte limit/],
    ["header not JSON", fileWith("{not json"), /not valid UTF-8 JSON/],
    ["header not UTF-8", fileWith(String.fromCharCode(0xff)).map((b, i) => (i === 8 ? 0xff : b)), /not valid UTF-8/],
    ["header an array", fileWith([1, 2]), /not a JSON object/],
    ["header null", fileWith("null"), /not a JSON object/],
    ["metadata not strings", fileWith({ __metadata__: { a: 1 } }), /__metadata__ value of "a" is not a string/],
    ["trailing bytes", fileWith({}, bytes8), /8 bytes after the last tensor/],
  ])("%s", (_, bytes, pattern) => expectRejected(bytes, pattern))

  it.each([
    ["unknown dtype", t("F12", [2], [0, 8]), /unknown dtype "F12"/],
    ["dtype not a string", t(4, [2], [0, 8]), /unknown dtype 4/],
    ["negative dim", t("F32", [-2], [0, 8]), /shape \[-2\] is not a list of non-negative integers/],
    ["fractional dim", t("F32", [1.5], [0, 8]), /shape/],
    ["shape not a list", t("F32", "2", [0, 8]), /shape/],
    ["offsets of length 1", t("F32", [2], [8]), /data_offsets \[8\] is not \[begin, end\]/],
    ["offsets reversed", t("F32", [2], [8, 0]), /data_offsets/],
    ["offsets not integers", t("F32", [2], ["0", 8]), /data_offsets/],
    ["offsets out of range", t("F32", [8], [0, 32]), /run past the data buffer \(16 bytes\)/],
    ["size mismatch", t("F32", [3], [0, 8]), /needs 12 bytes, data_offsets give 8/],
    ["hostile shape", t("F32", [2 ** 52, 2 ** 52, 2 ** 52], [0, 8]), /needs more bytes than the file holds/],
  ])("tensor entry: %s", (_, entry, pattern) => expectRejected(fileWith({ w: entry }, new Uint8Array(16)), pattern, "w"))

  it("overlapping and gapped tensors", () => {
    expectRejected(fileWith({ a: t("F32", [2], [0, 8]), w: t("F32", [1], [4, 8]) }, bytes8), /overlap tensor "a"/, "w")
    expectRejected(fileWith({ a: t("F32", [1], [0, 4]), w: t("U8", [2], [6, 8]) }, bytes8), /leave a hole at byte 4/, "w")
  })

  it("the same checks apply to files on disk, including truncated ones", async () => {
    const path = join(dir, "truncated.safetensors")
    await writeFile(path, new Uint8Array([1, 2, 3]))
    await expect(readSafetensors(path)).rejects.toThrow(/truncated\.safetensors: file is 3 bytes, shorter than/)
    const good = encodeSafetensors({ w: { shape: [4], data: new Float32Array(4) } })
    await writeFile(path, good.subarray(0, good.byteLength - 1))
    await expect(readSafetensors(path)).rejects.toThrow(/truncated\.safetensors \(w\): data_offsets \[0, 16\] run past/)
    await expect(readSafetensors(join(dir, "absent.safetensors"))).rejects.toBeInstanceOf(MissingFileError)
  })
})
