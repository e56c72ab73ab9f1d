/**
 * A custom pipeline from the CLI's stages: the demo's backdoored toy model, a signature from 3 variant pairs, and
 * purification at two ratios, each evaluated. Every step is a resumable stage in a run folder: run it twice with
 * the same BDVAX_EXAMPLE_RUN and the second run reuses everything.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { TensorDevice } from "@bdvax/core-tensor"
import { Cause, Console, Effect, Exit, Layer } from "effect"
import {
  DEMO_DEFAULTS,
  defendedModel,
  demoEvalSettings,
  demoFinetune,
  demoPairSettings,
  demoWorld,
  evaluate,
  percent,
  Progress,
  purifyStage,
  signatureIn,
  signaturePipeline,
  signatureReselect,
  Store,
} from "@bdvax/cli"

const settings = { ...DEMO_DEFAULTS, variants: 3 }

const program = Effect.gen(function* () {
  const world = yield* demoWorld(settings) // stages toy-data → toy-base → plant
  const backdoored = yield* evaluate(demoEvalSettings(settings), world.suspect, world.heldOut, null, "eval-backdoored")
  yield* Console.log(`backdoored: ASR ${percent(backdoored.result.asr.keyword)}, clean exact match ${percent(backdoored.result.cleanAccuracy)}`)
  // the defender's stages: variant-pair-0 … variant-pair-2, signature — from the suspicious model and clean records only
  const { signature, wallSeconds } = yield* signaturePipeline(
    demoPairSettings(settings),
    { lambda: settings.lambda, rho: 0.1, rhoHeads: null, criterion: "total" },
    world.suspect,
    world.defenderClean,
  )
  yield* Console.log(`signature: ${signature.result.channels} channels from ${settings.variants} variant pairs in ${wallSeconds.toFixed(1)} s`)
  for (const rho of [0.1, 0.2]) {
    // another ρ is a reselection from the stored Eq. 2 scores: no new variant pairs
    const sig = rho === 0.1 ? signature : yield* signatureReselect({ rho }, signature, `signature-rho-${rho}`)
    const purified = yield* purifyStage(
      { finetune: demoFinetune(settings), reinitSeed: 0, suppressHeads: false, promptFormat: "alpaca" },
      world.suspect,
      signatureIn(sig),
      world.defenderClean,
      `purify-rho-${rho}`,
    )
    const e = yield* evaluate(demoEvalSettings(settings), defendedModel(purified, world.suspect), world.heldOut, null, `eval-rho-${rho}`)
    yield* Console.log(`ρ ${rho}: ${sig.result.channels} channels → ASR ${percent(e.result.asr.keyword)}, clean exact match ${percent(e.result.cleanAccuracy)}`)
  }
})

// The services a pipeline needs: a tensor device, and the artifact store of a run folder (with its progress lines).
const runDir = process.env.BDVAX_EXAMPLE_RUN ?? mkdtempSync(join(tmpdir(), "bdvax-example-"))
const services = Layer.mergeAll(
  TensorDevice.layer("cpu"),
  Store.layer({ runDir, command: "effect-pipeline", settings }).pipe(Layer.provideMerge(Progress.layerWith("off", { write: () => {}, columns: () => 80 }))),
)
const exit = await Effect.runPromiseExit(program.pipe(Effect.provide(services)))
if (process.env.BDVAX_EXAMPLE_RUN === undefined) rmSync(runDir, { recursive: true, force: true })
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
