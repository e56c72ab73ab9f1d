import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { CheckpointError, MissingFileError } from "../src/errors.js"
import { GGML_TYPE } from "../src/gguf-dequant.js"
import { ggufToHfName, hfToGgufName, permuteQK, unpermuteQK } from "../src/gguf-names.js"
import { openGguf, parseGguf, parseGgufHeader, parseGgufTensors, readGguf, readGgufMetadata } from "../src/gguf.js"
import { parameterNames } from "../src/model-config.js"
import { readSafetensors } from "../src/safetensors.js"

/**
 * GGUF against the reference implementations (fixtures from tests/llm-formats/gen_format_fixtures.py):
 * dequantized values must equal gguf-py's `gguf.quants.dequantize` exactly, and a small Llama converted the
 * llama.cpp way must load to exactly the tensors and config transformers' GGUF loader produces. Names, the q/k
 * row permutation and malformed headers are checked on hand-built files.
 */
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/formats/${name}`, import.meta.url))
const expectedValue = (v: number | string) => (v === "inf" ? Infinity : v === "-inf" ? -Infinity : v === "nan" ? NaN : (v as number))

function expectExactly(actual: Float32Array, expected: readonly (number | string)[], what: string) {
  expect(actual.length, `${what}: length`).toBe(expected.length)
  for (let i = 0; i < expected.length; i++)
    if (!Object.is(actual[i], expectedValue(expected[i]))) expect.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`)
}

// ---------------------------------------------------------------------------------------------------------
// A minimal GGUF writer for hand-built files (value types as in the spec; arrays as [elementType, items]).

const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STR: 8, ARR: 9, U64: 10, I64: 11, F64: 12 }
type Kv = [key: string, type: number, value: unknown]
interface TensorSpec {
  name: string
  /** ggml order: ne[0] is the fastest dimension. */
  ne: number[]
  type: number
  data: Uint8Array
  /** Override of the relative data offset (default: packed with alignment). */
  offset?: number
}

class Bytes {
  private chunks: Uint8Array[] = []
  private size = 0
  u8(v: number) { return this.raw(Uint8Array.of(v & 0xff)) }
  raw(b: Uint8Array) { this.chunks.push(b); this.size += b.byteLength; return this }
  num(v: number | bigint, size: number, setter: keyof DataView) {
    const b = new Uint8Array(size)
    ;(new DataView(b.buffer)[setter] as (o: number, v: number | bigint, le: boolean) => void)(0, v as never, true)
    return this.raw(b)
  }
  u32(v: number) { return this.num(v, 4, "setUint32") }
  u64(v: number | bigint) { return this.num(BigInt(v), 8, "setBigUint64") }
  str(s: string) { const b = new TextEncoder().encode(s); return this.u64(b.length).raw(b) }
  value(type: number, v: unknown): this {
    switch (type) {
      case T.U8: return this.u8(v as number)
      case T.I8: return this.num(v as number, 1, "setInt8")
      case T.U16: return this.num(v as number, 2, "setUint16")
      case T.I16: return this.num(v as number, 2, "setInt16")
      case T.U32: return this.u32(v as number)
      case T.I32: return this.num(v as number, 4, "setInt32")
      case T.F32: return this.num(v as number, 4, "setFloat32")
      case T.BOOL: return this.u8(v ? 1 : 0)
      case T.STR: return this.str(v as string)
      case T.U64: return this.u64(v as number)
      case T.I64: return this.num(BigInt(v as number), 8, "setBigInt64")
      case T.F64: return this.num(v as number, 8, "setFloat64")
      case T.ARR: {
        const [elementType, items] = v as [number, unknown[]]
        this.u32(elementType).u64(items.length)
        for (const item of items) this.value(elementType, item)
        return this
      }
      default: throw new Error(`test writer: type ${type}`)
    }
  }
  pad(alignment: number) { return this.raw(new Uint8Array((alignment - (this.size % alignment)) % alignment)) }
  bytes() {
    const out = new Uint8Array(this.size)
    let at = 0
    for (const c of this.chunks) { out.set(c, at); at += c.byteLength }
    return out
  }
}

function buildGguf(kv: Kv[], tensors: TensorSpec[], opts: { version?: number; alignment?: number } = {}): Uint8Array {
  const alignment = opts.alignment ?? 32
  const b = new Bytes().raw(new TextEncoder().encode("GGUF")).u32(opts.version ?? 3).u64(tensors.length).u64(kv.length)
  for (const [key, type, value] of kv) b.str(key).u32(type).value(type, value)
  let offset = 0
  for (const t of tensors) {
    b.str(t.name).u32(t.ne.length)
    for (const d of t.ne) b.u64(d)
    b.u32(t.type).u64(t.offset ?? offset)
    offset += Math.ceil(t.data.byteLength / alignment) * alignment
  }
  b.pad(alignment)
  for (const t of tensors) b.raw(t.data).pad(alignment)
  return b.bytes()
}

const f32 = (values: ArrayLike<number>) => new Uint8Array(Float32Array.from(values).buffer)
const filled = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i))

/**
 * A 1-layer Llama (hidden 8, 2 heads of 4, 1 kv head, ffn 8, vocab 4) with F32 tensors. q_proj/k_proj row r
 * holds the value r everywhere, so the row order after loading is visible. No output.weight: tied embeddings.
 */
function tinyLlama(overrides: { kv?: Kv[]; drop?: string[]; extra?: TensorSpec[]; replace?: Record<string, Partial<TensorSpec>> } = {}) {
  const kv: Kv[] = [
    ["general.architecture", T.STR, "llama"],
    ["llama.block_count", T.U32, 1],
    ["llama.context_length", T.U32, 128],
    ["llama.embedding_length", T.U32, 8],
    ["llama.feed_forward_length", T.U32, 8],
    ["llama.attention.head_count", T.U32, 2],
    ["llama.attention.head_count_kv", T.U32, 1],
    ["llama.rope.freq_base", T.F32, 500000],
    ["llama.attention.layer_norm_rms_epsilon", T.F32, 1e-5],
    ["tokenizer.ggml.tokens", T.ARR, [T.STR, ["<unk>", "<s>", "</s>", "a"]]],
    ["tokenizer.ggml.bos_token_id", T.U32, 1],
    ["tokenizer.ggml.eos_token_id", T.U32, 2],
  ]
  const rowsLabelled = (rows: number, cols: number) => f32(filled(rows * cols, (i) => Math.floor(i / cols)))
  const tensors: TensorSpec[] = [
    { name: "token_embd.weight", ne: [8, 4], type: GGML_TYPE.F32, data: f32(filled(32, (i) => i / 10)) },
    { name: "blk.0.attn_norm.weight", ne: [8], type: GGML_TYPE.F32, data: f32(filled(8, () => 1)) },
    { name: "blk.0.attn_q.weight", ne: [8, 8], type: GGML_TYPE.F32, data: rowsLabelled(8, 8) },
    { name: "blk.0.attn_k.weight", ne: [8, 4], type: GGML_TYPE.F32, data: rowsLabelled(4, 8) },
    { name: "blk.0.attn_v.weight", ne: [8, 4], type: GGML_TYPE.F32, data: rowsLabelled(4, 8) },
    { name: "blk.0.attn_output.weight", ne: [8, 8], type: GGML_TYPE.F32, data: rowsLabelled(8, 8) },
    { name: "blk.0.ffn_norm.weight", ne: [8], type: GGML_TYPE.F32, data: f32(filled(8, () => 2)) },
    { name: "blk.0.ffn_gate.weight", ne: [8, 8], type: GGML_TYPE.F32, data: rowsLabelled(8, 8) },
    { name: "blk.0.ffn_up.weight", ne: [8, 8], type: GGML_TYPE.F32, data: rowsLabelled(8, 8) },
    { name: "blk.0.ffn_down.weight", ne: [8, 8], type: GGML_TYPE.F32, data: rowsLabelled(8, 8) },
    { name: "output_norm.weight", ne: [8], type: GGML_TYPE.F32, data: f32(filled(8, () => 3)) },
  ]
  const keptKv = kv.filter(([k]) => !overrides.drop?.includes(k)).map((e) => overrides.kv?.find(([k]) => k === e[0]) ?? e)
  const extraKv = overrides.kv?.filter(([k]) => !kv.some(([k2]) => k2 === k)) ?? []
  const keptTensors = tensors
    .filter((t) => !overrides.drop?.includes(t.name))
    .map((t) => ({ ...t, ...overrides.replace?.[t.name] }))
  return buildGguf([...keptKv, ...extraKv], [...keptTensors, ...(overrides.extra ?? [])])
}

function expectCheckpointError(run: () => unknown, pattern: RegExp, where?: string): CheckpointError {
  let error: unknown
  try {
    run()
  } catch (e) {
    error = e
  }
  expect(error, `expected a CheckpointError matching ${pattern}`).toBeInstanceOf(CheckpointError)
  const e = error as CheckpointError
  expect(e.file).toBe("hand.gguf")
  expect(e.message.startsWith("hand.gguf")).toBe(true)
  expect(e.message).toMatch(pattern)
  if (where !== undefined) {
    expect(e.tensor).toBe(where)
    expect(e.message).toContain(`(${where})`)
  }
  return e
}

// ---------------------------------------------------------------------------------------------------------

describe("dequantization against gguf-py", () => {
  it("reads every tensor of a GGUFWriter file exactly as gguf.quants.dequantize does", async () => {
    const expected = JSON.parse(await readFile(fixture("quants.expected.json"), "utf8"))
    const tensors = parseGgufTensors(new Uint8Array(await readFile(fixture("quants.gguf"))), "quants.gguf")
    const header = await readGgufMetadata(fixture("quants.gguf"))
    expect(header.version).toBe(expected.version)
    for (const [name, want] of Object.entries<{ type: string; shape: number[]; values: (number | string)[] }>(expected.tensors)) {
      const info = header.tensors.find((t) => t.name === name)!
      expect(info.typeName, name).toBe(want.type)
      expect(info.shape, name).toEqual(want.shape)
      expect(tensors.get(name)!.shape, name).toEqual(want.shape)
      expectExactly(tensors.get(name)!.data, want.values, name)
    }
    expect(new Set(header.tensors.map((t) => t.typeName))).toEqual(new Set(["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]))
  })

  it("reads metadata of every value type", async () => {
    const expected = JSON.parse(await readFile(fixture("quants.expected.json"), "utf8"))
    const { metadata } = await readGgufMetadata(fixture("quants.gguf"))
    for (const [key, want] of Object.entries(expected.metadata)) {
      const got = metadata.get(key)
      // u64 2^53 + 2 is not a double: it stays a bigint.
      expect(got, key).toEqual(key === "test.u64" ? BigInt(want as string) : want)
    }
  })
})

describe("a Llama converted the llama.cpp way, against transformers' GGUF loader", () => {
  it("gives transformers' tensors and config", async () => {
    const expected = JSON.parse(await readFile(fixture("tiny-llama.expected.json"), "utf8"))
    const reference = await readSafetensors(fixture("tiny-llama.expected.safetensors"))
    const model = await readGguf(fixture("tiny-llama.gguf"))
    const c = model.config
    for (const [key, want] of Object.entries(expected.config))
      expect((c as unknown as Record<string, unknown>)[key], key).toEqual(key === "eosTokenId" ? [want] : want)
    expect(c.ropeScaling).toEqual({ ropeType: "default" })
    expect([...model.tensors.keys()].sort()).toEqual([...reference.keys()].sort())
    expect([...model.tensors.keys()].sort()).toEqual(parameterNames(c).sort())
    for (const [name, want] of reference) {
      expect(model.tensors.get(name)!.shape, name).toEqual(want.shape)
      expectExactly(model.tensors.get(name)!.data, [...want.data], name)
    }
    // The fixture mixes storage types, including a Q8_0 q_proj (permuted before quantization).
    const header = await readGgufMetadata(fixture("tiny-llama.gguf"))
    for (const [name, type] of Object.entries<string>(expected.types))
      expect(header.tensors.find((t) => t.name === name)!.typeName).toBe(type)
  })

  it("reads single tensors lazily, and in memory the same as from disk", async () => {
    const reader = await openGguf(fixture("tiny-llama.gguf"))
    try {
      const all = parseGguf(new Uint8Array(await readFile(fixture("tiny-llama.gguf"))), "tiny-llama.gguf")
      const q = await reader.read("model.layers.1.self_attn.q_proj.weight")
      expect([...q]).toEqual([...all.tensors.get("model.layers.1.self_attn.q_proj.weight")!.data])
      await expect(reader.read("model.layers.7.mlp.up_proj.weight")).rejects.toThrow(/\(model\.layers\.7\.mlp\.up_proj\.weight\)/)
    } finally {
      await reader.close()
    }
    await expect(readGguf(fixture("absent.gguf"))).rejects.toBeInstanceOf(MissingFileError)
  })
})

describe("names and the q/k row permutation", () => {
  it("maps llama.cpp names to Hugging Face names and back", () => {
    const pairs: [string, string][] = [
      ["token_embd.weight", "model.embed_tokens.weight"],
      ["output_norm.weight", "model.norm.weight"],
      ["output.weight", "lm_head.weight"],
      ["blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"],
      ["blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"],
      ["blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"],
      ["blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"],
      ["blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"],
      ["blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"],
      ["blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"],
      ["blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"],
      ["blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"],
      ["blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"],
    ]
    for (const [gguf, hf] of pairs) {
      expect(ggufToHfName(gguf)).toBe(hf)
      expect(hfToGgufName(hf)).toBe(gguf)
    }
    for (const bad of ["rope_freqs.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.0.attn_qkv.weight", "output"])
      expect(ggufToHfName(bad), bad).toBeUndefined()
  })

  it("undoes llama.cpp's per-head interleaving of rows", () => {
    // heads = 2, headDim = 4: HF rows (h, j·2 + i) are stored at llama.cpp rows (h, 2i + j).
    const hfRows = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7])
    expect([...permuteQK(hfRows, 8, 2)]).toEqual([0, 2, 1, 3, 4, 6, 5, 7])
    expect([...unpermuteQK(Float32Array.from([0, 2, 1, 3, 4, 6, 5, 7]), 8, 2)]).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
    // headDim 6: rows 0..5 of one head → 0, 3, 1, 4, 2, 5; whole rows (2 columns here) move together.
    const twoColumns = Float32Array.from([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5])
    expect([...permuteQK(twoColumns, 6, 1)]).toEqual([0, 0.5, 3, 3.5, 1, 1.5, 4, 4.5, 2, 2.5, 5, 5.5])
    expect([...unpermuteQK(permuteQK(twoColumns, 6, 1), 6, 1)]).toEqual([...twoColumns])
    expect(() => unpermuteQK(new Float32Array(6), 6, 2)).toThrow(RangeError)
  })

  it("is the permutation that turns rotate-half RoPE into llama.cpp's adjacent-pair RoPE", () => {
    // For any head vector q: permute(rotateHalf(q)) == rotateAdjacentPairs(permute(q)). This is why the
    // converter permutes, and pins the direction of the permutation independently of any converter code.
    const headDim = 8
    const half = headDim / 2
    const theta = (i: number, position: number) => position * 10000 ** ((-2 * i) / headDim)
    const rotateHalf = (q: Float32Array, p: number) =>
      Float32Array.from(q, (_, d) => {
        const i = d % half
        const [c, s] = [Math.cos(theta(i, p)), Math.sin(theta(i, p))]
        return d < half ? q[d] * c - q[d + half] * s : q[d] * c + q[d - half] * s
      })
    const rotateAdjacent = (q: Float32Array, p: number) =>
      Float32Array.from(q, (_, d) => {
        const i = d >> 1
        const [c, s] = [Math.cos(theta(i, p)), Math.sin(theta(i, p))]
        return d % 2 === 0 ? q[d] * c - q[d + 1] * s : q[d] * c + q[d - 1] * s
      })
    const q = Float32Array.from({ length: headDim }, (_, d) => Math.sin(3 * d + 1))
    for (const position of [1, 5, 17]) {
      const viaHf = permuteQK(rotateHalf(q, position), headDim, 1)
      const viaLlamaCpp = rotateAdjacent(permuteQK(q, headDim, 1), position)
      for (let d = 0; d < headDim; d++) expect(viaLlamaCpp[d]).toBeCloseTo(viaHf[d], 6)
    }
  })

  it("un-permutes q with the attention heads and k with the key/value heads", () => {
    const model = parseGguf(tinyLlama(), "hand.gguf")
    const rowValues = (name: string) => {
      const t = model.tensors.get(name)!
      return Array.from({ length: t.shape[0] }, (_, r) => t.data[r * t.shape[1]])
    }
    expect(rowValues("model.layers.0.self_attn.q_proj.weight")).toEqual([0, 2, 1, 3, 4, 6, 5, 7])
    expect(rowValues("model.layers.0.self_attn.k_proj.weight")).toEqual([0, 2, 1, 3])
    expect(rowValues("model.layers.0.self_attn.v_proj.weight")).toEqual([0, 1, 2, 3])
    expect(model.tensors.get("model.layers.0.self_attn.q_proj.weight")!.shape).toEqual([8, 8])
    expect(model.tensors.get("model.layers.0.self_attn.k_proj.weight")!.shape).toEqual([4, 8])
  })
})

describe("config from metadata", () => {
  it("builds the ModelConfig, with tied embeddings when output.weight is absent", () => {
    const { config, tensors, metadata } = parseGguf(tinyLlama(), "hand.gguf")
    expect(config).toEqual({
      architecture: "llama",
      vocabSize: 4,
      hiddenSize: 8,
      intermediateSize: 8,
      numHiddenLayers: 1,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
      headDim: 4,
      rmsNormEps: Math.fround(1e-5),
      ropeTheta: 500000,
      ropeScaling: { ropeType: "default" },
      maxPositionEmbeddings: 128,
      tieWordEmbeddings: true,
      slidingWindow: null,
      attentionBias: false,
      mlpBias: false,
      initializerRange: 0.02,
      bosTokenId: 1,
      eosTokenId: [2],
      padTokenId: null,
      hiddenAct: "silu",
    })
    expect(tensors.has("lm_head.weight")).toBe(false)
    expect(metadata.get("tokenizer.ggml.tokens")).toEqual(["<unk>", "<s>", "</s>", "a"])
  })

  it("reads optional keys: kv heads default, vocab_size, linear rope scaling, untied output", () => {
    const bytes = tinyLlama({
      drop: ["llama.attention.head_count_kv", "blk.0.attn_k.weight", "blk.0.attn_v.weight"],
      kv: [
        ["llama.vocab_size", T.U32, 4],
        ["llama.rope.scaling.type", T.STR, "linear"],
        ["llama.rope.scaling.factor", T.F32, 4],
      ],
      extra: [
        { name: "output.weight", ne: [8, 4], type: GGML_TYPE.F32, data: f32(filled(32, (i) => -i)) },
        { name: "blk.0.attn_k.weight", ne: [8, 8], type: GGML_TYPE.F32, data: f32(filled(64, (i) => i)) },
        { name: "blk.0.attn_v.weight", ne: [8, 8], type: GGML_TYPE.F32, data: f32(filled(64, (i) => i)) },
      ],
    })
    const { config, tensors } = parseGguf(bytes, "hand.gguf")
    expect(config.numKeyValueHeads).toBe(2)
    expect(config.ropeScaling).toEqual({ ropeType: "linear", factor: 4 })
    expect(config.tieWordEmbeddings).toBe(false)
    expect([...tensors.get("lm_head.weight")!.data.slice(0, 3)]).toEqual([-0, -1, -2])
  })

  it.each<[string, Parameters<typeof tinyLlama>[0], RegExp, string]>([
    ["missing block count", { drop: ["llama.block_count"] }, /missing/, "llama.block_count"],
    ["non-integer head count", { kv: [["llama.attention.head_count", T.F32, 1.5]] }, /expected a positive integer, got 1.5/, "llama.attention.head_count"],
    ["kv heads not dividing heads", { kv: [["llama.attention.head_count_kv", T.U32, 3]] }, /does not divide head_count 2/, "llama.attention.head_count_kv"],
    ["another architecture", { kv: [["general.architecture", T.STR, "qwen2"]] }, /"qwen2" is not supported/, "general.architecture"],
    ["unsupported rope scaling", { kv: [["llama.rope.scaling.type", T.STR, "yarn"]] }, /"yarn" is not supported/, "llama.rope.scaling.type"],
    ["llama 3 frequency factors", { extra: [{ name: "rope_freqs.weight", ne: [2], type: 0, data: f32([1, 2]) }] }, /not supported/, "rope_freqs.weight"],
    ["unknown tensor", { extra: [{ name: "blk.0.attn_qkv.weight", ne: [8], type: 0, data: f32(filled(8, () => 0)) }] }, /not a Llama parameter/, "blk.0.attn_qkv.weight"],
    ["missing tensor", { drop: ["blk.0.ffn_down.weight"] }, /missing tensor/, "blk.0.ffn_down.weight"],
    ["wrong shape", { replace: { "blk.0.ffn_up.weight": { ne: [4, 16] } } }, /shape \[16, 4\] but the config implies \[8, 8\]/, "blk.0.ffn_up.weight"],
    ["unsupported quantization", { replace: { "blk.0.ffn_up.weight": { ne: [256, 1], type: 12, data: new Uint8Array(144) } } }, /Q4_K cannot be dequantized/, "blk.0.ffn_up.weight"],
  ])("%s → CheckpointError naming it", (_, overrides, pattern, where) => {
    expectCheckpointError(() => parseGguf(tinyLlama(overrides), "hand.gguf"), pattern, where)
  })
})

describe("malformed headers", () => {
  const ok = () => buildGguf([["general.architecture", T.STR, "x"]], [{ name: "t", ne: [4], type: 0, data: f32([1, 2, 3, 4]) }])
  /** Overwrites bytes at `at` with a little-endian u64 (or u32). */
  const patched = (bytes: Uint8Array, at: number, value: bigint, size: 4 | 8 = 8) => {
    const out = bytes.slice()
    const view = new DataView(out.buffer)
    if (size === 8) view.setBigUint64(at, value, true)
    else view.setUint32(at, Number(value), true)
    return out
  }
  // Layout of ok(): magic 0, version 4, tensor count 8, kv count 16, key length 24, key 32..51, value type 52,
  // string length 56, "x" 64, tensor name length 65, "t" 73, n_dims 74, ne[0] 78, type 86, offset 90.
  it.each<[string, () => Uint8Array, RegExp, string?]>([
    ["empty file", () => new Uint8Array(0), /no "GGUF" magic/],
    ["bad magic", () => new TextEncoder().encode("GGML and more bytes"), /no "GGUF" magic/],
    ["version 1", () => patched(ok(), 4, 1n, 4), /version 1 is not supported/],
    ["big-endian", () => patched(ok(), 4, 0x03000000n, 4), /big-endian/],
    ["huge tensor count", () => patched(ok(), 8, 1n << 60n), /tensor count 1152921504606846976 is larger than the rest of the file/],
    ["huge kv count", () => patched(ok(), 16, 0xffffffffffffffffn), /metadata key\/value count .* is larger/],
    ["huge key length", () => patched(ok(), 24, 1n << 40n), /key length 1099511627776 is larger than the rest of the file/],
    ["huge string length", () => patched(ok(), 56, 1n << 62n), /string length .* is larger/, "general.architecture"],
    ["unknown value type", () => patched(ok(), 52, 13n, 4), /unknown metadata value type 13/, "general.architecture"],
    ["five dimensions", () => patched(ok(), 74, 5n, 4), /5 dimensions/, "t"],
    ["unknown ggml type", () => patched(ok(), 86, 99n, 4), /unknown ggml type 99/, "t"],
    ["misaligned offset", () => patched(ok(), 90, 4n), /not a multiple of the alignment 32/, "t"],
    ["offset past the end", () => patched(ok(), 90, 1n << 40n), /past the end of the file/, "t"],
    ["tensor larger than the file", () => patched(ok(), 78, 1n << 50n), /needs more bytes than the file has/, "t"],
    ["truncated data", () => ok().subarray(0, ok().length - 20), /runs past the end of the file/, "t"],
    ["truncated header", () => ok().subarray(0, 70), /file ends at byte 70/],
  ])("%s", (_, bytes, pattern, where) => {
    expectCheckpointError(() => parseGgufHeader(bytes(), "hand.gguf"), pattern, where)
  })

  it.each<[string, Kv[], TensorSpec[], RegExp, string?]>([
    ["duplicate key", [["a", T.U8, 1], ["a", T.U8, 2]], [], /duplicate metadata key/, "a"],
    ["alignment not a power of two", [["general.alignment", T.U32, 24]], [], /power of two, got 24/, "general.alignment"],
    ["alignment of the wrong type", [["general.alignment", T.U64, 32]], [], /must be a u32/, "general.alignment"],
    ["arrays nested too deeply", [["deep", T.ARR, [T.ARR, [[T.ARR, [[T.ARR, [[T.ARR, [[T.U8, [1]]]]]]]]]]]], [], /nested deeper than 4/, "deep"],
    ["unknown array element type", [["arr", T.ARR, [40, []]]], [], /unknown array element type 40/, "arr"],
    ["duplicate tensor", [], [{ name: "t", ne: [1], type: 0, data: f32([1]) }, { name: "t", ne: [1], type: 0, data: f32([1]), offset: 32 }], /duplicate tensor name/, "t"],
    ["overlapping tensors", [], [{ name: "a", ne: [16], type: 0, data: f32(new Array(16).fill(0)) }, { name: "b", ne: [8], type: 0, data: f32(new Array(8).fill(0)), offset: 32 }], /overlaps tensor "a"/, "b"],
    ["block-misaligned row", [], [{ name: "q", ne: [16, 2], type: GGML_TYPE.Q8_0, data: new Uint8Array(34) }], /not a multiple of the Q8_0 block size 32/, "q"],
  ])("%s", (_, kv, tensors, pattern, where) => {
    expectCheckpointError(() => parseGgufHeader(buildGguf(kv, tensors), "hand.gguf"), pattern, where)
  })

  it("reads an empty GGUF and honours general.alignment", () => {
    const header = parseGgufHeader(buildGguf([], []), "hand.gguf")
    expect(header.tensors).toEqual([])
    expect(header.metadata.size).toBe(0)
    expect(header.alignment).toBe(32)
    const aligned = parseGgufHeader(buildGguf([["general.alignment", T.U32, 64]], [{ name: "t", ne: [2], type: 0, data: f32([1, 2]) }], { alignment: 64 }), "hand.gguf")
    expect(aligned.dataOffset % 64).toBe(0)
    expect(aligned.alignment).toBe(64)
  })

  it("reads a header longer than the first 16 MB read from disk", async () => {
    const dir = await mkdtemp(join(tmpdir(), "bdvax-gguf-"))
    try {
      const big = "x".repeat(9_000_000)
      const bytes = buildGguf([["a", T.STR, big], ["b", T.STR, big], ["c", T.U32, 7]], [{ name: "t", ne: [2], type: 0, data: f32([5, 6]) }])
      await writeFile(join(dir, "big.gguf"), bytes)
      const header = await readGgufMetadata(join(dir, "big.gguf"))
      expect((header.metadata.get("b") as string).length).toBe(9_000_000)
      expect(header.metadata.get("c")).toBe(7)
      expect(header.tensors[0].offset).toBe(header.dataOffset)
      await writeFile(join(dir, "cut.gguf"), bytes.subarray(0, 17_000_000))
      await expect(readGgufMetadata(join(dir, "cut.gguf"))).rejects.toThrow(/cut\.gguf \(b\): string length 9000000 is larger than the rest of the file/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
