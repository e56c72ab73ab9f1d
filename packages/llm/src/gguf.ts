/**
 * GGUF reader (llama.cpp's checkpoint format, versions 2 and 3, little-endian; spec: ggml/docs/gguf.md):
 *
 *   "GGUF" u32 version, u64 tensor_count, u64 kv_count
 *   kv_count × (string key, u32 value_type, value)        strings are u64 length + UTF-8 bytes
 *   tensor_count × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml_type, u64 offset)
 *   padding to general.alignment (default 32), then the tensor data; offsets are relative to its start
 *
 * ne[0] is the fastest-varying dimension, so a PyTorch shape is ne reversed. A file is untrusted input: every
 * count, length and offset is checked against the bytes that can back it before anything is allocated, so a
 * hostile file fails with a CheckpointError naming the file and the key or tensor at fault.
 *
 * API: `readGgufMetadata` (header only: metadata keys and tensor infos; what the tokenizer reads),
 * `openGguf` (lazy: config + one Hugging Face tensor per `read`), `readGguf` (everything), and `parseGguf*`
 * for bytes already in memory.
 */
import { open, type FileHandle } from "node:fs/promises"
import { checkpointError, MissingFileError } from "./errors.js"
import { canDequantize, dequantize, GGML_TYPES, ggmlTypeName } from "./gguf-dequant.js"
import { ggufToHfName, hfToGgufName, permutedProjection, unpermuteQK } from "./gguf-names.js"
import { type ModelConfig, parameterNames, parameterShape } from "./model-config.js"

/** A metadata value; 64-bit integers are numbers when exactly representable, else bigints. */
export type GgufValue = number | bigint | boolean | string | GgufValue[]

export interface GgufTensorInfo {
  /** The name in the file (llama.cpp naming). */
  readonly name: string
  readonly ggmlType: number
  readonly typeName: string
  /** PyTorch order (slowest dimension first): ne reversed. */
  readonly shape: readonly number[]
  readonly elementCount: number
  /** Absolute byte position in the file. */
  readonly offset: number
  readonly byteLength: number
}

export interface GgufHeader {
  readonly file: string
  readonly version: number
  readonly metadata: ReadonlyMap<string, GgufValue>
  readonly tensors: readonly GgufTensorInfo[]
  readonly alignment: number
  /** Absolute position of the tensor data section. */
  readonly dataOffset: number
}

export interface LoadedGgufTensor {
  readonly shape: number[]
  readonly data: Float32Array
}

/** Limits no real checkpoint comes near; they keep a hostile header from exhausting memory. */
export const GGUF_LIMITS = {
  /** Bytes of metadata + tensor infos. Llama 3's 128k-token vocabulary with merges is about 10 MB. */
  headerBytes: 1 << 30,
  stringBytes: 1 << 24,
  arrayLength: 1 << 24,
  arrayNesting: 4,
} as const

const VALUE_TYPE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9,
  UINT64: 10, INT64: 11, FLOAT64: 12,
} as const
const FIXED_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 }
/** Smallest encoding of one array element of a variable-size type: a string is its u64 length at least. */
const MIN_SIZE: Record<number, number> = { ...FIXED_SIZE, 8: 8, 9: 12 }

/** Thrown inside parsing when the bytes held so far end before the file does; the caller reads more. */
class NeedMoreBytes {
  constructor(readonly needed: number) {}
}

/** A bounds-checked little-endian reader over the first bytes of a file of `fileSize` bytes. */
class Cursor {
  pos = 0
  /** The key or tensor being read, for error messages. */
  context: string | undefined
  private readonly view: DataView

  constructor(
    private readonly bytes: Uint8Array,
    readonly fileSize: number,
    readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  fail(message: string): never {
    throw checkpointError(this.file, message, this.context)
  }

  /** Bytes left in the whole file after the current position. */
  get remaining(): number {
    return this.fileSize - this.pos
  }

  private take(n: number): number {
    const at = this.pos
    if (at + n > this.fileSize) this.fail(`file ends at byte ${this.fileSize} while reading ${n} bytes at ${at}`)
    if (at + n > GGUF_LIMITS.headerBytes) this.fail(`header exceeds the ${GGUF_LIMITS.headerBytes}-byte limit`)
    if (at + n > this.bytes.byteLength) throw new NeedMoreBytes(at + n)
    this.pos = at + n
    return at
  }

  u8 = () => this.view.getUint8(this.take(1))
  i8 = () => this.view.getInt8(this.take(1))
  u16 = () => this.view.getUint16(this.take(2), true)
  i16 = () => this.view.getInt16(this.take(2), true)
  u32 = () => this.view.getUint32(this.take(4), true)
  i32 = () => this.view.getInt32(this.take(4), true)
  f32 = () => this.view.getFloat32(this.take(4), true)
  f64 = () => this.view.getFloat64(this.take(8), true)
  u64 = () => this.view.getBigUint64(this.take(8), true)
  i64 = () => this.view.getBigInt64(this.take(8), true)

  /** A u64 count of items each at least `minBytes` long, bounded by what the rest of the file can hold. */
  count(what: string, minBytes: number, limit = Number.MAX_SAFE_INTEGER): number {
    const n = this.u64()
    if (n > BigInt(Math.floor(this.remaining / minBytes))) this.fail(`${what} ${n} is larger than the rest of the file can hold`)
    if (n > BigInt(limit)) this.fail(`${what} ${n} exceeds the limit ${limit}`)
    return Number(n)
  }

  string(what: string): string {
    const n = this.count(`${what} length`, 1, GGUF_LIMITS.stringBytes)
    const at = this.take(n)
    return new TextDecoder().decode(this.bytes.subarray(at, at + n))
  }
}

const toNumberIfSafe = (v: bigint): number | bigint =>
  v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v

function readValue(c: Cursor, type: number, depth: number): GgufValue {
  switch (type) {
    case VALUE_TYPE.UINT8: return c.u8()
    case VALUE_TYPE.INT8: return c.i8()
    case VALUE_TYPE.UINT16: return c.u16()
    case VALUE_TYPE.INT16: return c.i16()
    case VALUE_TYPE.UINT32: return c.u32()
    case VALUE_TYPE.INT32: return c.i32()
    case VALUE_TYPE.FLOAT32: return c.f32()
    case VALUE_TYPE.BOOL: return c.u8() !== 0
    case VALUE_TYPE.STRING: return c.string("string")
    case VALUE_TYPE.UINT64: return toNumberIfSafe(c.u64())
    case VALUE_TYPE.INT64: return toNumberIfSafe(c.i64())
    case VALUE_TYPE.FLOAT64: return c.f64()
    case VALUE_TYPE.ARRAY: {
      if (depth >= GGUF_LIMITS.arrayNesting) c.fail(`arrays nested deeper than ${GGUF_LIMITS.arrayNesting}`)
      const elementType = c.u32()
      if (!(elementType in MIN_SIZE)) c.fail(`unknown array element type ${elementType}`)
      const n = c.count("array length", MIN_SIZE[elementType], GGUF_LIMITS.arrayLength)
      const out: GgufValue[] = new Array(n)
      for (let i = 0; i < n; i++) out[i] = readValue(c, elementType, depth + 1)
      return out
    }
    default:
      return c.fail(`unknown metadata value type ${type}`)
  }
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0

/**
 * Parses the header from the first `bytes` of a file of `fileSize` bytes. Throws NeedMoreBytes when the
 * header continues past `bytes` (the file reader then reads more); CheckpointError when it is malformed.
 */
function parseHeaderFrom(bytes: Uint8Array, fileSize: number, file: string): GgufHeader {
  const c: Cursor = new Cursor(bytes, fileSize, file)
  if (fileSize < 4 || c.u32() !== 0x46554747) c.fail('not a GGUF file (no "GGUF" magic)')
  const version = c.u32()
  if (version === 0x02000000 || version === 0x03000000) c.fail("big-endian GGUF files are not supported")
  if (version !== 2 && version !== 3) c.fail(`GGUF version ${version} is not supported (only 2 and 3)`)
  // A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a key/value 13.
  const tensorCount = c.count("tensor count", 24)
  const kvCount = c.count("metadata key/value count", 13)

  const metadata = new Map<string, GgufValue>()
  let alignment = 32
  for (let i = 0; i < kvCount; i++) {
    c.context = undefined
    const key = c.string("key")
    c.context = key
    if (metadata.has(key)) c.fail("duplicate metadata key")
    const type = c.u32()
    const value = readValue(c, type, 0)
    if (key === "general.alignment") {
      if (type !== VALUE_TYPE.UINT32 || !isPowerOfTwo(value as number))
        c.fail(`general.alignment must be a u32 power of two, got ${String(value)}`)
      alignment = value as number
    }
    metadata.set(key, value)
  }

  const infos: Omit<GgufTensorInfo, "offset">[] = []
  const relativeOffsets: number[] = []
  const names = new Set<string>()
  for (let i = 0; i < tensorCount; i++) {
    c.context = undefined
    const name = c.string("tensor name")
    c.context = name
    if (names.has(name)) c.fail("duplicate tensor name")
    names.add(name)
    const nDims = c.u32()
    if (nDims > 4) c.fail(`${nDims} dimensions (ggml allows at most 4)`)
    const ne: bigint[] = []
    for (let d = 0; d < nDims; d++) ne.push(c.u64())
    const ggmlType = c.u32()
    const type = GGML_TYPES.get(ggmlType)
    if (type === undefined) c.fail(`unknown ggml type ${ggmlType}`)
    const elements = ne.reduce((a, b) => a * b, 1n)
    if (nDims > 0 && ne[0] % BigInt(type.blockSize) !== 0n)
      c.fail(`first dimension ${ne[0]} is not a multiple of the ${type.name} block size ${type.blockSize}`)
    const byteLength = (elements / BigInt(type.blockSize)) * BigInt(type.typeSize)
    if (elements % BigInt(type.blockSize) !== 0n || byteLength > BigInt(fileSize))
      c.fail(`shape [${[...ne].reverse().join(", ")}] of type ${type.name} needs more bytes than the file has`)
    const offset = c.u64()
    if (offset % BigInt(alignment) !== 0n) c.fail(`data offset ${offset} is not a multiple of the alignment ${alignment}`)
    if (offset > BigInt(fileSize)) c.fail(`data offset ${offset} lies past the end of the file`)
    relativeOffsets.push(Number(offset))
    infos.push({
      name,
      ggmlType,
      typeName: type.name,
      shape: ne.map(Number).reverse(),
      elementCount: Number(elements),
      byteLength: Number(byteLength),
    })
  }
  c.context = undefined
  const dataOffset = Math.ceil(c.pos / alignment) * alignment
  const tensors = infos.map((t, i) => ({ ...t, offset: dataOffset + relativeOffsets[i] }))
  checkTensorExtents(tensors, fileSize, file)
  return { file, version, metadata, tensors, alignment, dataOffset }
}

/** Every tensor inside the file, and no two sharing bytes. */
function checkTensorExtents(tensors: readonly GgufTensorInfo[], fileSize: number, file: string): void {
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset)
  let end = 0
  let previous = ""
  for (const t of sorted) {
    if (t.offset + t.byteLength > fileSize)
      throw checkpointError(file, `data [${t.offset}, ${t.offset + t.byteLength}) runs past the end of the file (${fileSize} bytes)`, t.name)
    if (t.byteLength > 0 && t.offset < end) throw checkpointError(file, `data overlaps tensor "${previous}"`, t.name)
    if (t.byteLength > 0) {
      end = t.offset + t.byteLength
      previous = t.name
    }
  }
}

/** The header of a GGUF held entirely in memory. */
export function parseGgufHeader(bytes: Uint8Array, file: string): GgufHeader {
  return parseHeaderFrom(bytes, bytes.byteLength, file)
}

/** Every tensor of an in-memory GGUF under its file name (no renaming or reordering), dequantized. */
export function parseGgufTensors(bytes: Uint8Array, file: string): Map<string, LoadedGgufTensor> {
  const header = parseGgufHeader(bytes, file)
  const out = new Map<string, LoadedGgufTensor>()
  for (const t of header.tensors) out.set(t.name, { shape: [...t.shape], data: decodeTensor(t, bytes.subarray(t.offset, t.offset + t.byteLength), file) })
  return out
}

const decodeTensor = (t: GgufTensorInfo, bytes: Uint8Array, file: string) =>
  dequantize(bytes, t.ggmlType, t.elementCount, file, t.name)

// ---------------------------------------------------------------------------------------------------------
// Files

async function openOrMissing(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r")
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT")
      throw new MissingFileError({ file: path, message: `${path}: file not found` })
    throw e
  }
}

async function readAt(fh: FileHandle, position: number, length: number, file: string, tensor?: string) {
  const out = new Uint8Array(length)
  let done = 0
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, Math.min(length - done, 1 << 30), position + done)
    if (bytesRead === 0) throw checkpointError(file, `file ended at byte ${position + done} while reading`, tensor)
    done += bytesRead
  }
  return out
}

/** Reads the header from an open file, starting with 16 MB and growing only as far as the header goes. */
async function readHeader(fh: FileHandle, file: string): Promise<GgufHeader> {
  const size = (await fh.stat()).size
  let length = Math.min(size, 1 << 24)
  for (;;) {
    const bytes = await readAt(fh, 0, length, file)
    try {
      return parseHeaderFrom(bytes, size, file)
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e
      length = Math.min(size, GGUF_LIMITS.headerBytes, Math.max(2 * length, e.needed))
    }
  }
}

/** Metadata and tensor infos of a GGUF file, without reading tensor data. */
export async function readGgufMetadata(path: string): Promise<GgufHeader> {
  const fh = await openOrMissing(path)
  try {
    return await readHeader(fh, path)
  } finally {
    await fh.close()
  }
}

/** A Llama GGUF opened for reading under Hugging Face names and row order. */
export interface GgufModelReader {
  readonly header: GgufHeader
  readonly config: ModelConfig
  /** Hugging Face name → where the tensor is. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>
  /** The tensor dequantized to f32, q/k rows in Hugging Face order. */
  read(hfName: string): Promise<Float32Array>
  close(): Promise<void>
}

export async function openGguf(path: string): Promise<GgufModelReader> {
  const fh = await openOrMissing(path)
  try {
    const header = await readHeader(fh, path)
    const model = llamaModel(header)
    return {
      header,
      config: model.config,
      tensors: model.tensors,
      read: async (hfName) => {
        const t = model.tensor(hfName)
        return model.toHf(hfName, decodeTensor(t, await readAt(fh, t.offset, t.byteLength, path, t.name), path))
      },
      close: () => fh.close(),
    }
  } catch (e) {
    await fh.close()
    throw e
  }
}

/** A whole Llama GGUF: metadata, the ModelConfig it describes, and every tensor under its Hugging Face name. */
export async function readGguf(path: string): Promise<{
  metadata: ReadonlyMap<string, GgufValue>
  config: ModelConfig
  tensors: Map<string, LoadedGgufTensor>
}> {
  const reader = await openGguf(path)
  try {
    const tensors = new Map<string, LoadedGgufTensor>()
    for (const [name, t] of reader.tensors) tensors.set(name, { shape: [...t.shape], data: await reader.read(name) })
    return { metadata: reader.header.metadata, config: reader.config, tensors }
  } finally {
    await reader.close()
  }
}

/** The same as `readGguf`, for a file held in memory. */
export function parseGguf(bytes: Uint8Array, file: string) {
  const header = parseGgufHeader(bytes, file)
  const model = llamaModel(header)
  const tensors = new Map<string, LoadedGgufTensor>()
  for (const [name, t] of model.tensors) {
    const data = decodeTensor(t, bytes.subarray(t.offset, t.offset + t.byteLength), file)
    tensors.set(name, { shape: [...t.shape], data: model.toHf(name, data) })
  }
  return { metadata: header.metadata, config: model.config, tensors }
}

// ---------------------------------------------------------------------------------------------------------
// Llama models: config from metadata, Hugging Face names, shapes checked against the config

function llamaModel(header: GgufHeader) {
  const { file } = header
  const byGgufName = new Map(header.tensors.map((t) => [t.name, t]))
  if (byGgufName.has("rope_freqs.weight"))
    throw checkpointError(file, "Llama 3 RoPE frequency factors are not supported", "rope_freqs.weight")
  const config = ggufModelConfig(header)
  const tensors = new Map<string, GgufTensorInfo>()
  for (const t of header.tensors) {
    const hfName = ggufToHfName(t.name)
    if (hfName === undefined) throw checkpointError(file, "not a Llama parameter name", t.name)
    if (!canDequantize(t.ggmlType))
      throw checkpointError(file, `ggml type ${ggmlTypeName(t.ggmlType)} cannot be dequantized (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)`, t.name)
    tensors.set(hfName, t)
  }
  for (const name of parameterNames(config)) {
    const t = tensors.get(name)
    if (t === undefined) throw checkpointError(file, `missing tensor (Hugging Face ${name})`, hfToGgufName(name) ?? name)
    const expected = parameterShape(config, name)
    if (t.shape.join(",") !== expected.join(","))
      throw checkpointError(file, `shape [${t.shape.join(", ")}] but the config implies [${expected.join(", ")}]`, t.name)
  }
  const tensor = (hfName: string) => {
    const t = tensors.get(hfName)
    if (t === undefined) throw checkpointError(file, "no tensor with this name in the checkpoint", hfName)
    return t
  }
  const toHf = (hfName: string, data: Float32Array) => {
    const which = permutedProjection(hfName)
    if (which === undefined) return data
    const heads = which === "query" ? config.numAttentionHeads : config.numKeyValueHeads
    return unpermuteQK(data, tensor(hfName).shape[0], heads)
  }
  return { config, tensors, tensor, toHf }
}

/** The ModelConfig a llama GGUF's metadata describes (keys as llama.cpp's convert_hf_to_gguf writes them). */
export function ggufModelConfig(header: GgufHeader): ModelConfig {
  const { file, metadata } = header
  const arch = metadata.get("general.architecture")
  if (arch !== "llama")
    throw checkpointError(file, `architecture ${JSON.stringify(arch)} is not supported (only "llama")`, "general.architecture")
  const get = (key: string) => metadata.get(`llama.${key}`)
  const fail = (key: string, message: string): never => {
    throw checkpointError(file, message, key)
  }
  const positiveInt = (key: string, value: GgufValue | undefined): number => {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0)
      fail(key, value === undefined ? "missing" : `expected a positive integer, got ${String(value).slice(0, 40)}`)
    return value as number
  }
  const positiveNumber = (key: string, value: GgufValue | undefined): number => {
    if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value))
      fail(key, value === undefined ? "missing" : `expected a positive number, got ${String(value).slice(0, 40)}`)
    return value as number
  }
  const required = (key: string) => positiveInt(`llama.${key}`, get(key))
  const optional = (key: string, fallback: number) => (get(key) === undefined ? fallback : required(key))
  const tokenId = (key: string): number | null => {
    const v = metadata.get(key)
    if (v === undefined) return null
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) fail(key, `expected a token id, got ${String(v)}`)
    return v as number
  }

  const hiddenSize = required("embedding_length")
  const numAttentionHeads = required("attention.head_count")
  const numKeyValueHeads = optional("attention.head_count_kv", numAttentionHeads)
  if (numAttentionHeads % numKeyValueHeads !== 0)
    fail("llama.attention.head_count_kv", `${numKeyValueHeads} does not divide head_count ${numAttentionHeads}`)
  const headDim = optional("attention.key_length", Math.floor(hiddenSize / numAttentionHeads))
  if (get("attention.key_length") === undefined && hiddenSize % numAttentionHeads !== 0)
    fail("llama.attention.head_count", `${numAttentionHeads} does not divide embedding_length ${hiddenSize}`)
  if (optional("attention.value_length", headDim) !== headDim)
    fail("llama.attention.value_length", "differs from key_length")
  if (optional("rope.dimension_count", headDim) !== headDim)
    fail("llama.rope.dimension_count", `partial rotary embeddings are not supported (head dim ${headDim})`)

  const eps = positiveNumber("llama.attention.layer_norm_rms_epsilon", get("attention.layer_norm_rms_epsilon"))
  const ropeTheta = get("rope.freq_base") === undefined ? 10000 : positiveNumber("llama.rope.freq_base", get("rope.freq_base"))
  const scalingType = get("rope.scaling.type") ?? "none"
  let ropeScaling: ModelConfig["ropeScaling"] = { ropeType: "default" }
  if (scalingType === "linear") {
    ropeScaling = { ropeType: "linear", factor: positiveNumber("llama.rope.scaling.factor", get("rope.scaling.factor")) }
  } else if (scalingType !== "none") {
    fail("llama.rope.scaling.type", `rope scaling ${JSON.stringify(scalingType)} is not supported`)
  }

  const tokens = metadata.get("tokenizer.ggml.tokens")
  const embedding = header.tensors.find((t) => t.name === "token_embd.weight")
  const vocabSize =
    get("vocab_size") !== undefined
      ? required("vocab_size")
      : Array.isArray(tokens)
        ? tokens.length
        : embedding !== undefined
          ? embedding.shape[0]
          : fail("llama.vocab_size", "missing, and there is neither tokenizer.ggml.tokens nor token_embd.weight")
  const slidingWindow = get("attention.sliding_window") === undefined ? null : required("attention.sliding_window")
  const has = (name: string) => header.tensors.some((t) => t.name === name)
  const eos = tokenId("tokenizer.ggml.eos_token_id")

  return {
    architecture: "llama",
    vocabSize,
    hiddenSize,
    intermediateSize: required("feed_forward_length"),
    numHiddenLayers: required("block_count"),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: eps,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: required("context_length"),
    tieWordEmbeddings: !has("output.weight"),
    slidingWindow,
    attentionBias: has("blk.0.attn_q.bias"),
    mlpBias: has("blk.0.ffn_up.bias"),
    initializerRange: 0.02,
    bosTokenId: tokenId("tokenizer.ggml.bos_token_id"),
    eosTokenId: eos === null ? [] : [eos],
    padTokenId: tokenId("tokenizer.ggml.padding_token_id"),
    hiddenAct: "silu",
  }
}
