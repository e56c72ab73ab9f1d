/** Two variant pairs on a tiny toy Llama → deltas → Eq. 2 scores → a signature file, written and read back. */
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig } from "@bdvax/attacks"
import { Rng, TensorDevice } from "@bdvax/core-tensor"
import { initParams, Tokenizer, type TokenizerError, type TrainingError } from "@bdvax/llm"
import {
  checkCompatible, makeSignature, modelShape, type PairOptions, readSignatureFile, resolvePairSettings, scoreDeltas,
  SignatureFileError, signatureFileError, type SignatureMismatchError, signatureSettings, trainVariantPair, writeSignatureFile,
} from "@bdvax/signature"
import { Cause, Console, Effect, Exit } from "effect"

// Signature-file I/O keeps SignatureFileError (file + field) in the error channel; the folder is removed on exit.
const signatureIo = <A>(file: string, run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (e) => (e instanceof SignatureFileError ? e : signatureFileError(file, "(root)", String(e))) })
const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "bdvax-sig-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true })),
)

const program = Effect.gen(function* () {
  const dev = yield* TensorDevice
  const tokenizer = yield* Effect.tryPromise({ try: () => Tokenizer.fromFolder(TOY_TOKENIZER_DIR), catch: (e) => e as TokenizerError })
  const config = toyLlamaConfig(tokenizer, { hiddenSize: 32, intermediateSize: 64, numAttentionHeads: 2, numKeyValueHeads: 1 })
  // The suspicious model θ_s (a real run loads the checkpoint under suspicion); it is never modified.
  const options: PairOptions = {
    model: { config, params: initParams(dev, config, new Rng(0)) },
    tokenizer,
    clean: toyInstructionRecords(),
    numVariants: 2,
    training: { maxSteps: 8, lr: 3e-3, batchSize: 4 },
  }
  // θ_c^i, θ_p^i share seed, order and hyper-parameters; Δ_i = θ_p^i − θ_c^i is kept on the host. Pairs are
  // independent: a pipeline stores each as a resumable stage (saveDelta) and may run them concurrently.
  const pairs = yield* Effect.forEach([0, 1], (i) => Effect.tryPromise({ try: () => trainVariantPair(options, i), catch: (e) => e as TrainingError }))
  for (const p of pairs) yield* Console.log(`variant ${p.variant.index}: ${JSON.stringify(p.variant.trigger)} → ${JSON.stringify(p.variant.behaviour)}`)
  const shape = modelShape(config)
  const scores = scoreDeltas(shape, pairs.map((p) => p.delta.tensors)) // Eq. 2, λ = 0.01
  const settings = signatureSettings(resolvePairSettings(options), { rho: 0.05 })
  const signature = makeSignature({ architecture: config.architecture, model: shape, mode: "full", settings, scores })

  const file = join(yield* tempDir, "signature.json")
  yield* signatureIo(file, () => writeSignatureFile(file, signature))
  const read = yield* signatureIo(file, () => readSignatureFile(file)) // validated by the signature Schema
  yield* Effect.try({ try: () => checkCompatible(read, config), catch: (e) => e as SignatureMismatchError })
  for (const { layer, channels } of read.selection.mlp) yield* Console.log(`layer ${layer}: channels ${channels.join(", ")}`)
  const selected = read.selection.mlp.reduce((n, l) => n + l.channels.length, 0)
  yield* Console.log(`selected ${selected} of ${config.numHiddenLayers * config.intermediateSize} MLP channels (ρ = ${read.settings.rho})`)
})

const exit = await Effect.runPromiseExit(program.pipe(Effect.scoped, Effect.provide(TensorDevice.layer("cpu"))))
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
