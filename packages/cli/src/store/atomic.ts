import { randomBytes } from "node:crypto"
import { cp, mkdir, open, readdir, rename, rm } from "node:fs/promises"
import { basename, dirname, join } from "node:path"

/**
 * Durable, all-or-nothing writes. A file or folder is written under a temporary name next to its destination,
 * every file and folder in it is flushed to disk (fsync), and only then renamed into place — rename(2) within a
 * folder is atomic, so a reader sees either nothing or the complete thing, even after a crash or SIGKILL. The
 * parent folder is fsynced after the rename so the new name itself survives a power cut.
 */

/** The prefix of every temporary name: anything starting with it is unfinished and may be deleted. */
export const TEMP_PREFIX = ".tmp-"

/** A fresh temporary name next to `dest` (same folder, so the final rename stays on one file system). */
export const tempSibling = (dest: string): string =>
  join(dirname(dest), `${TEMP_PREFIX}${basename(dest)}-${process.pid}-${randomBytes(4).toString("hex")}`)

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, "r")
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** fsync every file below `root`, then the folders bottom-up (a folder's entries are data too). */
export async function fsyncTree(root: string): Promise<void> {
  const entries = await readdir(root, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOTDIR") return null
    throw e
  })
  if (entries === null) return fsyncPath(root)
  for (const e of entries) {
    const p = join(root, e.name)
    if (e.isDirectory()) await fsyncTree(p)
    else if (e.isFile()) await fsyncPath(p)
  }
  await fsyncPath(root)
}

/** Rename `from` onto `to` (replacing a file; a folder at `to` is moved aside and deleted first) and fsync the parent. */
export async function renameDurably(from: string, to: string): Promise<void> {
  try {
    await rename(from, to)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "EISDIR") throw e
    // A folder cannot be renamed onto a non-empty one: move the old one out of the way first.
    const old = tempSibling(to)
    await rename(to, old)
    await rename(from, to)
    await rm(old, { recursive: true, force: true })
  }
  await fsyncPath(dirname(to))
}

/** Write `data` to `path` atomically and durably. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const tmp = tempSibling(path)
  try {
    const handle = await open(tmp, "w")
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await renameDurably(tmp, path)
  } catch (e) {
    await rm(tmp, { force: true })
    throw e
  }
}

/** Copy a file or folder to `dest` atomically (replacing what was there). */
export async function copyAtomic(src: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true })
  const tmp = tempSibling(dest)
  try {
    await cp(src, tmp, { recursive: true })
    await fsyncTree(tmp)
    await renameDurably(tmp, dest)
  } catch (e) {
    await rm(tmp, { recursive: true, force: true })
    throw e
  }
}

/** Delete every leftover temporary entry in `dir` (from a killed process); returns their names. */
export async function removeTemporaries(dir: string): Promise<string[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(TEMP_PREFIX))
  for (const n of names) await rm(join(dir, n), { recursive: true, force: true })
  return names
}
