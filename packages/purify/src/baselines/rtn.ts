import { ops, type Tensor, tidy } from "@bdvax/core-tensor"
import type { Params } from "@bdvax/llm"
import { purifyError } from "../errors.js"
import { type DefenseResult, ownAll, type SuspectModel } from "../target.js"

/**
 * INT-k round-to-nearest weight quantization (the RTN baseline; "fake" quantization: the result is the
 * dequantized f32 weights, which is what evaluating a quantized model computes).
 *
 * Every linear weight (q/k/v/o/gate/up/down_proj; not embeddings, norms, biases or lm_head) is split along its
 * input dimension into groups of `groupSize` consecutive weights of one output row, and each group gets its own
 * asymmetric grid, as GPTQ's quantizer (the range always contains 0, so 0 is exact):
 *
 *   lo = min(0, min w),  hi = max(0, max w),  scale = (hi − lo) · (1/maxq)   (maxq = 2^bits − 1; scale 0 → 1)
 *   zero = ⌊−lo · (1/scale) + ½⌋,  q = clamp(⌊w · (1/scale) + zero + ½⌋, 0, maxq),  ŵ = (q − zero) · scale
 *
 * all in f32 on the device, each product and sum rounded to f32 in that order (the tests check a host replica
 * bit for bit on the CPU backend). Rounding is half-up (⌊x + ½⌋) where torch.round is half-to-even: the two differ
 * only on exact ties. Every ŵ is within scale/2 of w (up to f32 rounding), and a group has at most 2^bits levels.
 */
export interface RtnOptions {
  /** Default 4. */
  readonly bits?: number
  /** Weights per group along the input dimension, default 128; a group size ≥ the input dimension (or −1)
   *  makes one group per row. Otherwise it must divide the input dimension. */
  readonly groupSize?: number
}

export const LINEAR_WEIGHT = /(?:^|\.)(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/

/** The fake-quantized copy of one [out, in] weight. */
export function quantizeWeightRtn(w: Tensor, bits: number, groupSize: number, name = "weight"): Tensor {
  if (w.rank !== 2) throw purifyError("shape", name, `RTN quantizes 2-D linear weights, got shape [${w.shape.join(", ")}]`)
  const [out, inp] = w.shape
  const g = groupSize === -1 || groupSize >= inp ? inp : groupSize
  if (inp % g !== 0) throw purifyError("shape", name, `input dimension ${inp} is not a multiple of groupSize ${groupSize}`)
  const maxq = 2 ** bits - 1
  return tidy(() => {
    const x = ops.reshape(w, [out, inp / g, g])
    const lo = ops.neg(ops.maximum(ops.max(ops.neg(x), 2, true), 0)) // min(0, min x), exact
    const hi = ops.maximum(ops.max(x, 2, true), 0)
    const raw = ops.mul(ops.sub(hi, lo), 1 / maxq)
    const scale = ops.where(ops.eq(raw, 0), 1, raw)
    const inv = ops.reciprocal(scale)
    const floorNonNeg = (v: Tensor) => ops.cast(ops.cast(v, "int32"), "float32") // truncation = floor for v ≥ 0
    const zero = floorNonNeg(ops.add(ops.mul(ops.neg(lo), inv), 0.5))
    // v + ½ may dip just below 0 for w = lo (f32 rounding); truncation then gives 0, which the clamp keeps.
    const q = ops.maximum(ops.neg(ops.maximum(ops.neg(floorNonNeg(ops.add(ops.add(ops.mul(x, inv), zero), 0.5))), -maxq)), 0)
    return ops.reshape(ops.mul(ops.sub(q, zero), scale), [out, inp])
  })
}

/** Every linear weight fake-quantized; other entries are the caller's own tensors (copy-on-write). */
export function quantizeRtn(params: Params, options: RtnOptions = {}): Params {
  const bits = options.bits ?? 4
  const groupSize = options.groupSize ?? 128
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) throw purifyError("range", "rtn.bits", `${bits} is not an integer in [1, 16]`)
  if (!Number.isInteger(groupSize) || (groupSize < 1 && groupSize !== -1)) throw purifyError("range", "rtn.groupSize", `${groupSize} is not a positive integer (or −1)`)
  const names = Object.keys(params).filter((n) => LINEAR_WEIGHT.test(n))
  if (names.length === 0) throw purifyError("input", "params", "has no linear weight (q/k/v/o/gate/up/down_proj.weight) to quantize")
  const out: Params = { ...params }
  const created: Tensor[] = []
  try {
    for (const n of names) created.push((out[n] = quantizeWeightRtn(params[n], bits, groupSize, `params["${n}"]`)))
  } catch (e) {
    for (const t of created) t.dispose()
    throw e
  }
  return out
}

/** Baseline: RTN quantization of a full model (no finetuning). Adapter mode has no such baseline in the paper
 *  (quantizing the base would not touch the adapter): a PurifyError. */
export function rtnBaseline(input: SuspectModel, options: RtnOptions = {}): DefenseResult {
  if (input.mode !== "full")
    throw purifyError("mode", "mode", "RTN quantization is a full-model baseline; an adapter has no quantized counterpart (merge it first to quantize the merged model)")
  const quantized = quantizeRtn(input.params, options)
  // Copies of the untouched entries too, so the result is wholly the caller's (disposeDefense frees it all).
  return { mode: "full", params: ownAll(quantized, input.params), training: null, selection: null }
}
