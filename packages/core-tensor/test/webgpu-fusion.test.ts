import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type DeviceBuffer, specOf } from "../src/backend.js"
import { createWebGpuBackend, type WebGpuBackend, type WebGpuStats } from "../src/backends/webgpu/webgpu-backend.js"
import { AdamW, Device, expectNoLeaks, ops, Rng, type Tensor, tidy, valueAndGrad } from "../src/index.js"
import { type BlockConfig, blockLoss, makeBlock, ropeTables } from "../examples/tiny-models.js"
import { values } from "./sequence.js"

/**
 * Element-wise fusion on WebGPU (README "Element-wise fusion"): the same programs on a backend with fusion and
 * one without. Fused f32 chains run the same WGSL expressions in the same order, so results must agree bit for
 * bit (tolerance: none), and the dispatch counter must drop by the expected amount.
 */

let fused: Device
let plain: Device

beforeAll(async () => {
  fused = new Device(await createWebGpuBackend())
  plain = new Device(await createWebGpuBackend({ fusion: false }))
})

afterAll(() => {
  fused?.destroy()
  plain?.destroy()
})

const statsOf = (dev: Device): WebGpuStats => (dev.backend as WebGpuBackend).stats

/** Counter deltas over `fn` (which must end with a read or flush). */
async function counted<R>(dev: Device, fn: () => Promise<R>): Promise<{ result: R; delta: WebGpuStats }> {
  await dev.flush()
  const before = statsOf(dev)
  const result = await fn()
  const after = statsOf(dev)
  const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof WebGpuStats]])) as unknown as WebGpuStats
  return { result, delta }
}


/** The stored 32-bit words of a tensor: bitwise comparison, NaN payloads and signed zeros included. */
async function words(t: Tensor): Promise<number[]> {
  const d = await t.data()
  return d instanceof Uint8Array ? Array.from(d) : Array.from(new Uint32Array(d.buffer, d.byteOffset, d.length))
}

/**
 * A chain of 17 element-wise calls over awkward operands: a transposed view (strided), a broadcast row
 * (stride 0 on one dim), lifted scalars, and values that go through exp/log/sqrt/sin/cos/reciprocal/max/where.
 */
function chain(dev: Device): Tensor {
  return tidy(() => {
    const x = dev.tensor(values(48 * 40, 1), [48, 40])
    const w = dev.tensor(values(40 * 48, 2), [40, 48])
    const b = dev.tensor(values(40, 3), [40])
    const a = ops.add(ops.mul(x, ops.transpose(w)), b) // mul, add
    const e = ops.exp(ops.mul(ops.neg(a), 0.25)) // neg, mul, exp
    const r = ops.sqrt(ops.add(e, 1)) // add, sqrt
    const s = ops.mul(ops.sin(r), ops.cos(a)) // sin, cos, mul
    const l = ops.log(ops.add(ops.reciprocal(r), 1)) // reciprocal, add, log
    const m = ops.maximum(s, l) // max
    return ops.where(ops.lt(x, 0), m, ops.mul(ops.sub(m, 2), x)) // lt, neg+add (sub), mul, where
  })
}
const CHAIN_CALLS = 19

describe("webgpu element-wise fusion", () => {
  it("runs a chain of element-wise calls as one dispatch, bit for bit as unfused", async () => {
    const { result: want, delta: unfused } = await counted(plain, async () => {
      const y = chain(plain)
      const d = await words(y)
      y.dispose()
      return d
    })
    const { result: got, delta } = await counted(fused, async () => {
      const y = chain(fused)
      const d = await words(y)
      y.dispose()
      return d
    })
    expect(unfused.calls).toBe(CHAIN_CALLS)
    expect(unfused.dispatches).toBe(CHAIN_CALLS)
    expect(delta.calls).toBe(CHAIN_CALLS)
    expect(delta.dispatches).toBe(1)
    expect(delta.fusedKernels).toBe(1)
    expect(delta.fusedCalls).toBe(CHAIN_CALLS)
    // every intermediate was freed by the tidy before the read: only the result reaches memory
    expect(delta.elidedOutputs).toBe(CHAIN_CALLS - 1)
    expect(got).toEqual(want)
    expect(got.some((v) => v !== 0)).toBe(true)
  })

  it("writes an intermediate that is still held, and it reads back correctly", async () => {
    const run = async (dev: Device) => {
      const x = dev.tensor(values(1000, 4), [1000])
      const kept = tidy(() => ops.exp(ops.mul(x, 0.5)))
      const y = tidy(() => ops.add(ops.mul(kept, kept), ops.neg(x)))
      const out = [await words(y), await words(kept)]
      for (const t of [x, kept, y]) t.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    expect(delta.dispatches).toBe(1) // mul, exp, mul, neg, add in one kernel
    expect(delta.elidedOutputs).toBe(3) // x·0.5, kept², −x; `kept` and `y` are stored
  })

  it("cuts the kernel where a value is read through another element (a transpose)", async () => {
    const run = async (dev: Device) => {
      const x = dev.tensor(values(64 * 64, 5), [64, 64])
      const y = tidy(() => {
        const a = ops.mul(x, x)
        return ops.add(ops.transpose(a), ops.exp(a))
      })
      const out = await words(y)
      x.dispose()
      y.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    // exp(a) joins a = x² (argument order: aᵀ is only a view); the add reads aᵀ, so a and exp(a) must be in
    // memory first: two kernels, nothing elided
    expect(delta.dispatches).toBe(2)
    expect(delta.fusedKernels).toBe(1)
    expect(delta.elidedOutputs).toBe(0)
  })

  it("fuses int32 and bool chains exactly (casts, comparisons, where)", async () => {
    const ints = values(300, 6, -50, 50).map(Math.trunc)
    const run = async (dev: Device) => {
      const x = dev.tensor(ints, [300], "int32")
      const y = tidy(() => {
        const big = ops.lt(ops.mul(x, 3), ops.neg(x)) // x·3 < −x  ⇔  x < 0
        const even = ops.eq(ops.cast(ops.cast(ops.mul(ops.cast(x, "float32"), 0.5), "int32"), "float32"), ops.mul(ops.cast(x, "float32"), 0.5))
        const pick = ops.where(big, ops.maximum(x, -7), ops.add(x, 100))
        return ops.where(even, ops.cast(pick, "float32"), -1)
      })
      const out = await words(y)
      x.dispose()
      y.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    expect(delta.dispatches).toBe(1)
    const expected = ints.map((x) => (x % 2 === 0 ? (x < 0 ? Math.max(x, -7) : x + 100) : -1))
    expect(Array.from(new Float32Array(new Uint32Array(got).buffer))).toEqual(expected)
  })

  it("fuses a dropout mask with its random draw, same bits as unfused", async () => {
    const run = async (dev: Device) => {
      const x = dev.tensor(values(4096, 7), [64, 64])
      const y = tidy(() => {
        const keep = ops.lt(dev.rand([64, 64], new Rng(42)), 0.9)
        return ops.where(keep, ops.mul(x, 1 / 0.9), 0)
      })
      const out = await words(y)
      x.dispose()
      y.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    expect(delta.dispatches).toBe(1) // random, lt, mul, where
    const kept = new Float32Array(new Uint32Array(got).buffer).filter((v) => v !== 0).length
    expect(kept / 4096).toBeGreaterThan(0.87)
    expect(kept / 4096).toBeLessThan(0.93)
  })

  it("merges independent chains of different sizes into one dispatch", async () => {
    const run = async (dev: Device) => {
      const a = dev.tensor(values(7, 8), [7])
      const b = dev.tensor(values(3000, 9), [3, 1000])
      const [ya, yb] = tidy(() => [ops.exp(ops.mul(a, a)), ops.sqrt(ops.add(ops.mul(b, b), 1))])
      const out = [await words(ya), await words(yb)]
      for (const t of [a, b, ya, yb]) t.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    expect(delta.dispatches).toBe(1)
  })

  it("evaluates one-element values in every thread, also when a kernel has nothing else", async () => {
    const run = async (dev: Device) => {
      const s = dev.scalar(0.7)
      const x = dev.tensor(values(500, 13), [5, 100])
      const alone = tidy(() => ops.div(ops.sub(s, 3), ops.exp(s))) // neg(3), add, exp, reciprocal, mul: one element each
      const first = await words(alone)
      const spread = tidy(() => ops.mul(ops.sub(x, ops.mul(s, 2)), ops.reciprocal(ops.exp(s)))) // read through broadcasts
      const out = [first, await words(spread)]
      for (const t of [s, x, alone, spread]) t.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    expect(new Float32Array(new Uint32Array(got[0]).buffer)[0]).toBeCloseTo((0.7 - 3) / Math.exp(0.7), 6)
    // the first read emits a kernel of one-element nodes only; in the second, s·2, −(s·2), exp(s) and 1/exp(s)
    // run in every thread and the [5, 100] nodes read them from registers
    expect(delta.dispatches).toBe(2)
    expect(delta.fusedKernels).toBe(2)
  })

  it("splits a kernel that would bind more buffers than the device allows", async () => {
    const limit = (fused.backend as WebGpuBackend).fusionLimits!.maxBindings
    const count = limit + 4
    const run = async (dev: Device) => {
      const xs = Array.from({ length: count }, (_, i) => dev.tensor(values(100, 300 + i), [100]))
      const total = tidy(() => xs.reduce((acc, x) => ops.add(acc, x)))
      const out = await words(total)
      for (const t of [...xs, total]) t.dispose()
      return out
    }
    const want = await run(plain)
    const { result: got, delta } = await counted(fused, () => run(fused))
    expect(got).toEqual(want)
    // count inputs + 1 output do not fit one kernel; the partial sum crossing the cut is stored once
    expect(delta.dispatches).toBe(2)
    expect(delta.elidedOutputs).toBe(count - 1 - 2)
  })

  it("drops calls whose results are freed unread", async () => {
    const x = fused.tensor(values(100, 10), [100])
    const { result, delta } = await counted(fused, async () => {
      ops.exp(x).dispose()
      const y = ops.neg(x)
      const out = await y.toArray()
      y.dispose()
      return out
    })
    expect(delta.calls).toBe(2)
    expect(delta.droppedCalls).toBe(1)
    expect(delta.dispatches).toBe(1)
    expect(result).toEqual(values(100, 10).map((v) => -Math.fround(v)))
    x.dispose()
  })

  it("keeps reads around an in-place optimizer update in order", async () => {
    const run = async (dev: Device) => {
      const p = dev.tensor(values(256, 11), [256])
      const g = dev.tensor(values(256, 12), [256])
      const opt = new AdamW({ lr: 0.1 })
      const before = ops.mul(p, 1)
      opt.step([p], [g])
      const after = ops.mul(p, 1)
      const out = [await words(before), await words(after), await words(p)]
      for (const t of [p, g, before, after]) t.dispose()
      opt.dispose()
      return out
    }
    const want = await run(plain)
    const got = await run(fused)
    expect(got).toEqual(want)
    expect(got[0]).not.toEqual(got[1])
    expect(got[1]).toEqual(got[2])
  })

  it("batches the AdamW updates of many small tensors, bit for bit", async () => {
    const sizes = Array.from({ length: 24 }, (_, i) => 16 + 37 * i)
    const run = async (dev: Device) => {
      const params = sizes.map((n, i) => dev.tensor(values(n, 100 + i), [n]))
      const opt = new AdamW({ lr: 1e-2, weightDecay: 0.1 })
      let delta: WebGpuStats | null = null
      for (let step = 0; step < 3; step++) {
        const grads = sizes.map((n, i) => dev.tensor(values(n, 200 + 31 * step + i), [n]))
        // step 0 also allocates the moment buffers; steps 1 and 2 are the steady state
        const counts = await counted(dev, async () => {
          opt.step(params, grads)
          await dev.flush()
        })
        if (step === 2) delta = counts.delta
        for (const g of grads) g.dispose()
      }
      const out = await Promise.all(params.map(words))
      for (const p of params) p.dispose()
      opt.dispose()
      return { out, delta: delta! }
    }
    const want = await run(plain)
    const got = await run(fused)
    expect(got.out).toEqual(want.out)
    expect(want.delta.dispatches).toBe(24)
    // each update binds g, p, m, v and takes 15 uniform words (its size, 4 offsets, 9 hyper-parameters) out of
    // 64, 2 of which every fused kernel uses
    const perKernel = Math.min(Math.floor((fused.backend as WebGpuBackend).fusionLimits!.maxBindings / 4), Math.floor((64 - 2) / 15))
    expect(got.delta.dispatches).toBe(Math.ceil(24 / perKernel))
  })

  it("trains a one-block Llama bit for bit as unfused, with fewer dispatches and no recompilation after step one", async () => {
    const c: BlockConfig = { vocab: 16, dim: 32, heads: 4, kvHeads: 2, ffn: 64 }
    const train = async (dev: Device) => {
      const [b, t] = [2, 8]
      const tok = Array.from({ length: b * t }, (_, i) => (5 * i) % c.vocab)
      const tokens = dev.tensor(tok, [b, t], "int32")
      const targets = dev.tensor(tok.map((v) => (v + 1) % c.vocab), [b, t], "int32")
      const rope = ropeTables(dev, t, c.dim / c.heads)
      const params = makeBlock(dev, new Rng(11), c)
      const opt = new AdamW({ lr: 1e-2 })
      const step = valueAndGrad((p: typeof params) => blockLoss(p, c, tokens, targets, rope))
      const losses: number[] = []
      const deltas: WebGpuStats[] = []
      for (let i = 0; i < 4; i++) {
        const { result, delta } = await counted(dev, async () => {
          const [loss, grads] = step(params)
          opt.step(params, grads)
          for (const g of Object.values(grads)) g.dispose()
          const v = await loss.item()
          loss.dispose()
          return v
        })
        losses.push(result)
        deltas.push(delta)
      }
      const finalParams = await Promise.all(Object.values(params).map(words))
      for (const x of [tokens, targets, rope.cos, rope.sin, ...Object.values(params)]) x.dispose()
      opt.dispose()
      return { losses, finalParams, deltas }
    }
    const want = await train(plain)
    const got = await expectNoLeaks(fused.account, () => train(fused))
    expect(got.losses).toEqual(want.losses)
    expect(got.finalParams).toEqual(want.finalParams)
    expect(got.losses[3]).toBeLessThan(got.losses[0])
    // step 0 also creates the AdamW moments and step 1 is the first update that reads them: from step 2 on
    // every step emits the same kernels, so nothing new compiles
    const [, , third, fourth] = got.deltas
    console.log(
      `one-block Llama training step: ${want.deltas[3].dispatches} dispatches unfused, ${fourth.dispatches} fused ` +
        `(${fourth.fusedKernels} fused kernels replacing ${fourth.fusedCalls} calls, ${fourth.elidedOutputs} intermediates never stored, ${fourth.droppedCalls} calls dropped)`,
    )
    expect(fourth.calls).toBe(want.deltas[3].calls)
    // matmuls, norms, rope, attention, reductions and the loss stay separate dispatches; the element-wise
    // rest (residual adds, gradient accumulation, layout copies, the 12 AdamW updates) fuses
    expect(fourth.dispatches).toBeLessThanOrEqual(0.8 * want.deltas[3].dispatches)
    expect(third.fusedVariants).toBe(0)
    expect(fourth.fusedVariants).toBe(0)
  })

  it("stays correct with a tiny window (emitted every few calls)", async () => {
    const small = new Device(await createWebGpuBackend({ fusion: { maxPendingCalls: 3 } }))
    try {
      const want = chain(plain)
      const got = chain(small)
      expect(await words(got)).toEqual(await words(want))
      want.dispose()
      got.dispose()
      expect((small.backend as WebGpuBackend).stats.dispatches).toBeGreaterThan(1)
    } finally {
      small.destroy()
    }
  })

  it("reuses bind groups across steps, and never one whose buffer the pool destroyed", async () => {
    // a pool that keeps nothing: every freed buffer is destroyed after the next submit, and a cached bind group
    // that still named it would fail the submit ("used in submit while destroyed")
    const stingy = new Device(await createWebGpuBackend({ maxPooledBytes: 0 }))
    try {
      const w = stingy.tensor(values(64, 14), [64])
      for (let step = 0; step < 4; step++) {
        const x = stingy.tensor(values(64, 15 + step), [64])
        const y = tidy(() => ops.add(ops.mul(x, w), ops.exp(w)))
        const m = tidy(() => ops.sum(ops.mul(y, y)))
        const got = await m.item()
        const want = values(64, 15 + step).reduce((acc, v, i) => {
          const wi = Math.fround(values(64, 14)[i])
          const yi = Math.fround(Math.fround(Math.fround(v) * wi) + Math.fround(Math.exp(wi)))
          return acc + yi * yi
        }, 0)
        expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-4 * want)
        for (const t of [x, y, m]) t.dispose()
      }
      w.dispose()
      await stingy.flush() // device errors surface here
    } finally {
      stingy.destroy()
    }
  })

  it("records waiting calls before a write lands in a buffer they read", async () => {
    const backend = fused.backend
    const buf = (n: number): DeviceBuffer => backend.alloc(n * 4)
    const x = buf(8)
    const out = buf(8)
    const view = (b: DeviceBuffer) => ({ buffer: b, dtype: "float32" as const, shape: [8], strides: [1], offset: 0 })
    backend.write(x, new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]))
    const call = { kind: "unary" as const, op: "neg" as const, x: view(x), out: view(out) }
    backend.dispatch(backend.compile(specOf(call)), call)
    backend.write(x, new Float32Array(8).fill(100)) // must not be seen by the neg above
    const got = Array.from(new Float32Array((await backend.read(out, 0, 32)).slice().buffer))
    expect(got).toEqual([-1, -2, -3, -4, -5, -6, -7, -8])
    backend.free(x)
    backend.free(out)
  })
})
