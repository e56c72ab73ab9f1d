/**
 * @bdvax/purify — removing a backdoor given its signature: reinitialise (full model) or LoRA-zero (adapter) the
 * signature's MLP channels (and optionally heads), then a light clean finetune; the baselines the paper compares
 * against (finetuning, magnitude pruning, fine-pruning with Wanda, INT4 RTN, CROW) at the same budget; and the
 * sanity-check ablations of the backdoor update.
 */
export * from "./errors.js"
export * from "./selection.js"
export { type Edit, modelEdits, loraEdits, applyEdits, disposeCreated, copyTensor } from "./edits.js"
export * from "./reinit.js"
export * from "./lora-zero.js"
export * from "./finetune.js"
export * from "./target.js"
export * from "./purify.js"
export * from "./ablations.js"
export type { BaselineInput } from "./baselines/common.js"
export { finetuneBaseline } from "./baselines/finetune.js"
export { pruneThenFinetune } from "./baselines/prune-then-finetune.js"
export * from "./baselines/magnitude.js"
export * from "./baselines/fine-prune.js"
export * from "./baselines/rtn.js"
export * from "./baselines/crow.js"
