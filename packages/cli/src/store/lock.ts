import { open, readFile, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { Effect, type Scope } from "effect"
import { storeError, type StoreError } from "../errors.js"

/**
 * One process per run folder: `<run>/.lock` holds the owner's pid. A lock whose process is gone (a killed run)
 * is taken over, so resuming after SIGKILL needs no cleanup by hand.
 */
export const LOCK_FILE = ".lock"

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

async function acquire(path: string): Promise<void> {
  try {
    const handle = await open(path, "wx")
    await handle.writeFile(`${process.pid}\n`)
    await handle.close()
    return
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
  }
  const owner = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10)
  if (Number.isInteger(owner) && owner !== process.pid && alive(owner))
    throw new Error(`the run folder is in use by process ${owner} (delete ${path} if that process is not a bdvax run)`)
  await writeFile(path, `${process.pid}\n`)
}

async function release(path: string): Promise<void> {
  const owner = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10)
  if (owner === process.pid) await rm(path, { force: true })
}

/** Hold the run folder's lock for the current scope. */
export const lockRunDir = (runDir: string): Effect.Effect<void, StoreError, Scope.Scope> => {
  const path = join(runDir, LOCK_FILE)
  return Effect.acquireRelease(
    Effect.tryPromise({ try: () => acquire(path), catch: (e) => storeError(runDir, "cannot lock the run folder", e) }),
    () => Effect.promise(() => release(path).catch(() => undefined)),
  )
}
