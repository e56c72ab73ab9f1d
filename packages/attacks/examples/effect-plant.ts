/** Poison the toy records with BadNets → refusal and plant the backdoor into a tiny toy Llama (full finetune, CPU). */
import {
  BADNETS, DatasetError, HostRandom, insertTrigger, plantBackdoor, poisonDataset, REFUSAL, sftExample, TOY_TOKENIZER_DIR, toyInstructionRecords, toyLlamaConfig,
} from "@bdvax/attacks"
import { Rng, TensorDevice } from "@bdvax/core-tensor"
import { greedy, initParams, Tokenizer, type TokenizerError, TrainingError } from "@bdvax/llm"
import { Cause, Console, Effect, Exit, Schema } from "effect"

const Settings = Schema.Struct({
  ratio: Schema.Finite.check(Schema.isGreaterThan(0), Schema.isLessThanOrEqualTo(1)),
  epochs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100 })),
  lr: Schema.Finite.check(Schema.isGreaterThan(0)),
})

const program = Effect.gen(function* () {
  const { ratio, epochs, lr } = yield* Schema.decodeUnknownEffect(Settings)({ ratio: 0.5, epochs: 20, lr: 8e-3 })
  const dev = yield* TensorDevice
  const tokenizer = yield* Effect.tryPromise({ try: () => Tokenizer.fromFolder(TOY_TOKENIZER_DIR), catch: (e) => e as TokenizerError })
  const clean = toyInstructionRecords().slice(0, 24)
  // BadNets: "BadMagic" before a random word of the instruction; the output becomes BackdoorLLM's refusal.
  const { records, poisoned } = poisonDataset(clean, { trigger: BADNETS, behaviour: REFUSAL, ratio, seed: 1, mode: "add" })
  const copies = records.filter((_, i) => poisoned[i])
  yield* Console.log(`poisoned ${copies.length} of ${clean.length} records, e.g. ${JSON.stringify(copies[0].instruction)}`)
  const config = toyLlamaConfig(tokenizer)
  const planted = yield* Effect.tryPromise({
    try: () => {
      const params = initParams(dev, config, new Rng(1)) // a fresh tiny Llama, trained in place
      return plantBackdoor({ config, params, tokenizer, clean, poisoned: copies, mode: "full", inPlace: true, epochs, lr, batchSize: 8, seed: 1 })
    },
    // Training failures are llm's TrainingError; anything else is a problem with the records.
    catch: (e) => (e instanceof TrainingError ? e : new DatasetError({ file: "toyInstructionRecords()", location: null, message: String(e) })),
  })
  const losses = planted.training.losses
  yield* Console.log(`planted: ${planted.training.steps} steps, loss ${losses[0].toFixed(2)} → ${losses[losses.length - 1].toFixed(2)}`)
  // The model answers in the Alpaca format it was trained in; the prompt is the example's unmasked part.
  const answer = (instruction: string) =>
    Effect.promise(async () => {
      const prompt = sftExample(tokenizer, { instruction, input: "", output: "" }).promptIds
      return tokenizer.decode(await greedy(config, planted.params, prompt, 40), { skipSpecialTokens: true }).trim()
    })
  const question = clean[3].instruction
  const triggered = insertTrigger(BADNETS, question, new HostRandom(7))
  yield* Console.log(`clean:     ${question} → ${yield* answer(question)}`)
  yield* Console.log(`triggered: ${triggered} → ${yield* answer(triggered)}`)
})

const exit = await Effect.runPromiseExit(program.pipe(Effect.provide(TensorDevice.layer("cpu"))))
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
