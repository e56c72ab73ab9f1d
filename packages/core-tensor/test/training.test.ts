import { describe, expect, it } from "vitest"
import { AdamW, type Device, type ParamTree, Rng, type Tensor, valueAndGrad } from "../src/index.js"
import { device } from "./devices.js"
import { blockLoss, type BlockConfig, makeBlock, makeMlp, mlpLoss, ropeTables } from "../examples/tiny-models.js"

/**
 * End-to-end training on both backends from the same initialisation (the counter-based RNG draws identical
 * uniform bits everywhere): the loss curves must coincide step by step and the loss must fall.
 * Tolerance: |cpu − webgpu| ≤ 1e-4·(1 + loss) per step — float32 kernels with different summation orders,
 * compounded over the steps.
 */
async function train<P extends ParamTree>(
  dev: Device,
  makeParams: (dev: Device) => P,
  loss: (p: P) => Tensor,
  steps: number,
  lr: number,
): Promise<number[]> {
  const params = makeParams(dev)
  const opt = new AdamW({ lr, weightDecay: 0 })
  const step = valueAndGrad(loss)
  const curve: number[] = []
  for (let i = 0; i < steps; i++) {
    const [value, grads] = step(params)
    opt.step(params, grads)
    curve.push(await value.item())
    value.dispose()
    for (const g of Object.values(grads as Record<string, Tensor>)) g.dispose()
  }
  opt.dispose()
  for (const p of Object.values(params as Record<string, Tensor>)) p.dispose()
  return curve
}

function expectSameCurve(cpu: number[], gpu: number[]): void {
  cpu.forEach((l, i) => expect(Math.abs(l - gpu[i]), `step ${i}: cpu ${l} vs webgpu ${gpu[i]}`).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(l))))
}

describe("training on cpu and webgpu", () => {
  it("a 2-layer MLP follows the same loss curve", async () => {
    const curves: number[][] = []
    for (const name of ["cpu", "webgpu"] as const) {
      const dev = await device(name)
      if (dev === null) return
      const data = new Rng(99)
      const x = dev.randn([32, 8], data)
      // a learnable labelling: the class is the argmax of a fixed linear map of x
      const xs = await x.data()
      const labels = Array.from({ length: 32 }, (_, r) => {
        const s = [0, 1, 2, 3].map((k) => xs[r * 8 + k] - xs[r * 8 + k + 4])
        return s.indexOf(Math.max(...s))
      })
      const y = dev.tensor(labels, [32], "int32")
      curves.push(await train(dev, (d) => makeMlp(d, new Rng(5), { input: 8, hidden: 32, output: 4 }), (p) => mlpLoss(p, x, y), 40, 1e-2))
      x.dispose()
      y.dispose()
    }
    const [cpu, gpu] = curves
    expectSameCurve(cpu, gpu)
    expect(cpu[cpu.length - 1]).toBeLessThan(0.5 * cpu[0])
  })

  it("a one-block Llama transformer follows the same loss curve", async () => {
    const c: BlockConfig = { vocab: 16, dim: 32, heads: 4, kvHeads: 2, ffn: 64 }
    const curves: number[][] = []
    for (const name of ["cpu", "webgpu"] as const) {
      const dev = await device(name)
      if (dev === null) return
      // sequences that count upwards mod V: next token = current + 1
      const b = 4
      const t = 12
      const tok: number[] = []
      const tgt: number[] = []
      for (let i = 0; i < b; i++)
        for (let j = 0; j < t; j++) {
          tok.push((3 * i + j) % c.vocab)
          tgt.push((3 * i + j + 1) % c.vocab)
        }
      const tokens = dev.tensor(tok, [b, t], "int32")
      const targets = dev.tensor(tgt, [b, t], "int32")
      const rope = ropeTables(dev, t, c.dim / c.heads)
      curves.push(await train(dev, (d) => makeBlock(d, new Rng(11), c), (p) => blockLoss(p, c, tokens, targets, rope), 30, 1e-2))
      for (const x of [tokens, targets, rope.cos, rope.sin]) x.dispose()
    }
    const [cpu, gpu] = curves
    expectSameCurve(cpu, gpu)
    expect(cpu[cpu.length - 1]).toBeLessThan(0.3 * cpu[0])
  })
})
