import { keep, ops, type Tensor } from "@bdvax/core-tensor"

/**
 * Keys and values of every layer for the positions seen so far ([B, Hkv, T, D] each), so decoding a token
 * costs one position's compute instead of the whole prefix. The cache owns its tensors.
 */
export class KVCache {
  private readonly layers: Array<{ k: Tensor; v: Tensor } | null>

  constructor(numLayers: number) {
    this.layers = new Array(numLayers).fill(null)
  }

  /** Positions cached so far. */
  get length(): number {
    return this.layers[0]?.k.shape[2] ?? 0
  }

  /** Append this step's k/v for a layer and return the full keys/values (owned by the cache). */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const prev = this.layers[layer]
    const next =
      prev === null
        ? { k: keep(ops.contiguous(k)), v: keep(ops.contiguous(v)) }
        : { k: keep(ops.concat([prev.k, k], 2)), v: keep(ops.concat([prev.v, v], 2)) }
    if (prev !== null) {
      prev.k.dispose()
      prev.v.dispose()
    }
    this.layers[layer] = next
    return next
  }

  dispose(): void {
    for (const l of this.layers) {
      l?.k.dispose()
      l?.v.dispose()
    }
    this.layers.fill(null)
  }
}
