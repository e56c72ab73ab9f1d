import { describe, expect, it } from "vitest"
import { init, philox4x32, Rng } from "../src/index.js"
import { device } from "./devices.js"

describe("Philox-4x32-10", () => {
  it("matches the Random123 known-answer vectors", () => {
    const hex = (w: number[]) => w.map((x) => x.toString(16).padStart(8, "0"))
    expect(hex(philox4x32(0, 0, 0, 0, 0, 0))).toEqual(["6627e8d5", "e169c58d", "bc57ac4c", "9b00dbd8"])
    const f = 0xffffffff
    expect(hex(philox4x32(f, f, f, f, f, f))).toEqual(["408f276d", "41c83b0e", "a20bc7c6", "6d5451fd"])
    expect(hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0))).toEqual(["d16cfe09", "94fdcceb", "5001e420", "24126ea1"])
  })
})

describe("random draws on both backends", () => {
  it("uniform bits are identical on cpu and webgpu; normals agree to f32 rounding", async () => {
    const cpu = (await device("cpu"))!
    const gpu = await device("webgpu")
    if (gpu === null) return
    const n = 100_003
    const u = [await cpu.rand([n], new Rng(42)).data(), await gpu.rand([n], new Rng(42)).data()]
    expect(Buffer.from(u[0].buffer).equals(Buffer.from(u[1].buffer))).toBe(true)
    const z = [await cpu.randn([n], new Rng(7)).data(), await gpu.randn([n], new Rng(7)).data()]
    let worst = 0
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(z[0][i] - z[1][i]) / (1 + Math.abs(z[0][i])))
    // WGSL lets log/cos/sqrt be a few ulp (cos: 2⁻¹¹ absolute in the worst case) off, so normals are compared
    // with 1e-4·(1 + |z|); llvmpipe lands around 1e-5.
    expect(worst).toBeLessThan(1e-4)
  })

  it("draws have the right moments and successive draws differ", async () => {
    const cpu = (await device("cpu"))!
    const rng = new Rng(3)
    const n = 200_000
    const a = await cpu.randn([n], rng).data()
    const b = await cpu.randn([n], rng).data()
    let mean = 0
    let sq = 0
    for (const x of a) {
      mean += x / n
      sq += (x * x) / n
    }
    expect(Math.abs(mean)).toBeLessThan(0.01)
    expect(Math.abs(Math.sqrt(sq - mean * mean) - 1)).toBeLessThan(0.01)
    expect(a[0]).not.toBe(b[0])
    const u = Array.from(await cpu.rand([n], new Rng(3), -2, 5).data())
    expect(u.reduce((m, x) => Math.min(m, x), Infinity)).toBeGreaterThanOrEqual(-2)
    expect(u.reduce((m, x) => Math.max(m, x), -Infinity)).toBeLessThan(5)
  })

  it("initialisers use PyTorch's bounds", async () => {
    const cpu = (await device("cpu"))!
    const w = await init.kaimingUniform(cpu, [64, 256], new Rng(0)).data()
    const bound = 1 / Math.sqrt(256)
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound)
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.95 * bound)
    const x = await init.xavierUniform(cpu, [30, 70], new Rng(0)).data()
    expect(Math.max(...x.map(Math.abs))).toBeLessThanOrEqual(Math.sqrt(6 / 100))
    const n = await init.normal(cpu, [100_000], new Rng(0), 0.02).data()
    let sq = 0
    for (const v of n) sq += v * v
    expect(Math.sqrt(sq / n.length)).toBeCloseTo(0.02, 3)
  })
})
