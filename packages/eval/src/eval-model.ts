import type { Device } from "@bdvax/core-tensor"
import {
  alpacaPrompt as llamaFactoryAlpacaPrompt,
  applyChatTemplate,
  type ChatMessage,
  disposeLora,
  loadGgufModel,
  loadModelFolder,
  loadPeftAdapter,
  type LoraAdapter,
  type ModelConfig,
  type Params,
  readGgufMetadata,
  Tokenizer,
  tokenizerFromGguf,
} from "@bdvax/llm"
import type { AsrPrompt } from "./judges.js"

/**
 * A bdvax model as the evaluation adapters (model-adapters.ts) see it: the @bdvax/llm config and parameters, its
 * tokenizer, and optionally a LoRA adapter applied on top (in evaluation mode: no dropout).
 */
export interface EvalModel {
  readonly config: ModelConfig
  readonly params: Params
  readonly tokenizer: Tokenizer
  readonly lora?: LoraAdapter
}

/** A Llama GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) with the tokenizer and chat template stored in its metadata. */
export async function loadEvalModelGguf(dev: Device, path: string): Promise<EvalModel> {
  const header = await readGgufMetadata(path)
  const tokenizer = tokenizerFromGguf(header.metadata, path)
  const { config, params } = await loadGgufModel(dev, path)
  return { config, params, tokenizer }
}

/** A Hugging Face model folder (config.json, safetensors, tokenizer.json) and optionally a PEFT LoRA adapter folder. */
export async function loadEvalModelFolder(dev: Device, dir: string, options: { readonly adapterDir?: string } = {}): Promise<EvalModel> {
  const tokenizer = await Tokenizer.fromFolder(dir)
  const { config, params } = await loadModelFolder(dev, dir)
  if (options.adapterDir === undefined) return { config, params, tokenizer }
  const { adapter } = await loadPeftAdapter(dev, options.adapterDir, config)
  return { config, params, tokenizer, lora: adapter }
}

/** Free every tensor of the model (and its adapter). */
export function disposeEvalModel(model: EvalModel): void {
  for (const t of Object.values(model.params)) t.dispose()
  if (model.lora) disposeLora(model.lora)
}

/**
 * The tokens that end a generation: the config's eos ids and the tokenizer's eos token (SmolLM2's config says
 * <|im_end|> while a base Llama's says </s>; both are honoured), without duplicates.
 */
export function stopTokenIds(model: Pick<EvalModel, "config" | "tokenizer">): number[] {
  const ids = [...model.config.eosTokenId]
  const eos = model.tokenizer.eosTokenId
  if (eos !== null && !ids.includes(eos)) ids.push(eos)
  return ids
}

/** The user turn of an ASR prompt: instruction, then input on the next line (LLaMA-Factory's alpaca user content). */
export const userContent = (p: AsrPrompt): string => (p.input ? `${p.instruction}\n${p.input}` : p.instruction)

/**
 * A `PromptFormat` (for evaluateAsr / answerMtBench-style callers) that renders the prompt as one user turn in the
 * tokenizer's chat template with the generation prompt (transformers' apply_chat_template(add_generation_prompt=True)).
 * `system` adds a system turn first; without it the template's default (if any) applies.
 */
export function chatPromptFormat(tokenizer: Tokenizer, options: { readonly system?: string; readonly templateName?: string } = {}): (p: AsrPrompt) => string {
  return (p) => {
    const messages: ChatMessage[] = [
      ...(options.system === undefined ? [] : [{ role: "system", content: options.system }]),
      { role: "user", content: userContent(p) },
    ]
    return applyChatTemplate(tokenizer, messages, { addGenerationPrompt: true, templateName: options.templateName })
  }
}

/**
 * A `PromptFormat` giving LLaMA-Factory's "alpaca" prompt (what BackdoorLLM trained with and what
 * @bdvax/llm's `formatAlpaca` trains on): input joined to the instruction by a newline inside one
 * "### Instruction:" block. For records without an input it equals eval's Stanford "alpaca" format.
 */
export const llamaFactoryAlpacaFormat = (p: AsrPrompt): string => llamaFactoryAlpacaPrompt({ instruction: p.instruction, input: p.input ?? "", output: "" })
