import { basename } from "node:path"
import { Effect } from "effect"
import { Argument, Command } from "effect/cli"
import { decodeJsonFile } from "../config/decode.js"
import { Experiment, experimentCells } from "../config/experiment.js"
import { withDevice, withStore } from "../context.js"
import { emit, percent, table } from "../output.js"
import { runExperiment } from "../pipeline/experiment.js"
import { note } from "../progress/progress.js"
import { formatSeconds } from "../report/summary.js"

/**
 * `bdvax run <experiment.json>`: every cell of models × attacks × tasks × defenses as resumable stages, all into
 * one report (report.md, report.svg) in the run folder (default runs/<experiment name>).
 */
export const runCommand = Command.make(
  "run",
  {
    experiment: Argument.File("experiment", { mustExist: true }).pipe(Argument.withDescription("Experiment file (JSON): models × attacks × tasks × defenses")),
  },
  (o) =>
    Effect.gen(function* () {
      const experiment = yield* decodeJsonFile(Experiment, o.experiment)
      const cells = experimentCells(experiment)
      yield* note(`${o.experiment}: experiment "${experiment.name}" is valid: ${cells.length} cell(s)`)
      const outcome = yield* withStore(
        { command: `run ${basename(o.experiment)}`, defaultName: experiment.name, settings: experiment },
        withDevice(runExperiment(experiment, o.experiment)),
      )
      yield* emit({
        json: outcome,
        text: [
          table(
            ["model", "attack", "task", "defense", "ASR", "false trigger", "clean exact match", "wall time"],
            outcome.cells.map((c) => [c.model, c.attack, c.task, c.defense, percent(c.result.asr.keyword), percent(c.result.falseTrigger.keyword), percent(c.result.cleanAccuracy), formatSeconds(c.wallSeconds)]),
          ),
          "",
          `report: ${outcome.report["report.md"]} (plot: report.svg)`,
          `run folder: ${outcome.runDir} (re-run to resume; finished stages are reused)`,
        ].join("\n"),
      })
    }),
).pipe(Command.withDescription("Run an experiment file: every cell of models × attacks × tasks × defenses as resumable stages, all into one report"))
