import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { ops, TensorDevice } from "../src/index.js"

describe("TensorDevice layer", () => {
  it("provides a scoped device and destroys it when the scope closes", async () => {
    let seen: import("../src/index.js").Device | undefined
    const program = Effect.gen(function* () {
      const dev = yield* TensorDevice
      seen = dev
      const x = dev.tensor([1, 2, 3], [3])
      return yield* Effect.promise(() => ops.mul(x, x).toArray())
    })
    const result = await Effect.runPromise(Effect.provide(program, TensorDevice.layer("cpu")))
    expect(result).toEqual([1, 4, 9])
    // the layer's release destroyed the device: every tensor it held is gone
    expect(seen!.memory().liveTensors).toBe(0)
  })
})
