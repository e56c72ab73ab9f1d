import type { SftExample } from "@bdvax/llm"
import type { LightFinetuneOptions } from "../finetune.js"
import type { SuspectModel } from "../target.js"

/** What every trained baseline gets: the suspicious model, the same clean examples and the same finetune
 *  budget as purification (paper defaults unless overridden — pass purification's own options to compare). */
export type BaselineInput = SuspectModel & {
  readonly clean: readonly SftExample[]
  readonly finetune?: LightFinetuneOptions
}
