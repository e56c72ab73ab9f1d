/**
 * safetensors reading and writing (format: https://github.com/huggingface/safetensors#format):
 *
 *   [8 bytes: N, little-endian u64][N bytes: JSON header, space-padded][data buffer]
 *
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data
 * buffer) plus an optional "__metadata__" string→string map. Every tensor is returned as a Float32Array
 * whatever its stored dtype (integers become their float value), because the model runs in f32.
 *
 * A checkpoint is untrusted input: the header is validated completely before any tensor is read (sizes,
 * offsets inside the file, no overlaps and no holes, as the format requires), so a malicious file fails with a
 * CheckpointError naming the file and tensor instead of crashing, hanging or allocating more memory than the
 * file's own size.
 *
 * API: `openSafetensors` is the lazy reader (header now, one tensor per `read`), `readSafetensors` loads a
 * whole file, `openSafetensorsFolder`/`readSafetensorsFolder` do the same for a model folder (sharded through
 * model.safetensors.index.json or a single model.safetensors), `writeSafetensors` saves atomically.
 * `parseSafetensors` / `encodeSafetensors` are the same format on in-memory bytes.
 */
import { randomBytes } from "node:crypto"
import { open, readFile, rename, unlink, type FileHandle } from "node:fs/promises"
import { isAbsolute, join, relative, resolve } from "node:path"
import { checkpointError, MissingFileError } from "./errors.js"
import { bf16ToF32, f16BitsToF32, f16ToF32, f32ToBf16, f32ToF16 } from "./half.js"

/** Bytes per element of every dtype the format defines. */
export const SAFETENSORS_DTYPE_BYTES = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
} as const
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPE_BYTES

/** Where one tensor lives: `file` holds it, begin/end are absolute byte positions in that file. */
export interface SafetensorsTensorInfo {
  readonly file: string
  readonly name: string
  readonly dtype: SafetensorsDType
  readonly shape: readonly number[]
  readonly begin: number
  readonly end: number
}

/** A tensor loaded into memory, converted to f32. */
export interface LoadedTensor {
  readonly dtype: SafetensorsDType
  readonly shape: number[]
  readonly data: Float32Array
}

/** A tensor to save: f32 values, stored as `dtype` (default F32; F16/BF16 round to nearest even). */
export interface TensorToSave {
  readonly shape: readonly number[]
  readonly data: Float32Array
  readonly dtype?: "F32" | "F16" | "BF16"
}

/** A validated, open checkpoint (one file or a sharded folder); tensors are read on demand. */
export interface SafetensorsReader {
  readonly file: string
  readonly metadata: Readonly<Record<string, string>> | null
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>
  /** The tensor's values as f32; CheckpointError when the name is not in the checkpoint. */
  read(name: string): Promise<Float32Array>
  load(name: string): Promise<LoadedTensor>
  close(): Promise<void>
}

/** Headers of real checkpoints are a few hundred KB; anything past this is hostile or broken. */
export const MAX_HEADER_BYTES = 100_000_000

const INDEX_FILE = "model.safetensors.index.json"
const SINGLE_FILE = "model.safetensors"

// ---------------------------------------------------------------------------------------------------------
// Header validation

interface ParsedHeader {
  readonly metadata: Record<string, string> | null
  /** Offsets here are relative to the data buffer. */
  readonly tensors: SafetensorsTensorInfo[]
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0

/** Validates the 8-byte length prefix against the file size; returns the header length. */
function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8) throw checkpointError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`)
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(MAX_HEADER_BYTES))
    throw checkpointError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`)
  if (Number(n) > fileSize - 8)
    throw checkpointError(file, `header length ${n} runs past the end of the file (${fileSize} bytes)`)
  return Number(n)
}

function parseHeader(headerBytes: Uint8Array, dataSize: number, file: string): ParsedHeader {
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes))
  } catch (e) {
    throw checkpointError(file, `header is not valid UTF-8 JSON (${(e as Error).message})`)
  }
  if (!isRecord(json)) throw checkpointError(file, "header is not a JSON object")
  let metadata: Record<string, string> | null = null
  const tensors: SafetensorsTensorInfo[] = []
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(entry, file)
      continue
    }
    tensors.push(parseTensorEntry(name, entry, dataSize, file))
  }
  checkLayout(tensors, dataSize, file)
  return { metadata, tensors }
}

function parseMetadata(entry: unknown, file: string): Record<string, string> {
  if (!isRecord(entry)) throw checkpointError(file, "__metadata__ is not a JSON object", "__metadata__")
  const out: Record<string, string> = Object.create(null)
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== "string") throw checkpointError(file, `__metadata__ value of "${k}" is not a string`, "__metadata__")
    out[k] = v
  }
  return out
}

function parseTensorEntry(name: string, entry: unknown, dataSize: number, file: string): SafetensorsTensorInfo {
  if (!isRecord(entry)) throw checkpointError(file, "header entry is not a JSON object", name)
  const { dtype, shape, data_offsets: offsets } = entry
  if (typeof dtype !== "string" || !Object.hasOwn(SAFETENSORS_DTYPE_BYTES, dtype))
    throw checkpointError(file, `unknown dtype ${JSON.stringify(dtype)}`, name)
  if (!Array.isArray(shape) || !shape.every(isCount))
    throw checkpointError(file, `shape ${short(shape)} is not a list of non-negative integers`, name)
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0] > offsets[1])
    throw checkpointError(file, `data_offsets ${short(offsets)} is not [begin, end] with 0 ≤ begin ≤ end`, name)
  const [begin, end] = offsets as [number, number]
  if (end > dataSize)
    throw checkpointError(file, `data_offsets [${begin}, ${end}] run past the data buffer (${dataSize} bytes)`, name)
  const bytes = SAFETENSORS_DTYPE_BYTES[dtype as SafetensorsDType]
  const count = elementCountUpTo(shape as number[], dataSize / bytes)
  if (count * bytes !== end - begin) {
    const needs = Number.isFinite(count) ? `${count * bytes} bytes` : "more bytes than the file holds"
    throw checkpointError(file, `shape [${shape.join(", ")}] × ${dtype} needs ${needs}, data_offsets give ${end - begin}`, name)
  }
  return { file, name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end }
}

/** Product of dims, or Infinity once it passes `cap`: hostile shapes must not overflow into a matching size. */
function elementCountUpTo(shape: readonly number[], cap: number): number {
  if (shape.includes(0)) return 0
  let n = 1
  for (const d of shape) {
    n *= d
    if (n > cap) return Infinity
  }
  return n
}

/** The format requires the data buffer to be tiled exactly by the tensors: no overlap, no hole, no tail. */
function checkLayout(tensors: SafetensorsTensorInfo[], dataSize: number, file: string): void {
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end)
  let position = 0
  let previous = ""
  for (const t of sorted) {
    if (t.begin < position)
      throw checkpointError(file, `data_offsets [${t.begin}, ${t.end}] overlap tensor "${previous}"`, t.name)
    if (t.begin > position)
      throw checkpointError(file, `data_offsets [${t.begin}, ${t.end}] leave a hole at byte ${position}`, t.name)
    position = t.end
    previous = t.name
  }
  if (position !== dataSize)
    throw checkpointError(file, `${dataSize - position} bytes after the last tensor belong to no tensor`)
}

const short = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v)
  return s.length > 60 ? `${s.slice(0, 60)}…` : s
}

// ---------------------------------------------------------------------------------------------------------
// Decoding tensor bytes

/** Converts a tensor's raw little-endian bytes to f32. `bytes` may be any view; it is not retained. */
export function decodeTensorData(bytes: Uint8Array, dtype: SafetensorsDType): Float32Array {
  const n = bytes.byteLength / SAFETENSORS_DTYPE_BYTES[dtype]
  // Typed-array views need an aligned offset; a copy is cheap next to the conversion itself.
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice()
  const { buffer, byteOffset } = aligned
  switch (dtype) {
    case "F32":
      // A freshly read buffer becomes the result as is; a view into someone else's bytes is copied.
      return aligned.byteLength === buffer.byteLength
        ? new Float32Array(buffer, byteOffset, n)
        : new Float32Array(buffer.slice(byteOffset, byteOffset + n * 4))
    case "F16":
      return f16ToF32(new Uint16Array(buffer, byteOffset, n))
    case "BF16":
      return bf16ToF32(new Uint16Array(buffer, byteOffset, n))
    case "F64":
      return Float32Array.from(new Float64Array(buffer, byteOffset, n))
    case "I64":
      return Float32Array.from(new BigInt64Array(buffer, byteOffset, n), Number)
    case "U64":
      return Float32Array.from(new BigUint64Array(buffer, byteOffset, n), Number)
    case "I32":
      return Float32Array.from(new Int32Array(buffer, byteOffset, n))
    case "U32":
      return Float32Array.from(new Uint32Array(buffer, byteOffset, n))
    case "I16":
      return Float32Array.from(new Int16Array(buffer, byteOffset, n))
    case "U16":
      return Float32Array.from(new Uint16Array(buffer, byteOffset, n))
    case "I8":
      return Float32Array.from(new Int8Array(buffer, byteOffset, n))
    case "U8":
    case "BOOL":
      return Float32Array.from(new Uint8Array(buffer, byteOffset, n))
    case "F8_E5M2":
      // E5M2 is the high byte of an IEEE half.
      return Float32Array.from(new Uint8Array(buffer, byteOffset, n), (b) => f16BitsToF32(b << 8))
    case "F8_E4M3":
      return Float32Array.from(new Uint8Array(buffer, byteOffset, n), f8e4m3ToF32)
  }
}

/** float8 e4m3fn (bias 7, no infinities, S.1111.111 is NaN), as torch.float8_e4m3fn. */
function f8e4m3ToF32(b: number): number {
  const sign = b & 0x80 ? -1 : 1
  const exponent = (b >> 3) & 0xf
  const mantissa = b & 7
  if (exponent === 0xf && mantissa === 7) return NaN
  if (exponent === 0) return sign * mantissa * 2 ** -9
  return sign * (8 + mantissa) * 2 ** (exponent - 10)
}

// ---------------------------------------------------------------------------------------------------------
// In-memory API

/** Parses a whole safetensors file held in memory. */
export function parseSafetensors(bytes: Uint8Array, file: string): {
  metadata: Record<string, string> | null
  tensors: Map<string, LoadedTensor>
} {
  const n = headerLength(bytes, bytes.byteLength, file)
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, file)
  const tensors = new Map<string, LoadedTensor>()
  for (const t of header.tensors) {
    const data = decodeTensorData(bytes.subarray(8 + n + t.begin, 8 + n + t.end), t.dtype)
    tensors.set(t.name, { dtype: t.dtype, shape: [...t.shape], data })
  }
  return { metadata: header.metadata, tensors }
}

/** Serializes tensors to safetensors bytes (see `writeSafetensors` for the layout). */
export function encodeSafetensors(
  tensors: Readonly<Record<string, TensorToSave>>,
  metadata?: Readonly<Record<string, string>>,
  file = "<memory>",
): Uint8Array {
  const { header, order } = layoutForWriting(tensors, metadata, file)
  const parts = [header, ...order.map(([, t]) => encodeTensor(t))]
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Files

/** Opens and validates one .safetensors file; tensors are read lazily. Close it when done. */
export async function openSafetensors(path: string): Promise<SafetensorsReader> {
  const opened = await openValidated(path)
  return makeReader(path, opened.metadata, opened.tensors, new Map([[path, opened.handle]]))
}

/** Reads every tensor of one .safetensors file. */
export async function readSafetensors(path: string): Promise<Map<string, LoadedTensor>> {
  return loadAll(await openSafetensors(path))
}

/**
 * Opens a model folder: the shards listed in model.safetensors.index.json, or else model.safetensors.
 * Only the tensors the index lists are exposed, each from the shard the index names.
 */
export async function openSafetensorsFolder(dir: string): Promise<SafetensorsReader> {
  const indexPath = join(dir, INDEX_FILE)
  let indexText: string
  try {
    indexText = await readFile(indexPath, "utf8")
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e
    try {
      return await openSafetensors(join(dir, SINGLE_FILE))
    } catch (e2) {
      if (e2 instanceof MissingFileError)
        throw new MissingFileError({ file: dir, message: `${dir}: neither ${INDEX_FILE} nor ${SINGLE_FILE} exists` })
      throw e2
    }
  }
  const weightMap = parseIndex(indexText, dir, indexPath)
  const handles = new Map<string, FileHandle>()
  const shardTensors = new Map<string, ReadonlyMap<string, SafetensorsTensorInfo>>()
  const tensors = new Map<string, SafetensorsTensorInfo>()
  try {
    for (const [name, shardPath] of weightMap) {
      let inShard = shardTensors.get(shardPath)
      if (inShard === undefined) {
        const opened = await openValidated(shardPath)
        handles.set(shardPath, opened.handle)
        shardTensors.set(shardPath, (inShard = opened.tensors))
      }
      const info = inShard.get(name)
      if (info === undefined) throw checkpointError(shardPath, `listed in ${INDEX_FILE} but not in this shard`, name)
      tensors.set(name, info)
    }
  } catch (e) {
    await closeAll(handles)
    throw e
  }
  return makeReader(indexPath, null, tensors, handles)
}

/** Reads every tensor of a model folder (sharded or single-file). */
export async function readSafetensorsFolder(dir: string): Promise<Map<string, LoadedTensor>> {
  return loadAll(await openSafetensorsFolder(dir))
}

/** weight_map of the index, resolved to shard paths that must stay inside the model folder. */
function parseIndex(text: string, dir: string, indexPath: string): Map<string, string> {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    throw checkpointError(indexPath, `not valid JSON (${(e as Error).message})`)
  }
  if (!isRecord(json) || !isRecord(json.weight_map))
    throw checkpointError(indexPath, "has no weight_map object", "weight_map")
  const out = new Map<string, string>()
  const root = resolve(dir)
  for (const [name, shard] of Object.entries(json.weight_map)) {
    if (typeof shard !== "string" || shard === "") throw checkpointError(indexPath, "shard name is not a string", name)
    const shardPath = resolve(root, shard)
    const inside = relative(root, shardPath)
    // A hostile index must not make us read files outside the model folder.
    if (inside === "" || inside.startsWith("..") || isAbsolute(inside))
      throw checkpointError(indexPath, `shard "${shard}" lies outside the model folder`, name)
    out.set(name, shardPath)
  }
  return out
}

/** Opens a file and validates its header; absolute tensor offsets. The caller owns the handle. */
async function openValidated(path: string) {
  const handle = await openOrMissing(path)
  try {
    const size = (await handle.stat()).size
    const prefix = await readExactly(handle, 0, Math.min(8, size), path)
    const n = headerLength(prefix, size, path)
    const header = parseHeader(await readExactly(handle, 8, n, path), size - 8 - n, path)
    const tensors: ReadonlyMap<string, SafetensorsTensorInfo> = new Map(
      header.tensors.map((t) => [t.name, { ...t, begin: t.begin + 8 + n, end: t.end + 8 + n }] as const),
    )
    return { handle, metadata: header.metadata, tensors }
  } catch (e) {
    await handle.close()
    throw e
  }
}

function makeReader(
  file: string,
  metadata: Record<string, string> | null,
  tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
  handles: ReadonlyMap<string, FileHandle>,
): SafetensorsReader {
  const info = (name: string) => {
    const t = tensors.get(name)
    if (t === undefined) throw checkpointError(file, "no tensor with this name in the checkpoint", name)
    return t
  }
  const read = async (name: string) => {
    const t = info(name)
    const bytes = await readExactly(handles.get(t.file)!, t.begin, t.end - t.begin, t.file, name)
    return decodeTensorData(bytes, t.dtype)
  }
  return {
    file,
    metadata,
    tensors,
    read,
    load: async (name) => ({ dtype: info(name).dtype, shape: [...info(name).shape], data: await read(name) }),
    close: () => closeAll(handles),
  }
}

async function closeAll(handles: ReadonlyMap<string, FileHandle>): Promise<void> {
  await Promise.all([...handles.values()].map((h) => h.close()))
}

async function loadAll(reader: SafetensorsReader): Promise<Map<string, LoadedTensor>> {
  try {
    const out = new Map<string, LoadedTensor>()
    for (const name of reader.tensors.keys()) out.set(name, await reader.load(name))
    return out
  } finally {
    await reader.close()
  }
}

async function openOrMissing(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r")
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT")
      throw new MissingFileError({ file: path, message: `${path}: file not found` })
    throw e
  }
}

/** Reads exactly `length` bytes at `position` into a fresh (8-byte aligned) array. */
async function readExactly(fh: FileHandle, position: number, length: number, file: string, tensor?: string) {
  const out = new Uint8Array(length)
  let done = 0
  while (done < length) {
    // fs reads are limited to 2 GiB per call.
    const chunk = Math.min(length - done, 1 << 30)
    const { bytesRead } = await fh.read(out, done, chunk, position + done)
    if (bytesRead === 0) throw checkpointError(file, `file ended at byte ${position + done} while reading`, tensor)
    done += bytesRead
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/**
 * Writes tensors as a safetensors file, atomically: the bytes go to a temporary file in the same folder, which
 * is fsynced and then renamed over `path`, so a crash never leaves a half-written checkpoint behind.
 * Layout as the reference writer: tensors ordered by element size (largest first) then name, so each starts at
 * a multiple of its own element size, and the header is space-padded so the data buffer starts 8-aligned.
 */
export async function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, TensorToSave>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const { header, order } = layoutForWriting(tensors, metadata, path)
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`
  const fh = await open(temp, "w")
  try {
    await fh.write(header)
    for (const [, t] of order) await fh.write(encodeTensor(t))
    await fh.sync()
    await fh.close()
    await rename(temp, path)
  } catch (e) {
    await fh.close().catch(() => undefined)
    await unlink(temp).catch(() => undefined)
    throw e
  }
}

/** Validates the tensors to save and builds the length prefix + padded JSON header. */
function layoutForWriting(
  tensors: Readonly<Record<string, TensorToSave>>,
  metadata: Readonly<Record<string, string>> | undefined,
  file: string,
): { header: Uint8Array; order: [string, TensorToSave][] } {
  const entries = Object.entries(tensors)
  for (const [name, t] of entries) {
    if (name === "__metadata__") throw checkpointError(file, "a tensor cannot be named __metadata__", name)
    const dtype = t.dtype ?? "F32"
    if (!["F32", "F16", "BF16"].includes(dtype)) throw checkpointError(file, `cannot write dtype ${dtype}`, name)
    if (!t.shape.every(isCount)) throw checkpointError(file, `shape [${t.shape}] is not non-negative integers`, name)
    const count = t.shape.reduce((a, b) => a * b, 1)
    if (count !== t.data.length)
      throw checkpointError(file, `shape [${t.shape.join(", ")}] has ${count} elements, data has ${t.data.length}`, name)
  }
  const bytesOf = (t: TensorToSave) => SAFETENSORS_DTYPE_BYTES[t.dtype ?? "F32"]
  const order = entries.sort(([an, a], [bn, b]) => bytesOf(b) - bytesOf(a) || (an < bn ? -1 : an > bn ? 1 : 0))
  const json: Record<string, unknown> = {}
  if (metadata !== undefined) json.__metadata__ = { ...metadata }
  let offset = 0
  for (const [name, t] of order) {
    const size = t.data.length * bytesOf(t)
    json[name] = { dtype: t.dtype ?? "F32", shape: [...t.shape], data_offsets: [offset, offset + size] }
    offset += size
  }
  const text = new TextEncoder().encode(JSON.stringify(json))
  const padded = Math.ceil(text.byteLength / 8) * 8
  const header = new Uint8Array(8 + padded).fill(0x20) // spaces: valid JSON whitespace
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true)
  header.set(text, 8)
  return { header, order }
}

function encodeTensor(t: TensorToSave): Uint8Array {
  const dtype = t.dtype ?? "F32"
  const typed = dtype === "F32" ? t.data : dtype === "F16" ? f32ToF16(t.data) : f32ToBf16(t.data)
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength)
}

