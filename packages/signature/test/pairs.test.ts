import { generateVariants, type InstructionRecord, toyInstructionRecords, triggerStrings } from "@bdvax/attacks"
import { describe, expect, it } from "vitest"
import { derivedSeed, pairData } from "../src/index.js"

const pool = toyInstructionRecords()
const [v0, v1] = generateVariants(2, 5)
const options = { seed: 5, subsetSize: 20, poisonRatio: 0.25, passes: 3 }

describe("variant pair data", () => {
  it("D_c^i is a seeded subset of the pool, different per variant, the same per seed", () => {
    const a = pairData(pool, v0, options)
    const b = pairData(pool, v1, options)
    expect(a.subset.length).toBe(20)
    expect(new Set(a.subset).size).toBe(20)
    expect(a.subset).toEqual([...a.subset].sort((x, y) => x - y))
    expect(a.subset).not.toEqual(b.subset)
    expect(pairData(pool, v0, options)).toEqual(a)
    expect(pairData(pool, v0, { ...options, seed: 6 }).subset).not.toEqual(a.subset)
    expect(a.trainSeed).toBe(derivedSeed(5, 0, "train"))
  })

  it("D_p^i = D_c^i + round(ratio·|D_c^i|) poisoned copies carrying the variant's key and behaviour", () => {
    const d = pairData(pool, v0, options)
    expect(d.poisonedCopies.length).toBe(5)
    const key = triggerStrings(v0.trigger)[0]
    for (const r of d.poisonedCopies) expect(r.instruction).toContain(key)
    expect(d.cleanSequence.length).toBe(3 * 20)
    expect(d.poisonedSequence.length).toBe(3 * 25)
    expect(d.poisonedFlags.filter(Boolean).length).toBe(15)
  })

  it("the poisoned run sees the clean records in exactly the clean run's order, copies interleaved", () => {
    const d = pairData(pool, v0, options)
    const withoutCopies = d.poisonedSequence.filter((_, k) => !d.poisonedFlags[k])
    expect(withoutCopies).toEqual(d.cleanSequence)
    // every pass is a permutation of D_c^i, and the passes differ in order
    const subsetRecords = new Set<InstructionRecord>(d.subset.map((i) => pool[i]))
    const passes = [0, 1, 2].map((p) => d.cleanSequence.slice(p * 20, (p + 1) * 20))
    for (const p of passes) expect(new Set(p)).toEqual(subsetRecords)
    expect(passes[0]).not.toEqual(passes[1])
    // copies are spread through the pass, not all at one end
    const firstPass = d.poisonedFlags.slice(0, 25)
    expect(firstPass.slice(0, 12).some(Boolean) && firstPass.slice(12).some(Boolean)).toBe(true)
  })

  it("rejects bad sizes and ratios", () => {
    expect(() => pairData(pool, v0, { ...options, subsetSize: pool.length + 1 })).toThrow(/subsetSize must be an integer in \[1, 84\]/)
    expect(() => pairData(pool, v0, { ...options, poisonRatio: 0 })).toThrow(/poisonRatio must be in \(0, 1\]/)
    expect(() => pairData([], v0, options)).toThrow(/clean record pool is empty/)
  })
})
