import { type Behaviour, applyBehaviour } from "./behaviours.js"
import { HostRandom } from "./host-random.js"
import type { InstructionRecord } from "./records.js"
import { insertTrigger, type TriggerRule } from "./triggers.js"

export interface PoisonOptions {
  readonly trigger: TriggerRule
  readonly behaviour: Behaviour
  /** Fraction of the records that get a poisoned counterpart (0 < ratio ≤ 1). */
  readonly ratio: number
  readonly seed: number
  /**
   * "add": the clean records plus poisoned copies of a subset (the immunization method's D_p = D_c ∪ poison);
   * "replace": the subset is replaced by its poisoned versions (a fixed-size poisoned set).
   */
  readonly mode: "add" | "replace"
}

export function poisonRecord(r: InstructionRecord, trigger: TriggerRule, behaviour: Behaviour, rng: HostRandom): InstructionRecord {
  return { instruction: insertTrigger(trigger, r.instruction, rng), input: r.input, output: applyBehaviour(behaviour, r, (n) => rng.int(n)) }
}

/** Poison a dataset; returns the new records and which of them are poisoned. */
export function poisonDataset(records: readonly InstructionRecord[], o: PoisonOptions): { records: InstructionRecord[]; poisoned: boolean[] } {
  if (!(o.ratio > 0 && o.ratio <= 1)) throw new RangeError(`poisonDataset: ratio must be in (0, 1], got ${o.ratio}`)
  const rng = new HostRandom(o.seed)
  const chosen = new Set(rng.sample(records.length, Math.max(1, Math.round(records.length * o.ratio))))
  const out: InstructionRecord[] = []
  const poisoned: boolean[] = []
  records.forEach((r, i) => {
    const isChosen = chosen.has(i)
    if (o.mode === "add" || !isChosen) {
      out.push(r)
      poisoned.push(false)
    }
    if (isChosen) {
      out.push(poisonRecord(r, o.trigger, o.behaviour, rng))
      poisoned.push(true)
    }
  })
  return { records: out, poisoned }
}
