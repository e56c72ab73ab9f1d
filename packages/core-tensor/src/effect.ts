import { Context, Effect, Layer } from "effect"
import type { BackendName } from "./backend.js"
import { Device } from "./device.js"
import { BackendUnavailableError } from "./errors.js"

/**
 * The tensor device as an Effect service. `TensorDevice.layer("webgpu")` acquires the GPU device when the layer
 * is built and destroys it (freeing every buffer) when its scope closes, so a pipeline cannot leak a device.
 */
export class TensorDevice extends Context.Service<TensorDevice, Device>()("@bdvax/core-tensor/TensorDevice") {
  static layer(name: BackendName): Layer.Layer<TensorDevice, BackendUnavailableError> {
    return Layer.effect(
      TensorDevice,
      Effect.acquireRelease(
        Effect.tryPromise({
          try: () => Device.create(name),
          catch: (e) =>
            e instanceof BackendUnavailableError ? e : new BackendUnavailableError({ backend: name, message: `${name}: ${String(e)}` }),
        }),
        (device) => Effect.sync(() => device.destroy()),
      ),
    )
  }
}
