import { philox4x32 } from "@bdvax/core-tensor"

/**
 * Seeded host-side randomness for data work (trigger positions, subsets, shuffles), built on the same
 * Philox-4x32-10 as the tensor RNG so a seed means the same thing everywhere in bdvax.
 */
export class HostRandom {
  private counter = 0
  private readonly key: [number, number]
  constructor(seed: number) {
    this.key = [seed >>> 0, Math.floor(seed / 4294967296) >>> 0]
  }
  /** Uniform in [0, 1), 32 random bits. */
  next(): number {
    const [w] = philox4x32(this.counter >>> 0, Math.floor(this.counter / 4294967296) >>> 0, 0x68737472, 0, this.key[0], this.key[1])
    this.counter++
    return w / 4294967296
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]
  }
  /** Fisher–Yates shuffle (a new array). */
  shuffle<T>(xs: readonly T[]): T[] {
    const a = xs.slice()
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      ;[a[i], a[j]] = [a[j], a[i]]
    }
    return a
  }
  /** k distinct indices of [0, n), in increasing order. */
  sample(n: number, k: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, k).sort((a, b) => a - b)
  }
}
