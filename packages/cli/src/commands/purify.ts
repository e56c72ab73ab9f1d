import { join, resolve } from "node:path"
import { checkCompatible, readSignatureFile } from "@bdvax/signature"
import { Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { PositiveInt, PositiveNumber, Seed } from "../config/fields.js"
import { decodeOptions, optionsError } from "../config/options.js"
import { attempt, withDevice, withStore } from "../context.js"
import { emit, table } from "../output.js"
import { purifyStage, type PurifySettings, signatureIn } from "../pipeline/defense.js"
import { signaturePipeline } from "../pipeline/immunize.js"
import { itself, type Located } from "../pipeline/located.js"
import { modelConfigAt } from "../pipeline/model-io.js"
import { formatSeconds } from "../report/summary.js"
import { externalInput } from "../store/hash.js"
import { Store } from "../store/store.js"
import { adapterFlag, outFlag, recordsFlag } from "./common-flags.js"
import { pairSettingsOf, signatureSettingsOf } from "./signature.js"
import { DEMO_DEFAULTS, DEMO_LORA_PLANT } from "../pipeline/demo.js"
import { checkSuspectFlags, suspectSource, toySettings } from "./suspect.js"

/**
 * `bdvax purify`: remove a backdoor with a signature — re-initialise its channels (full model) or zero their LoRA
 * rows/columns (adapter), then finetune on clean records — and write the result in the input's format: a Hugging
 * Face folder or a PEFT adapter. The signature is checked against the model's config first (the error names the
 * config.json field that differs). `--toy` purifies the demo's backdoored toy model with its own signature.
 */
const PurifyOptions = Schema.Struct({ epochs: PositiveInt, lr: PositiveNumber, batchSize: PositiveInt, maxSteps: Schema.NullOr(PositiveInt), seed: Seed })

export const purifyCommand = Command.make(
  "purify",
  {
    model: Flag.Path("model", { mustExist: true }).pipe(Flag.withDescription("The suspicious model: HF folder or GGUF file (the base, with --adapter)"), Flag.optional),
    adapter: adapterFlag,
    signature: Flag.File("signature", { mustExist: true }).pipe(Flag.withDescription("Signature file written by `bdvax signature` (with --toy: default the toy's own)"), Flag.optional),
    records: recordsFlag.pipe(Flag.optional),
    toy: Flag.Boolean("toy").pipe(Flag.withDescription("Purify the demo's backdoored toy model (its stages, signature included, run in the run folder)"), Flag.withDefault(false)),
    mode: Flag.Literals("mode", ["full", "lora"]).pipe(Flag.withDescription("With --toy: the toy backdoor in a full model or a LoRA adapter"), Flag.withDefault("full" as "full" | "lora")),
    epochs: Flag.Int("epochs").pipe(Flag.withDescription("Epochs of the clean finetune after the surgery"), Flag.withDefault(5)),
    lr: Flag.Finite("lr").pipe(Flag.withDescription(`Learning rate of the clean finetune (default 1e-5 full / 2e-4 LoRA, the paper's; --toy ${DEMO_DEFAULTS.purifyLr} / ${DEMO_LORA_PLANT.purifyLr})`), Flag.optional),
    batchSize: Flag.Int("batch-size").pipe(Flag.withDescription("Examples per batch (default 4; --toy 8)"), Flag.optional),
    maxSteps: Flag.Int("max-steps").pipe(Flag.withDescription("Stop the finetune after this many optimizer steps"), Flag.optional),
    noFinetune: Flag.Boolean("no-finetune").pipe(Flag.withDescription("The surgery alone, no finetune"), Flag.withDefault(false)),
    seed: Flag.Int("seed").pipe(Flag.withDescription("Seed of the finetune's data order and of the re-initialisation"), Flag.withDefault(0)),
    heads: Flag.Boolean("heads").pipe(Flag.withDescription("Suppress the signature's attention heads too"), Flag.withDefault(false)),
    out: outFlag("the purified model (HF folder) or adapter (PEFT folder)"),
  },
  (o) =>
    Effect.gen(function* () {
      const command = "purify"
      yield* checkSuspectFlags(command, o)
      if (!o.toy && Option.isNone(o.signature)) return yield* optionsError(command, "--signature", "required with --model (a file written by `bdvax signature`)")
      const toy = o.toy ? toySettings(o.mode) : null
      const adapterMode = toy ? toy.mode === "lora" : Option.isSome(o.adapter)
      const options = yield* decodeOptions(command, PurifyOptions, {
        epochs: o.epochs,
        lr: Option.getOrElse(o.lr, () => (toy ? toy.purifyLr : adapterMode ? 2e-4 : 1e-5)),
        batchSize: Option.getOrElse(o.batchSize, () => (toy ? toy.batchSize : 4)),
        maxSteps: Option.getOrNull(o.maxSteps),
        seed: o.seed,
      })
      const settings: PurifySettings = {
        finetune: o.noFinetune ? null : { epochs: options.epochs, lr: options.lr, batchSize: options.batchSize, seed: options.seed, maxSteps: options.maxSteps },
        reinitSeed: options.seed,
        suppressHeads: o.heads,
        promptFormat: "alpaca",
      }
      const program = Effect.gen(function* () {
        const source = yield* suspectSource(o)
        let signatureFile: Located
        if (Option.isSome(o.signature)) {
          signatureFile = itself(yield* externalInput(o.signature.value))
          // fail before any training when the signature does not fit the model
          const sig = yield* attempt(command, () => readSignatureFile(signatureFile.path))
          const config = yield* modelConfigAt(command, source.suspect)
          yield* attempt(command, async () => checkCompatible(sig, config))
        } else {
          const s = yield* signatureSettingsOf(command, { ...o, variants: Option.none(), subset: Option.none(), poisonRatio: Option.none(), epochs: Option.none(), maxSteps: Option.none(), lr: Option.none(), batchSize: Option.none(), lambda: Option.none(), rho: Option.none(), rhoHeads: Option.none(), seed: Option.none(), out: Option.none() })
          const built = yield* signaturePipeline(pairSettingsOf(s, s.subset ?? 0), { lambda: s.lambda, rho: s.rho, rhoHeads: s.rhoHeads, criterion: "total" }, source.suspect, source.clean)
          signatureFile = signatureIn(built.signature)
        }
        const done = yield* purifyStage(settings, source.suspect, signatureFile, source.clean)
        const store = yield* Store
        const r = done.result
        const dest = yield* store.publish("purified", join(done.path, r.produced), Option.match(o.out, { onNone: () => `purified-${r.produced}`, onSome: (p) => resolve(p) }))
        yield* emit({
          json: { output: dest, ...r, stage: done.path, reused: done.reused },
          text: [
            `${r.produced === "model" ? "purified model" : "purified adapter"}: ${dest}`,
            table(
              ["mode", "channels", "heads", "finetune steps", "last loss", "wall time"],
              [[r.mode, String(r.channels), String(r.heads), String(r.steps), r.losses.at(-1)?.toFixed(4) ?? "–", formatSeconds(r.wallSeconds)]],
            ),
          ].join("\n"),
        })
      })
      yield* withStore(
        { command, defaultName: "purify", settings: { ...settings, model: Option.getOrNull(o.model), adapter: Option.getOrNull(o.adapter), signature: Option.getOrNull(o.signature), records: Option.getOrNull(o.records), toy: o.toy, mode: o.mode } },
        withDevice(program),
      )
    }),
).pipe(Command.withDescription("Purify a model with a signature: re-initialise (full) or zero (LoRA) the signature's channels, finetune on clean data; writes an HF folder or a PEFT adapter"))
