import type { KernelKind } from "../../backend.js"
import { attentionKernels } from "./attention.js"
import { fastAttentionKernels } from "./attention-fast.js"
import { crossEntropyKernels } from "./cross-entropy.js"
import { elementwiseKernels } from "./elementwise.js"
import { gatherKernels } from "./gather.js"
import type { Kernel } from "./kernel.js"
import { matmulKernels } from "./matmul.js"
import { normKernels } from "./norm.js"
import { optimKernels } from "./optim.js"
import { randomKernels } from "./random.js"
import { reduceKernels } from "./reduce.js"
import { ropeKernels } from "./rope.js"
import { softmaxKernels } from "./softmax.js"
import { swigluKernels } from "./swiglu.js"

/**
 * Every kernel kind's CPU implementation. The mapped type makes a new `KernelCall` member without a CPU kernel
 * a compile error here.
 */
export const kernels: { readonly [K in KernelKind]: Kernel<K> } = {
  ...elementwiseKernels,
  ...reduceKernels,
  ...matmulKernels,
  ...gatherKernels,
  ...randomKernels,
  ...normKernels,
  ...ropeKernels,
  ...swigluKernels,
  ...softmaxKernels,
  ...attentionKernels,
  // The blocked GEMM + WASM softmax attention; falls back to the reference above for strided operands.
  ...fastAttentionKernels,
  ...crossEntropyKernels,
  ...optimKernels,
}
