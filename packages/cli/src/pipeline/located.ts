import { join } from "node:path"
import type { StageInput } from "../store/store.js"

/**
 * A file or folder a stage reads, with the input that identifies it in the stage's hash: an earlier stage's
 * artifact (the file is inside its folder) or a user's file (hashed by hash.ts `externalInput`).
 */
export interface Located {
  readonly input: StageInput
  readonly path: string
}

/** `rel` inside an artifact. */
export const inside = (input: StageInput, rel: string): Located => ({ input, path: join(input.path, rel) })

/** An external input is its own path. */
export const itself = (input: StageInput): Located => ({ input, path: input.path })
