import { describe, expect, it } from "vitest"
import { expectNoLeaks, grad, noGrad, ops, Rng, type Tensor, tidy, valueAndGrad } from "../src/index.js"
import { BACKENDS, device } from "./devices.js"

for (const backend of BACKENDS) {
  describe(`autodiff and memory [${backend}]`, () => {
    it("accumulates gradients of a tensor used several times", async () => {
      const dev = (await device(backend))!
      if (dev === null) return
      const x = dev.tensor([1, -2, 3], [3])
      // f = Σ x·x + 3·Σ x  →  df/dx = 2x + 3
      const g = grad((p: Tensor) => ops.add(ops.sum(ops.mul(p, p)), ops.mul(ops.sum(p), 3)))(x)
      expect(await g.toArray()).toEqual([5, -1, 9])
      g.dispose()
      x.dispose()
    })

    it("follows parameter trees and returns gradients in the same structure", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const params = { layer: { w: dev.tensor([1, 2, 3, 4], [2, 2]), b: dev.tensor([0.5, -0.5], [2]) }, scale: [dev.scalar(2)] }
      const x = dev.tensor([1, 1], [1, 2])
      const f = (p: typeof params) => ops.sum(ops.mul(ops.add(ops.linear(x, p.layer.w), p.layer.b), p.scale[0]))
      const [value, g] = valueAndGrad(f)(params)
      // y = x·Wᵀ + b = [3 + 0.5, 7 − 0.5]; f = 2·Σy = 20
      expect(await value.item()).toBeCloseTo(20, 6)
      expect(await g.layer.w.toArray()).toEqual([2, 2, 2, 2])
      expect(await g.layer.b.toArray()).toEqual([2, 2])
      expect(await g.scale[0].toArray()).toEqual([10])
      for (const t of [value, g.layer.w, g.layer.b, g.scale[0], params.layer.w, params.layer.b, params.scale[0], x]) t.dispose()
    })

    it("records nothing for frozen tensors (pruning) and inside noGrad", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const frozen = dev.tensor([1, 2], [2])
      const w = dev.tensor([3, 4], [2])
      const seen: Array<Tensor["node"]> = []
      const [value, g] = valueAndGrad((p: Tensor) => {
        const base = ops.exp(frozen) // touches only a constant: no node, nothing saved
        seen.push(base.node)
        const skipped = noGrad(() => ops.mul(p, 100)) // inside noGrad: no node, no gradient
        seen.push(skipped.node)
        const used = ops.mul(p, base)
        seen.push(used.node)
        return ops.sum(ops.add(used, skipped))
      })(w)
      expect(seen[0]).toBeNull()
      expect(seen[1]).toBeNull()
      expect(seen[2]).not.toBeNull()
      const e = [Math.exp(1), Math.exp(2)]
      const got = await g.toArray()
      expect(got[0]).toBeCloseTo(e[0], 5)
      expect(got[1]).toBeCloseTo(e[1], 5)
      for (const t of [value, g, frozen, w]) t.dispose()
    })

    it("detach stops the gradient", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const x = dev.tensor([2, 3], [2])
      const g = grad((p: Tensor) => ops.sum(ops.mul(p, p.detach())))(x)
      expect(await g.toArray()).toEqual([2, 3])
      g.dispose()
      x.dispose()
    })

    it("unused parameters get zero gradients", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const a = dev.tensor([1, 2], [2])
      const b = dev.tensor([5], [1])
      const g = grad((p: { a: Tensor; b: Tensor }) => ops.sum(p.a))({ a, b })
      expect(await g.b.toArray()).toEqual([0])
      for (const t of [g.a, g.b, a, b]) t.dispose()
    })

    it("valueAndGrad and tidy leave no live tensors behind", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const w = dev.randn([4, 4], new (await import("../src/index.js")).Rng(1))
      const x = dev.ones([2, 4])
      await expectNoLeaks(dev.account, async () => {
        const [value, g] = valueAndGrad((p: Tensor) => ops.mean(ops.square(ops.attention(
          ops.reshape(ops.matmul(x, p), [1, 1, 2, 4]), ops.reshape(x, [1, 1, 2, 4]), ops.reshape(x, [1, 1, 2, 4]), {}))))(w)
        value.dispose()
        g.dispose()
        const kept = tidy(() => {
          ops.exp(w)
          return ops.add(w, 1)
        })
        kept.dispose()
      })
      const stats = dev.memory()
      expect(stats.liveTensors).toBeGreaterThanOrEqual(2)
      w.dispose()
      x.dispose()
    })

    it("the leak detector reports what leaked", async () => {
      const dev = await device(backend)
      if (dev === null) return
      let leaked: Tensor | undefined
      await expect(expectNoLeaks(dev.account, () => { leaked = dev.zeros([7, 3]) })).rejects.toMatchObject({ _tag: "LeakError", message: expect.stringContaining("float32[7,3]") })
      leaked!.dispose()
    })

    it("`using` disposes at the end of the block", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const before = dev.memory().liveTensors
      {
        using t = dev.ones([3])
        expect(dev.memory().liveTensors).toBe(before + 1)
        expect(t.size).toBe(3)
      }
      expect(dev.memory().liveTensors).toBe(before)
    })

    it("frees activations during the backward pass, as their last reader's vjp finishes", async () => {
      const dev = await device(backend)
      if (dev === null) return
      // h ← relu(h · Wᵢ), 8 layers, batch 64, width 128: the forward leaves 16 activations of 32 KiB alive for
      // the backward (each matmul output and each relu output: 512 KiB), and the backward makes 8 weight
      // gradients of 64 KiB (512 KiB). Kept until the end (the old tape), both are alive at once: ≥ 1024 KiB
      // (1216 KiB measured). Freed node by node, a layer's activations go as its gradient arrives: 768 KiB.
      const rng = new Rng(5)
      const ws = Array.from({ length: 8 }, () => dev.randn([128, 128], rng, 0, 0.1))
      const x = dev.randn([64, 128], rng)
      const resident = dev.memory().liveBytes
      dev.account.resetPeak()
      const [value, grads] = valueAndGrad((w: Tensor[], input: Tensor) => ops.mean(w.reduce((h, W) => ops.relu(ops.matmul(h, W)), input)))(ws, x)
      await dev.flush()
      const stepKiB = (dev.memory().peakBytes - resident) / 1024
      expect(stepKiB).toBeGreaterThanOrEqual(512) // the activations themselves
      expect(stepKiB).toBeLessThanOrEqual(0.8 * 1024)
      expect(dev.memory().liveBytes - resident).toBe(8 * 128 * 128 * 4 + 4) // the gradients and the value
      for (const t of [value, ...grads, ...ws, x]) t.dispose()
    })

    it("a weight shared over a batch gets its gradient as one product, not a per-batch stack summed afterwards", async () => {
      const dev = await device(backend)
      if (dev === null) return
      // linear over x [16, 8, 256] with W [256, 256] (256 KiB): the stack would be 16 × 256 KiB = 4 MiB.
      const rng = new Rng(6)
      const w = dev.randn([256, 256], rng, 0, 0.05)
      const x = dev.randn([16, 8, 256], rng)
      const resident = dev.memory().liveBytes
      dev.account.resetPeak()
      const [value, g] = valueAndGrad((p: Tensor, input: Tensor) => ops.mean(ops.linear(input, p)))(w, x)
      await dev.flush()
      // The output and its cotangent (128 KiB each) and the gradient (256 KiB).
      expect((dev.memory().peakBytes - resident) / 1024).toBeLessThanOrEqual(2 * 128 + 256 + 1)
      // dL/dW[o, i] = Σ_rows x[row, i] / (rows · out), the same for every o.
      const colSums = new Float64Array(256)
      const xs = await x.toArray()
      for (let r = 0; r < 128; r++) for (let i = 0; i < 256; i++) colSums[i] += xs[r * 256 + i]
      const gs = await g.toArray()
      for (const o of [0, 131, 255]) for (const i of [0, 7, 200]) expect(gs[o * 256 + i]).toBeCloseTo(colSums[i] / (128 * 256), 6)
      for (const t of [value, g, w, x]) t.dispose()
    })
  })
}
