import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import { Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { decodeJsonFile } from "../config/decode.js"
import { runDirFor } from "../context.js"
import { storeError } from "../errors.js"
import { emit } from "../output.js"
import { ReportData } from "../report/data.js"
import { REPORT_FILES, renderReport } from "../report/render.js"
import { writeFileAtomic } from "../store/atomic.js"

/**
 * `bdvax report [run folder]`: re-render a finished run's report (report.md, report.svg, training.svg) from its
 * report-data.json — after changing the renderer, or into another folder with `--out`.
 */
export const reportCommand = Command.make(
  "report",
  {
    run: Argument.Directory("run", { mustExist: true }).pipe(Argument.withDescription("Run folder (default: --run-dir, else runs/demo)"), Argument.optional),
    out: Flag.Directory("out").pipe(Flag.withDescription("Write the rendered files here instead of the run folder"), Flag.optional),
  },
  (o) =>
    Effect.gen(function* () {
      const runDir = Option.isSome(o.run) ? resolve(o.run.value) : yield* runDirFor("demo")
      const dataFile = join(runDir, REPORT_FILES.data)
      if (!existsSync(dataFile))
        return yield* storeError(runDir, `no ${REPORT_FILES.data} here: not a finished run folder (its report is written by the last stage of \`bdvax demo\`)`)
      const data = yield* decodeJsonFile(ReportData, dataFile)
      const rendered = renderReport(data)
      const outDir = Option.isSome(o.out) ? resolve(o.out.value) : runDir
      const files = {
        markdown: join(outDir, REPORT_FILES.markdown),
        svg: join(outDir, REPORT_FILES.svg),
        training: join(outDir, REPORT_FILES.training),
      }
      yield* Effect.tryPromise({
        try: async () => {
          await writeFileAtomic(files.markdown, rendered.markdown)
          await writeFileAtomic(files.svg, rendered.svg)
          await writeFileAtomic(files.training, rendered.trainingSvg)
        },
        catch: (e) => storeError(outDir, "cannot write the report", e),
      })
      yield* emit({ json: { data: dataFile, files }, text: `report: ${files.markdown}\nplots: ${files.svg}, ${files.training}` })
    }),
).pipe(Command.withDescription("Re-render a finished run's report (Markdown + SVG plots) from its report-data.json"))
