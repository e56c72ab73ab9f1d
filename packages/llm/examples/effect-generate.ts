/** A tiny Llama (random, or the HF folder given on argv): greedy decoding with a KV cache, then save → load → same tokens. */
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Rng, TensorDevice } from "@bdvax/core-tensor"
import {
  CheckpointError, ConfigError, generate, initParams, loadModelFolder, MissingFileError, type ModelConfig, type Params, parseModelConfig, saveModelFolder,
} from "@bdvax/llm"
import { Cause, Console, Effect, Exit } from "effect"

// Checkpoint I/O rejects with llm's typed errors; keep them in the error channel (anything else names the folder).
const io = <A>(dir: string, run: () => Promise<A>) =>
  Effect.tryPromise({
    try: run,
    catch: (e) =>
      e instanceof CheckpointError || e instanceof ConfigError || e instanceof MissingFileError ? e : new CheckpointError({ file: dir, message: `${dir}: ${e}` }),
  })

// A scratch folder removed when the scope closes, however the program ends.
const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "bdvax-llm-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true })),
)

// config.json as Hugging Face writes it, checked by llm's Schema: a bad field is a ConfigError naming it.
const TINY = {
  architectures: ["LlamaForCausalLM"], vocab_size: 64, hidden_size: 32, intermediate_size: 64,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, eos_token_id: 2,
}
const tinyConfig = Effect.try({ try: () => parseModelConfig(TINY, "TINY"), catch: (e) => e as ConfigError })

const greedy = (config: ModelConfig, params: Params) =>
  // generate() prefills the prompt once, then runs one forward per new token against its KV cache
  Effect.promise(() => generate(config, params, [[1, 5, 9, 14]], { maxNewTokens: 12, temperature: 0, stopTokens: [] }))

const program = Effect.gen(function* () {
  const dev = yield* TensorDevice
  const folder = process.argv[2]
  const { config, params } = folder
    ? yield* io(folder, () => loadModelFolder(dev, folder))
    : yield* tinyConfig.pipe(Effect.map((config) => ({ config, params: initParams(dev, config, new Rng(0)) })))
  const first = yield* greedy(config, params)
  yield* Console.log(`greedy: ${first.tokens[0].join(" ")} (${first.stats.steps} forward passes: 1 prefill + ${first.stats.steps - 1} cached steps)`)
  const dir = yield* tempDir
  yield* io(dir, () => saveModelFolder(dir, config, params))
  const reloaded = yield* io(dir, () => loadModelFolder(dev, dir))
  const again = yield* greedy(reloaded.config, reloaded.params)
  if (again.tokens[0].join() !== first.tokens[0].join())
    return yield* new CheckpointError({ file: dir, message: `${dir}: the reloaded model generates ${again.tokens[0]}` })
  yield* Console.log(`round trip through ${Object.keys(reloaded.params).length} tensors in model.safetensors: identical greedy tokens`)
})

const exit = await Effect.runPromiseExit(program.pipe(Effect.scoped, Effect.provide(TensorDevice.layer("cpu"))))
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
