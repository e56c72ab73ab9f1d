import type { KernelOf } from "../../backend.js"
import { fillRandom } from "../../rng.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"

/** Philox draws; rng.ts is the single definition both backends follow, so reuse it as is. */
function random({ dist, seed, stream, offset, out }: KernelOf<"random">, mem: Memory): void {
  const Y = mem.f32(out)
  fillRandom(Y.subarray(out.offset, out.offset + elementCount(out.shape)), dist, seed, stream, offset)
}

export const randomKernels = { random } satisfies KernelTable<"random">
