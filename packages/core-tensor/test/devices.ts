import { Device } from "../src/index.js"

/**
 * The backends every test runs on. WebGPU is required: CI installs Mesa's lavapipe (scripts/
 * setup-webgpu-lavapipe.sh) so it runs for real on a CPU. A machine without any Vulkan adapter can opt out with
 * BDVAX_ALLOW_NO_WEBGPU=1, which is reported loudly rather than passing silently.
 */
export type BackendName = "cpu" | "webgpu"

const cache = new Map<BackendName, Promise<Device | null>>()

export function device(name: BackendName): Promise<Device | null> {
  let d = cache.get(name)
  if (d === undefined) {
    d = Device.create(name).catch((e: unknown) => {
      if (name === "webgpu" && process.env.BDVAX_ALLOW_NO_WEBGPU === "1") {
        console.warn(`\n*** WebGPU backend unavailable, its tests are SKIPPED (BDVAX_ALLOW_NO_WEBGPU=1): ${String(e)}\n`)
        return null
      }
      throw e
    })
    cache.set(name, d)
  }
  return d
}

export const BACKENDS: readonly BackendName[] = ["cpu", "webgpu"]
