#!/usr/bin/env node
/** The `bdvax` executable. */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, Exit } from "effect"
import { EXIT, runCli } from "./main.js"

NodeRuntime.runMain(runCli(process.argv.slice(2)).pipe(Effect.provide(NodeServices.layer)), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    const code = Exit.isSuccess(exit) ? (exit.value as number) : Cause.hasInterruptsOnly(exit.cause) ? EXIT.interrupted : EXIT.failed
    process.exitCode = code
    onExit(code)
    // A WebGPU (Dawn) instance can keep the event loop alive after a successful command: leave anyway.
    setTimeout(() => process.exit(code), 100).unref()
  },
})
