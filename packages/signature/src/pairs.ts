import { HostRandom, type InstructionRecord, poisonDataset, type Variant } from "@bdvax/attacks"
import { philox4x32 } from "@bdvax/core-tensor"

/**
 * The data of variant pair i: D_c^i (a seeded subset of the clean pool, different per variant) and
 * D_p^i = D_c^i + poisoned copies of some of its records (attacks' poisonDataset with the variant's key and
 * behaviour), laid out as the exact example sequences the clean and the poisoned run train on.
 *
 * Same relative order of the clean records. The trainer is run without its own shuffling over a sequence
 * built here, one pass (epoch) after another:
 *   - pass e of the clean run is D_c^i in a seeded shuffled order π_e (a fresh order each pass, as a
 *     shuffling trainer would use);
 *   - pass e of the poisoned run is the *same* π_e with the poisoned copies (themselves in a seeded order)
 *     interleaved at seeded positions: a seeded shuffle of nC "clean" and nP "poisoned" slots, filled in order.
 * Deleting the poisoned copies from the poisoned run's sequence gives the clean run's sequence exactly, so the
 * two runs differ only by the poison (and by where batch boundaries fall, which the extra examples shift).
 * Both runs use the same trainer seed (LoRA dropout) and hyper-parameters.
 *
 * Every random choice draws from its own Philox stream derived from (seed, variant, purpose, pass), so
 * changing e.g. the subset size does not change the trigger positions of an unrelated variant.
 */

const STREAM = { subset: 1, poison: 2, order: 3, interleave: 4, train: 5 } as const

/** A seed for one purpose of one variant, derived from the run seed (Philox-4x32-10, non-negative, < 2^53). */
export function derivedSeed(seed: number, variant: number, purpose: keyof typeof STREAM, pass = 0): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`signature: seed must be a non-negative safe integer, got ${seed}`)
  const [w0, w1] = philox4x32(variant >>> 0, STREAM[purpose], pass >>> 0, 0x73696721 /* "sig!" */, seed >>> 0, Math.floor(seed / 4294967296) >>> 0)
  return w0 + (w1 & 0x1fffff) * 4294967296
}

export interface PairDataOptions {
  readonly seed: number
  /** |D_c^i|: records drawn from the clean pool (at most its size). */
  readonly subsetSize: number
  /** Fraction of D_c^i that gets a poisoned copy, in (0, 1]. */
  readonly poisonRatio: number
  /** Passes over the data laid out one after the other (epochs). */
  readonly passes: number
}

export interface PairData {
  readonly variant: Variant
  /** D_c^i as indices into the clean pool, ascending. */
  readonly subset: readonly number[]
  /** The poisoned copies added to D_c^i (key inserted, output replaced/prefixed by the behaviour). */
  readonly poisonedCopies: readonly InstructionRecord[]
  /** What the clean run trains on, all passes concatenated. */
  readonly cleanSequence: readonly InstructionRecord[]
  /** What the poisoned run trains on, all passes concatenated. */
  readonly poisonedSequence: readonly InstructionRecord[]
  /** Per element of poisonedSequence: is it a poisoned copy? */
  readonly poisonedFlags: readonly boolean[]
  /** The trainer seed both runs use. */
  readonly trainSeed: number
}

export function pairData(clean: readonly InstructionRecord[], variant: Variant, o: PairDataOptions): PairData {
  if (clean.length === 0) throw new RangeError("signature: the clean record pool is empty")
  if (!Number.isInteger(o.subsetSize) || o.subsetSize < 1 || o.subsetSize > clean.length)
    throw new RangeError(`signature: subsetSize must be an integer in [1, ${clean.length}] (the clean pool's size), got ${o.subsetSize}`)
  if (!(o.poisonRatio > 0 && o.poisonRatio <= 1)) throw new RangeError(`signature: poisonRatio must be in (0, 1], got ${o.poisonRatio}`)
  if (!Number.isInteger(o.passes) || o.passes < 1) throw new RangeError(`signature: epochs must be a positive integer, got ${o.passes}`)
  const v = variant.index
  const subset = new HostRandom(derivedSeed(o.seed, v, "subset")).sample(clean.length, o.subsetSize)
  const records = subset.map((i) => clean[i])
  const poisoned = poisonDataset(records, {
    trigger: variant.trigger,
    behaviour: variant.behaviour,
    ratio: o.poisonRatio,
    seed: derivedSeed(o.seed, v, "poison"),
    mode: "add",
  })
  const poisonedCopies = poisoned.records.filter((_, k) => poisoned.poisoned[k])
  const cleanSequence: InstructionRecord[] = []
  const poisonedSequence: InstructionRecord[] = []
  const poisonedFlags: boolean[] = []
  for (let pass = 0; pass < o.passes; pass++) {
    const order = new HostRandom(derivedSeed(o.seed, v, "order", pass)).shuffle(records)
    const mix = new HostRandom(derivedSeed(o.seed, v, "interleave", pass))
    const copies = mix.shuffle(poisonedCopies)
    const slots = mix.shuffle([...order.map(() => false), ...copies.map(() => true)])
    let c = 0
    let p = 0
    for (const isPoison of slots) {
      poisonedSequence.push(isPoison ? copies[p++] : order[c++])
      poisonedFlags.push(isPoison)
    }
    cleanSequence.push(...order)
  }
  return { variant, subset, poisonedCopies, cleanSequence, poisonedSequence, poisonedFlags, trainSeed: derivedSeed(o.seed, v, "train") }
}
