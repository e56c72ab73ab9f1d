import { createHash } from "node:crypto"
import { createReadStream } from "node:fs"
import { readdir, stat } from "node:fs/promises"
import { join, relative, resolve } from "node:path"
import { Effect } from "effect"
import { storeError, type StoreError } from "../errors.js"

/**
 * Content addresses of the artifact store. A stage's folder is named by the SHA-256 of a canonical JSON text of
 * (store format, stage kind, stage version, settings, the hashes of its inputs), so the same work always lands in
 * the same folder and any change to what it depends on moves it to a new one.
 */

/** Bump when the layout of stage folders or stage.json changes: every stage is then recomputed. */
export const STORE_FORMAT = "bdvax-store/1"

export type JsonValue = null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue }

/**
 * JSON with object keys sorted at every level and no whitespace, so equal values give equal text whatever the
 * order their keys were written in. Rejects what JSON cannot represent exactly (NaN, ±Infinity, undefined,
 * functions) rather than letting JSON.stringify silently turn it into null.
 */
export function canonicalJson(value: unknown, path = "(root)"): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value)
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${path} is ${value}, which JSON cannot represent`)
    return JSON.stringify(value)
  }
  if (Array.isArray(value)) return `[${value.map((v, i) => canonicalJson(v, `${path}[${i}]`)).join(",")}]`
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined)
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v, `${path}.${k}`)}`).join(",")}}`
  }
  throw new TypeError(`canonicalJson: ${path} is a ${typeof value}, which JSON cannot represent`)
}

export const sha256 = (text: string | Uint8Array): string => createHash("sha256").update(text).digest("hex")

export interface StageKey {
  readonly kind: string
  readonly version: number
  readonly settings: unknown
  /** Input name → the input's hash. */
  readonly inputs: Readonly<Record<string, string>>
}

/** The content address of a stage's output. */
export const stageHash = (key: StageKey): string =>
  sha256(canonicalJson({ format: STORE_FORMAT, kind: key.kind, version: key.version, settings: key.settings, inputs: key.inputs }))

/** Files (or a folder's files together) up to this size are hashed by content; larger ones by name, size and mtime. */
export const CONTENT_HASH_LIMIT = 64 * 1024 * 1024

async function listFiles(root: string): Promise<string[]> {
  const s = await stat(root)
  if (!s.isDirectory()) return [root]
  const out: string[] = []
  for (const entry of await readdir(root, { withFileTypes: true })) {
    const p = join(root, entry.name)
    if (entry.isDirectory()) out.push(...(await listFiles(p)))
    else if (entry.isFile()) out.push(p)
  }
  return out.sort()
}

async function hashFile(path: string, into: ReturnType<typeof createHash>): Promise<void> {
  for await (const chunk of createReadStream(path)) into.update(chunk as Buffer)
}

/**
 * The hash of a file or folder given by the user (a records file, a Hugging Face model folder). Small inputs are
 * hashed by content, so editing a records file re-runs what depends on it; multi-gigabyte model folders by each
 * file's relative name, size and modification time (what `make` trusts), so a run does not spend minutes
 * re-reading weights it has already used.
 */
export async function fingerprintPath(path: string): Promise<string> {
  const root = resolve(path)
  const files = await listFiles(root)
  const stats = await Promise.all(files.map((f) => stat(f)))
  const total = stats.reduce((n, s) => n + s.size, 0)
  const h = createHash("sha256")
  if (total <= CONTENT_HASH_LIMIT) {
    h.update("content\0")
    for (const f of files) {
      h.update(`${relative(root, f)}\0`)
      await hashFile(f, h)
      h.update("\0")
    }
  } else {
    h.update("stat\0")
    files.forEach((f, i) => h.update(`${relative(root, f)}\0${stats[i].size}\0${stats[i].mtimeMs}\0`))
  }
  return h.digest("hex")
}

/** An input that is not a stage's output: its absolute path and fingerprint. */
export interface ExternalInput {
  readonly hash: string
  readonly path: string
}

export const externalInput = (path: string): Effect.Effect<ExternalInput, StoreError> =>
  Effect.tryPromise({
    try: async () => ({ path: resolve(path), hash: await fingerprintPath(path) }),
    catch: (e) => storeError(resolve(path), "cannot read this input", e),
  })
