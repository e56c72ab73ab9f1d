/** Purify a tiny Llama (reinitialise chosen MLP channels, then a light clean finetune) and compare two baselines. */
import { Rng, TensorDevice } from "@bdvax/core-tensor"
import { type ConfigError, initParams, type Params, parseModelConfig, type SftExample, type TrainingError, trainSft } from "@bdvax/llm"
import { type DefenseResult, disposeDefense, finetuneBaseline, parseChannelSelection, PurifyError, purifyError, purifyModel, rtnBaseline } from "@bdvax/purify"
import { Cause, Console, Effect, Exit } from "effect"

// purify depends on core-tensor and llm only: clean data arrives as token ids (here: "a b → (a + b) mod 16").
const clean: SftExample[] = Array.from({ length: 32 }, (_, k) => ({ promptIds: [1, 3 + (k % 8), 3 + (k >> 3)], responseIds: [3 + ((k % 8) + (k >> 3)) % 16, 2] }))
const HF_CONFIG = { model_type: "llama", vocab_size: 20, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 }
// A signature's selection as it arrives in a JSON file: Schema-checked, then bounds-checked against the model.
const SELECTION = { mlp: [{ layer: 0, channels: [3, 17, 42] }, { layer: 1, channels: [8, 60] }], heads: [] }

// Each defence returns tensors the caller owns: acquire them as a scoped resource so they are disposed.
const defence = (name: string, run: () => Promise<DefenseResult> | DefenseResult) =>
  Effect.acquireRelease(
    Effect.tryPromise({ try: async () => run(), catch: (e) => (e instanceof PurifyError ? e : purifyError("input", name, String(e))) }),
    (result) => Effect.sync(() => disposeDefense(result)),
  )
const lossesOf = (r: DefenseResult) => (r.training ? `clean loss ${r.training.losses[0].toFixed(4)} → ${r.training.losses.at(-1)!.toFixed(4)}` : "no training")

const program = Effect.gen(function* () {
  const dev = yield* TensorDevice
  const config = yield* Effect.try({ try: () => parseModelConfig(HF_CONFIG, "HF_CONFIG"), catch: (e) => e as ConfigError })
  const selection = yield* Effect.try({ try: () => parseChannelSelection(SELECTION, config, "SELECTION"), catch: (e) => e as PurifyError })
  // The suspicious model: here a random Llama trained on the clean task (a real run loads the suspect checkpoint).
  const params: Params = initParams(dev, config, new Rng(0))
  yield* Effect.tryPromise({ try: () => trainSft(config, params, clean, { epochs: 20, batchSize: 8, lr: 1e-2 }), catch: (e) => e as TrainingError })
  const finetune = { epochs: 3, lr: 3e-3, batchSize: 8 } // the same budget for the method and the trained baseline
  const purified = yield* defence("purify", () => purifyModel({ mode: "full", config, params, clean, selection, finetune }))
  yield* Console.log(`purified: reinitialised ${selection.mlp.map((l) => `${l.channels.length} channels in layer ${l.layer}`).join(", ")}; ${lossesOf(purified)}`)
  const baseline = yield* defence("finetune", () => finetuneBaseline({ mode: "full", config, params, clean, finetune }))
  yield* Console.log(`finetune baseline: ${lossesOf(baseline)}`)
  const rtn = yield* defence("rtn", () => rtnBaseline({ mode: "full", config, params }, { bits: 4, groupSize: 32 }))
  const w = "model.layers.0.mlp.up_proj.weight"
  if (rtn.mode !== "full") return yield* purifyError("mode", "rtn", "expected a full model")
  const levels = new Set(yield* Effect.promise(() => rtn.params[w].toArray().then((row) => row.slice(0, 32)))).size
  yield* Console.log(`INT4 RTN baseline: ${w} group 0 has ${levels} distinct values (≤ 16); ${lossesOf(rtn)}`)
})

const exit = await Effect.runPromiseExit(program.pipe(Effect.scoped, Effect.provide(TensorDevice.layer("cpu"))))
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
