import { describe, expect, it } from "vitest"
import { ops, Rng } from "../src/index.js"
import { BACKENDS, device } from "./devices.js"

/**
 * Buffers over 64 MiB: past the sizes where naive 1-D dispatch grids (65535 workgroups) and default WebGPU
 * binding limits break. Values are checked against closed forms, not just "it ran".
 */
const N = 20_000_000 // 80 MB per float32 tensor

for (const backend of BACKENDS) {
  describe(`large tensors [${backend}]`, () => {
    it("elementwise and reductions over an 80 MB tensor", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const x = dev.full([N], 0.5)
      const y = ops.add(x, ops.reshape(dev.arange(4, "float32"), [1, 4]).reshape([4]).expand([N / 4, 4]).reshape([N]))
      // y[i] = 0.5 + (i mod 4)
      const ys = await y.data()
      expect([ys[0], ys[1], ys[2], ys[3], ys[N - 1], ys[N - 4]]).toEqual([0.5, 1.5, 2.5, 3.5, 3.5, 0.5])
      const colSums = await ops.sum(ops.reshape(y, [N / 4, 4]), 0).toArray()
      // each column holds N/4 copies of one value; float32 accumulation of 5e6 terms: relative 1e-4
      colSums.forEach((s, k) => expect(Math.abs(s - (N / 4) * (0.5 + k)) / ((N / 4) * (0.5 + k))).toBeLessThan(1e-4))
      const m = await ops.max(y).item()
      expect(m).toBe(3.5)
      for (const t of [x, y]) t.dispose()
    })

    it("matmul with an operand over 64 MiB", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const m = 4200
      const k = 4096 // a: 4200×4096 float32 = 68.8 MB
      const a = dev.full([m, k], 1 / 64)
      const b = dev.rand([k, 3], new Rng(1))
      const out = await ops.matmul(a, b).data()
      const bs = Array.from(await b.data())
      const colSum = [0, 1, 2].map((j) => bs.filter((_, i) => i % 3 === j).reduce((s, v) => s + v, 0) / 64)
      for (const row of [0, m - 1]) for (let j = 0; j < 3; j++) expect(Math.abs(out[row * 3 + j] - colSum[j]) / colSum[j]).toBeLessThan(1e-4)
      a.dispose()
      b.dispose()
    })

    it("gather from and scatter into a 77 MB embedding table", async () => {
      const dev = await device(backend)
      if (dev === null) return
      const v = 300_000
      const d = 64
      const table = dev.rand([v, d], new Rng(2))
      const idx = dev.tensor([0, v - 1, 12345, v - 1], [4], "int32")
      const rows = await ops.gather(table, idx).data()
      const last = await ops.slice(table, [v - 1, 0], [v, d]).data()
      expect(Array.from(rows.slice(d, 2 * d))).toEqual(Array.from(last))
      const back = ops.scatterAdd(dev.ones([4, d]), idx, v)
      const got = await ops.slice(back, [v - 1, 0], [v, 2]).toArray()
      expect(got).toEqual([2, 2])
      table.dispose()
      back.dispose()
    })
  })
}
