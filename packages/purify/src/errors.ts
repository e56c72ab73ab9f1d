import { Data } from "effect"

/**
 * The one typed error of @bdvax/purify (an Effect tagged error and a plain Error, so it can be thrown from
 * synchronous code and caught with `catchTag` in pipelines). `field` names what is at fault: a tensor
 * ("model.layers.3.mlp.gate_proj.weight"), a selection entry ("selection.mlp[1].channels[4]") or an option.
 */
export class PurifyError extends Data.TaggedError("PurifyError")<{
  /** shape: a tensor disagrees with the config; range: an index or ratio is out of bounds or badly ordered;
   *  mode: the operation does not exist for this kind of model (e.g. RTN on an adapter); input: anything else. */
  readonly reason: "shape" | "range" | "mode" | "input"
  readonly field: string
  readonly message: string
}> {}

export const purifyError = (reason: PurifyError["reason"], field: string, why: string): PurifyError =>
  new PurifyError({ reason, field, message: `${field}: ${why}` })
