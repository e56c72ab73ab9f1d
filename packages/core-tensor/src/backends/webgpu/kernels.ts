import type { KernelKind } from "../../backend.js"
import { attentionKernels } from "./attention.js"
import { compositeKernels } from "./composites.js"
import { elementwiseKernels } from "./elementwise.js"
import { gatherKernels } from "./gather.js"
import type { KernelGenerator } from "./kernel.js"
import { matmulKernels } from "./matmul.js"
import { optimKernels } from "./optim.js"
import { randomKernels } from "./random.js"
import { reduceKernels } from "./reduce.js"

/** Every kernel kind's WGSL generator. The mapped type makes a kind without a generator a compile error. */
export const KERNELS: { readonly [K in KernelKind]: KernelGenerator<K> } = {
  ...elementwiseKernels,
  ...reduceKernels,
  ...matmulKernels,
  ...gatherKernels,
  ...compositeKernels,
  ...attentionKernels,
  ...optimKernels,
  ...randomKernels,
}
