import { describe, expect, it } from "vitest"
import { Device, ops, valueAndGrad, type Tensor } from "../src/index.js"
import { BACKENDS, device } from "./devices.js"

/** Bad input gets a typed error naming the op and the shapes or dtypes involved — never a crash or a wrong answer. */
function thrown(fn: () => unknown): { _tag?: string; message: string } {
  try {
    fn()
  } catch (e) {
    return e as { _tag?: string; message: string }
  }
  throw new Error("expected an error, none was thrown")
}

for (const backend of BACKENDS) {
  describe(`typed errors [${backend}]`, () => {
    it("shape mismatches name the op and both shapes", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const a = dev.zeros([2, 3])
      const b = dev.zeros([4])
      const e = thrown(() => ops.add(a, b))
      expect(e._tag).toBe("ShapeError")
      expect(e.message).toContain("add")
      expect(e.message).toContain("[2, 3]")
      expect(e.message).toContain("[4]")

      const m = thrown(() => ops.matmul(a, dev.zeros([4, 5])))
      expect(m._tag).toBe("ShapeError")
      expect(m.message).toMatch(/matmul: inner dimensions differ \(3 vs 4\)/)
      expect(m.message).toContain("[4, 5]")

      expect(thrown(() => ops.reshape(a, [4, 2]))._tag).toBe("ShapeError")
      expect(thrown(() => ops.permute(a, [0, 0]))._tag).toBe("ShapeError")
      expect(thrown(() => ops.slice(a, [0, 1], [2, 4]))._tag).toBe("ShapeError")
      expect(thrown(() => ops.sum(a, 2))._tag).toBe("ShapeError")
      expect(thrown(() => ops.rmsNorm(a, dev.ones([4])))._tag).toBe("ShapeError")
      expect(thrown(() => ops.attention(dev.zeros([1, 3, 4, 8]), dev.zeros([1, 2, 4, 8]), dev.zeros([1, 2, 4, 8])))._tag).toBe("ShapeError")
      expect(thrown(() => dev.tensor([1, 2, 3], [2, 2]))._tag).toBe("ShapeError")
    })

    it("dtype mismatches name the op and the dtypes", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const f = dev.zeros([3])
      const i = dev.zeros([3], "int32")
      const e = thrown(() => ops.add(f, i))
      expect(e._tag).toBe("DTypeError")
      expect(e.message).toContain("float32")
      expect(e.message).toContain("int32")
      expect(thrown(() => ops.gather(dev.zeros([4, 2]), f))._tag).toBe("DTypeError")
      expect(thrown(() => ops.exp(i))._tag).toBe("DTypeError")
      expect(thrown(() => ops.where(f, f, f))._tag).toBe("DTypeError")
      expect(thrown(() => ops.softmaxCrossEntropy(dev.zeros([3, 5]), f))._tag).toBe("DTypeError")
    })

    it("use after dispose names the op and the shape", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const x = dev.ones([2, 2])
      const v = ops.reshape(x, [4])
      x.dispose()
      // the view keeps the storage alive: still readable
      expect(await v.toArray()).toEqual([1, 1, 1, 1])
      const e = thrown(() => ops.exp(x))
      expect(e._tag).toBe("DisposedError")
      expect(e.message).toContain("exp")
      expect(e.message).toContain("[2, 2]")
      await expect(x.data()).rejects.toMatchObject({ _tag: "DisposedError" })
      v.dispose()
    })

    it("valueAndGrad rejects a non-scalar objective", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const w = dev.ones([3])
      const e = thrown(() => valueAndGrad((p: Tensor) => ops.mul(p, 2))(w))
      expect(e._tag).toBe("GradientError")
      w.dispose()
    })
  })
}

describe("typed errors across devices", () => {
  it("mixing tensors of two devices is a BackendMismatchError", async () => {
    const a = await Device.create("cpu")
    const b = await Device.create("cpu")
    const e = thrown(() => ops.add(a.ones([2]), b.ones([2])))
    expect(e._tag).toBe("BackendMismatchError")
    a.destroy()
    b.destroy()
  })
})
