/**
 * @bdvax/signature — immunization signatures: variant pairs finetuned from the suspicious model, their weight
 * deltas, Eq. 2 channel and head scores, and signature files (the channels @bdvax/purify resets).
 */
export * from "./errors.js"
export * from "./model-shape.js"
export * from "./channels.js"
export * from "./scores.js"
export * from "./selection.js"
export * from "./delta.js"
export * from "./delta-file.js"
export * from "./pairs.js"
export * from "./signature.js"
export * from "./signature-file.js"
export * from "./variants.js"
export { TriggerRuleSchema, BehaviourSchema } from "./schemas.js"
