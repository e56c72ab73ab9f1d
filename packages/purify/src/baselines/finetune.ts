import { lightFinetune } from "../finetune.js"
import { copyAdapter } from "../lora-zero.js"
import { type DefenseResult, disposingOnError, ownAll } from "../target.js"
import type { BaselineInput } from "./common.js"

/** Baseline 1: just the light clean finetune, on a copy (the input stays intact). */
export async function finetuneBaseline(input: BaselineInput): Promise<DefenseResult> {
  if (input.mode === "full") {
    const params = ownAll(input.params, input.params)
    const training = await disposingOnError(Object.values(params), () => lightFinetune(input.config, params, input.clean, input.finetune))
    return { mode: "full", params, training, selection: null }
  }
  const adapter = copyAdapter(input.adapter)
  const training = await disposingOnError(Object.values(adapter.weights), () => lightFinetune(input.config, input.params, input.clean, { ...input.finetune, adapter }))
  return { mode: "adapter", adapter, training, selection: null }
}
