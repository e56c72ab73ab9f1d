import type { KernelKind, KernelOf } from "../../backend.js"
import type { Memory } from "./buffer.js"

/** A CPU kernel: runs one call synchronously against the buffers `mem` resolves. */
export type Kernel<K extends KernelKind> = (call: KernelOf<K>, mem: Memory) => void

/** A table with exactly one kernel per kind in K; each family file exports one, and kernels.ts joins them. */
export type KernelTable<K extends KernelKind> = { readonly [P in K]: Kernel<P> }
