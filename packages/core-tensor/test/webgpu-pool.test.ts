import { describe, expect, it } from "vitest"
import { createWebGpuBackend } from "../src/backends/webgpu/webgpu-backend.js"
import { Device, ops } from "../src/index.js"

/**
 * Freeing a tensor whose buffer a recorded-but-unsubmitted dispatch still reads: when the pool is full the buffer
 * is destroyed, and that must wait for the submit (Dawn rejects a submit that binds a destroyed buffer — seen
 * as "used in submit while destroyed" in a LoRA training step of SmolLM2).
 */
describe("webgpu buffer pool", () => {
  it("a buffer freed while a pending dispatch reads it is destroyed only after the submit", async () => {
    const dev = new Device(await createWebGpuBackend({ maxPooledBytes: 0 }))
    const x = dev.tensor([1, 2, 3, 4], [4])
    const y = ops.mul(ops.exp(x), 2) // recorded, not yet submitted
    x.dispose() // pool keeps nothing: x's buffer is retired
    const got = await y.toArray()
    expect(got.map((v) => Math.round(v * 1e4) / 1e4)).toEqual([1, 2, 3, 4].map((v) => Math.round(2 * Math.exp(v) * 1e4) / 1e4))
    // and the device is still healthy afterwards
    expect(await ops.add(y, 1).toArray()).toHaveLength(4)
    dev.destroy()
  })
})
