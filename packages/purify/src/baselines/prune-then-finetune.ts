import { disposeCreated } from "../edits.js"
import { lightFinetune } from "../finetune.js"
import { zeroLoraChannels } from "../lora-zero.js"
import { zeroChannels } from "../reinit.js"
import type { ChannelSelection } from "../selection.js"
import { type DefenseResult, ownAll } from "../target.js"
import type { BaselineInput } from "./common.js"

/** Zero a selection (full weights, or the adapter's rows/columns) on a copy, then the light clean finetune. */
export async function pruneThenFinetune(input: BaselineInput, selection: ChannelSelection): Promise<DefenseResult> {
  if (input.mode === "full") {
    const params = ownAll(zeroChannels(input.config, input.params, selection), input.params)
    try {
      const training = await lightFinetune(input.config, params, input.clean, input.finetune)
      return { mode: "full", params, training, selection }
    } catch (e) {
      disposeCreated(params, input.params)
      throw e
    }
  }
  const zeroed = zeroLoraChannels(input.config, input.adapter, selection)
  const adapter = { ...zeroed, weights: ownAll(zeroed.weights, input.adapter.weights) }
  try {
    const training = await lightFinetune(input.config, input.params, input.clean, { ...input.finetune, adapter })
    return { mode: "adapter", adapter, training, selection }
  } catch (e) {
    disposeCreated(adapter.weights, input.adapter.weights)
    throw e
  }
}
