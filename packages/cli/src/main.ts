import { Cause, Console, Effect } from "effect"
import { CliError, Command } from "effect/cli"
import { ablateCommand } from "./commands/ablate.js"
import { attackCommand } from "./commands/attack.js"
import { demoCommand } from "./commands/demo.js"
import { evalCommand } from "./commands/eval.js"
import { infoCommand } from "./commands/info.js"
import { runCommand } from "./commands/run.js"
import { purifyCommand } from "./commands/purify.js"
import { sanityCommand } from "./commands/sanity.js"
import { signatureCommand } from "./commands/signature.js"
import { reportCommand } from "./commands/report.js"
import { errorText } from "./errors.js"
import { GLOBAL_FLAGS } from "./flags.js"
import { Progress } from "./progress/progress.js"
import { VERSION } from "./version.js"

/** The `bdvax` command tree. */
export const rootCommand = Command.make("bdvax").pipe(
  Command.withDescription("bdvax: remove hidden backdoors from instruction-tuned LLMs by immunization (CPU and WebGPU, resumable runs)"),
  Command.withSubcommands([infoCommand, attackCommand, evalCommand, signatureCommand, purifyCommand, sanityCommand, runCommand, ablateCommand, demoCommand, reportCommand]),
  Command.withGlobalFlags(GLOBAL_FLAGS),
)

/** Exit codes: 0 success, 1 a failed command (typed error on stderr), 2 a usage error (help on stderr), 130 interrupted. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

const describe = (e: unknown): string => {
  const tag = typeof e === "object" && e !== null && "_tag" in e ? String((e as { _tag: unknown })._tag) : null
  return tag === null ? errorText(e) : `${tag}: ${errorText(e)}`
}

/**
 * Run the CLI on `argv` (without node and the script) and return the exit code. Usage errors are rendered by
 * effect/cli with the command's help; every other failure is printed as one line naming its cause (file, field,
 * stage), with the stack of unexpected defects when BDVAX_DEBUG is set.
 */
export const runCli = (argv: readonly string[]) =>
  Command.runWith(rootCommand, { version: VERSION })(argv).pipe(
    Effect.provide(Progress.layer),
    Effect.as(EXIT.ok as number),
    Effect.catchCause((cause) =>
      Effect.gen(function* () {
        if (Cause.hasInterruptsOnly(cause)) {
          yield* Console.error("bdvax: interrupted")
          return EXIT.interrupted
        }
        const error = Cause.squash(cause)
        if (CliError.isCliError(error)) return EXIT.usage
        yield* Console.error(`bdvax: ${describe(error)}`)
        if (process.env.BDVAX_DEBUG && error instanceof Error && error.stack) yield* Console.error(error.stack)
        return EXIT.failed
      }),
    ),
  )
