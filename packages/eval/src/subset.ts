import { philox4x32 } from "@bdvax/core-tensor"

/**
 * `--limit`-style selection, applied by every loader after the whole file has been parsed and checked.
 * - `limit` alone: the first N items (lm-eval's `--limit N`); a `limit` below 1 is a fraction of the items,
 *   rounded up (lm-eval's `--limit 0.1`).
 * - `limit` with `seed`: a seeded sample of that many items, kept in file order (Philox-4x32-10, the same
 *   generator bdvax uses everywhere, so a seed means the same subset on every machine).
 */
export interface Subset {
  readonly limit?: number
  readonly seed?: number
}

export function subsetSize(total: number, limit: number | undefined): number {
  if (limit === undefined) return total
  if (!(limit > 0)) throw new RangeError(`limit must be > 0, got ${limit}`)
  return Math.min(total, limit < 1 ? Math.ceil(total * limit) : Math.floor(limit))
}

/** k distinct indices of [0, n) from the seed, increasing. */
export function seededIndices(n: number, k: number, seed: number): number[] {
  const key0 = seed >>> 0
  const key1 = Math.floor(seed / 4294967296) >>> 0
  const a = Array.from({ length: n }, (_, i) => i)
  let counter = 0
  const uniform = () => {
    const [w] = philox4x32(counter >>> 0, Math.floor(counter / 4294967296) >>> 0, 0x6576616c, 0, key0, key1)
    counter++
    return w / 4294967296
  }
  // partial Fisher–Yates: the first k slots end up a uniform k-subset
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(uniform() * (n - i))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a.slice(0, k).sort((x, y) => x - y)
}

export function selectSubset<T>(items: readonly T[], subset: Subset | undefined): T[] {
  if (!subset || subset.limit === undefined) return items.slice()
  const k = subsetSize(items.length, subset.limit)
  if (subset.seed === undefined) return items.slice(0, k)
  return seededIndices(items.length, k, subset.seed).map((i) => items[i])
}
