import { ATTACK_NAMES, TASK_NAMES } from "../config/fields.js"
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { optionsError } from "../config/options.js"
import { withDevice, withStore } from "../context.js"
import { emit, percent, table } from "../output.js"
import { ABLATION_DEFAULTS, type AblationKind, type AblationOptions, runAblation } from "../pipeline/ablations.js"
import { formatSeconds } from "../report/summary.js"
import type { AttackName, TaskName } from "@bdvax/attacks"
import { toySettings } from "./suspect.js"

/**
 * `bdvax ablate n|score|rho|transfer|seeds`: the paper's ablations on the demo's toy world (pipeline/ablations.ts).
 * They run in the demo's run folder by default (runs/demo), so the demo's stages — base, plant, the N variant
 * pairs, the signature — are reused and only what the ablation changes is computed. Each prints a table and
 * writes a report into <run folder>/ablate-<kind>/.
 */
const modeFlag = Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("The toy backdoor in a full model or a LoRA adapter (as `bdvax demo --mode`)"), Flag.withDefault("full" as "full" | "lora"))
const valuesFlag = (what: string) => Flag.String("values").pipe(Flag.withDescription(what), Flag.optional)

const parseNumbers = (command: string, text: string) =>
  Effect.gen(function* () {
    const xs = text.split(",").map((x) => x.trim()).filter((x) => x !== "").map(Number)
    if (xs.length === 0 || xs.some((x) => !Number.isFinite(x))) return yield* optionsError(command, "--values", `expected comma-separated numbers, got ${JSON.stringify(text)}`)
    return xs
  })

const parseCells = (command: string, text: string) =>
  Effect.gen(function* () {
    const cells: Array<{ attack: AttackName; task: TaskName }> = []
    for (const item of text.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
      const [attack, task] = item.split("/")
      if (!(ATTACK_NAMES as readonly string[]).includes(attack) || !(TASK_NAMES as readonly string[]).includes(task))
        return yield* optionsError(command, "--cells", `expected attack/task pairs such as badnet/refusal (attacks ${ATTACK_NAMES.join(", ")}; tasks ${TASK_NAMES.join(", ")}), got ${JSON.stringify(item)}`)
      cells.push({ attack: attack as AttackName, task: task as TaskName })
    }
    return cells
  })

const run = (kind: AblationKind, mode: "full" | "lora", options: AblationOptions) =>
  Effect.gen(function* () {
    const s = toySettings(mode)
    const outcome = yield* withStore({ command: `ablate ${kind}`, defaultName: "demo", settings: { ...s, ablation: kind, ...options } }, withDevice(runAblation(kind, s, options)))
    yield* emit({
      json: outcome,
      text: [
        table(
          ["condition", "role", "ASR", "false trigger", "clean exact match", "channels", "wall time"],
          outcome.rows.map((r) => [r.name, r.role, percent(r.result.asr.keyword), percent(r.result.falseTrigger.keyword), percent(r.result.cleanAccuracy), r.channels === null ? "–" : String(r.channels), formatSeconds(r.wallSeconds)]),
        ),
        "",
        `report: ${outcome.report["report.md"]}`,
      ].join("\n"),
    })
  })

const nCommand = Command.make("n", { mode: modeFlag, values: valuesFlag("N values to score (default 1 … the demo's N); pairs are the demo's, no new training") }, (o) =>
  Effect.gen(function* () {
    const values = Option.isSome(o.values) ? yield* parseNumbers("ablate n", o.values.value) : undefined
    const n = toySettings(o.mode).variants
    if (values?.some((k) => !(Number.isInteger(k) && k >= 1 && k <= n))) return yield* optionsError("ablate n", "--values", `N must be integers in [1, ${n}] (the demo's variant pairs)`)
    yield* run("n", o.mode, values === undefined ? {} : { values })
  }),
).pipe(Command.withDescription("Number of variant pairs N: the signature from the first k of the demo's pairs, purified and evaluated"))

const scoreCommand = Command.make("score", { mode: modeFlag }, (o) => run("score", o.mode, {})).pipe(
  Command.withDescription("Score composition: Eq. 2's norm term alone, alignment term alone, and combined"),
)

const rhoCommand = Command.make("rho", { mode: modeFlag, values: valuesFlag(`Ratios ρ (default ${ABLATION_DEFAULTS.rho.join(",")})`) }, (o) =>
  Effect.gen(function* () {
    const values = Option.isSome(o.values) ? yield* parseNumbers("ablate rho", o.values.value) : undefined
    if (values?.some((r) => !(r > 0 && r <= 1))) return yield* optionsError("ablate rho", "--values", "ratios must be in (0, 1]")
    yield* run("rho", o.mode, values === undefined ? {} : { values })
  }),
).pipe(Command.withDescription("ρ sweep: the signature at several ratios (reselected from its scores), next to random channels at each"))

const seedsCommand = Command.make("seeds", { mode: modeFlag, values: valuesFlag(`Signature seeds (default ${ABLATION_DEFAULTS.seeds.join(",")})`) }, (o) =>
  Effect.gen(function* () {
    const values = Option.isSome(o.values) ? yield* parseNumbers("ablate seeds", o.values.value) : undefined
    if (values?.some((x) => !(Number.isSafeInteger(x) && x >= 0))) return yield* optionsError("ablate seeds", "--values", "seeds must be non-negative integers")
    yield* run("seeds", o.mode, values === undefined ? {} : { values })
  }),
).pipe(Command.withDescription("Signature seeds: the whole signature for several variant draws (how much the toy result depends on the draw)"))

const transferCommand = Command.make(
  "transfer",
  { mode: modeFlag, cells: Flag.String("cells").pipe(Flag.withDescription(`attack/task pairs (default ${ABLATION_DEFAULTS.transfer.map((c) => `${c.attack}/${c.task}`).join(",")})`), Flag.optional) },
  (o) =>
    Effect.gen(function* () {
      const cells = Option.isSome(o.cells) ? yield* parseCells("ablate transfer", o.cells.value) : undefined
      yield* run("transfer", o.mode, cells === undefined ? {} : { cells })
    }),
).pipe(Command.withDescription("Transfer: the demo's signature applied to toy models backdoored with other attacks and tasks, next to their own signatures"))

export const ablateCommand = Command.make("ablate").pipe(
  Command.withDescription("The paper's ablations on the demo's toy world (reusing the demo's stages in runs/demo): n, score, rho, transfer, seeds"),
  Command.withSubcommands([nCommand, scoreCommand, rhoCommand, transferCommand, seedsCommand]),
)
