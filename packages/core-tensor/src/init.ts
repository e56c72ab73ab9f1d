import type { Device } from "./device.js"
import type { Rng } from "./rng.js"
import type { Shape } from "./shape.js"
import type { Tensor } from "./tensor.js"

/**
 * Parameter initialisers, drawn from the counter-based Rng so every backend produces the same values.
 * Weight shapes follow PyTorch/Hugging Face: [out_features, in_features].
 */
export function fans(shape: Shape): { fanIn: number; fanOut: number } {
  if (shape.length < 2) return { fanIn: shape[0] ?? 1, fanOut: shape[0] ?? 1 }
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1)
  return { fanIn: shape[1] * receptive, fanOut: shape[0] * receptive }
}

/** N(0, std²): Hugging Face's `_init_weights` for Llama/Mistral linears and embeddings (std = initializer_range). */
export const normal = (device: Device, shape: Shape, rng: Rng, std: number, mean = 0): Tensor => device.randn(shape, rng, mean, std)

/** U(−bound, bound). */
export const uniform = (device: Device, shape: Shape, rng: Rng, bound: number): Tensor => device.rand(shape, rng, -bound, bound)

/** Glorot/Xavier uniform: bound = gain·√(6 / (fan_in + fan_out)). */
export function xavierUniform(device: Device, shape: Shape, rng: Rng, gain = 1): Tensor {
  const { fanIn, fanOut } = fans(shape)
  return uniform(device, shape, rng, gain * Math.sqrt(6 / (fanIn + fanOut)))
}

/** Kaiming/He uniform as torch.nn.init.kaiming_uniform_ (leaky-ReLU gain with slope a, fan_in mode).
 *  With a = √5 (nn.Linear's default) the bound is 1/√fan_in. */
export function kaimingUniform(device: Device, shape: Shape, rng: Rng, a = Math.sqrt(5)): Tensor {
  const { fanIn } = fans(shape)
  const gain = Math.sqrt(2 / (1 + a * a))
  return uniform(device, shape, rng, gain * Math.sqrt(3 / fanIn))
}
