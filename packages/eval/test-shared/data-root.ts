import { existsSync } from "node:fs"
import { sharedDataRoot, sharedPaths } from "../src/index.js"

/** The shared data folder, or a loud failure: these suites never skip. */
export const ROOT = sharedDataRoot()
if (!existsSync(ROOT) || !existsSync(`${ROOT}/README.md`)) {
  throw new Error(`the shared-data suite needs ${ROOT} (set BDVAX_SHARED_DATA to the shared data/ folder)`)
}
export const P = sharedPaths(ROOT)

export const countBy = <T>(xs: readonly T[], key: (x: T) => string | number): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const x of xs) out[String(key(x))] = (out[String(key(x))] ?? 0) + 1
  return out
}
