/**
 * @bdvax/core-tensor — tensors with reverse-mode autodiff on WebGPU (Dawn) and CPU backends.
 *
 *   const dev = await Device.create("cpu")            // or "webgpu"
 *   const w = dev.randn([4, 3], new Rng(0))
 *   const loss = (p: { w: Tensor }, x: Tensor) => ops.mean(ops.square(ops.matmul(x, p.w)))
 *   const [value, grads] = valueAndGrad(loss)({ w }, x)
 */
export * from "./backend.js"
export * from "./dtype.js"
export * from "./errors.js"
export * from "./shape.js"
export { Tensor, type TensorLike } from "./tensor.js"
export { Device, type HostData } from "./device.js"
export { tidy, keep, expectNoLeaks, type MemoryStats } from "./memory.js"
export { noGrad, type ParamTree, flattenTree, mapTree } from "./autodiff.js"
export { valueAndGrad, grad } from "./grad.js"
export { Rng, philox4x32, fillRandom } from "./rng.js"
export * as ops from "./ops/api.js"
export * as init from "./init.js"
export { AdamW, Sgd, clipGradNorm, type AdamWOptions, type SgdOptions } from "./optim.js"
export { createCpuBackend, startCpuBackend } from "./backends/cpu/cpu-backend.js"
export { TensorDevice } from "./effect.js"
