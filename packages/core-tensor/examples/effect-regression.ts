/** Fit y = X·[1.5, −2, 0.5] + 0.5 with valueAndGrad + AdamW, on the device the TensorDevice layer provides. */
import { AdamW, ops, Rng, TensorDevice, valueAndGrad } from "@bdvax/core-tensor"
import { Cause, Console, Effect, Exit, Schema } from "effect"

// Validated before any tensor exists: a bad value is a SchemaError naming the field.
const Settings = Schema.Struct({
  backend: Schema.Literals(["cpu", "webgpu"]),
  steps: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10_000 })),
  lr: Schema.Finite.check(Schema.isGreaterThan(0)),
})

const fit = Effect.fn("fit")(function* (steps: number, lr: number) {
  const dev = yield* TensorDevice
  const x = dev.randn([64, 3], new Rng(0))
  const y = ops.add(ops.matmul(x, dev.tensor([1.5, -2, 0.5], [3, 1])), 0.5)
  const params = { w: dev.zeros([1, 3]), b: dev.zeros([1]) } // a Linear(3 → 1), weight [out, in]
  const mse = valueAndGrad((p: typeof params) => ops.mean(ops.square(ops.sub(ops.linear(x, p.w, p.b), y))))
  const opt = new AdamW({ lr, weightDecay: 0 })
  let loss = NaN
  for (let i = 1; i <= steps; i++) {
    const [value, grads] = mse(params) // the step's value and gradients are ours to dispose
    opt.step(params, grads)
    if (i % 100 === 0 || i === steps) {
      loss = yield* Effect.promise(() => value.item())
      yield* Console.log(`step ${i}: mse ${loss.toExponential(2)}`)
    }
    for (const t of [value, grads.w, grads.b]) t.dispose()
  }
  const w = yield* Effect.promise(() => params.w.toArray())
  const b = yield* Effect.promise(() => params.b.item())
  return { loss, w, b, device: dev.name } // every tensor is freed when the layer's scope closes
})

const program = Effect.gen(function* () {
  const { backend, steps, lr } = yield* Schema.decodeUnknownEffect(Settings)({ backend: process.env.BDVAX_BACKEND ?? "cpu", steps: 400, lr: 0.05 })
  const r = yield* fit(steps, lr).pipe(
    Effect.provide(TensorDevice.layer(backend)),
    // No GPU here: the typed error says why, and the same program runs on the CPU.
    Effect.catchTag("BackendUnavailableError", (e) =>
      Console.log(`${e.message}; using cpu`).pipe(Effect.andThen(fit(steps, lr).pipe(Effect.provide(TensorDevice.layer("cpu"))))),
    ),
  )
  yield* Console.log(`${r.device}: w = [${r.w.map((v) => v.toFixed(3)).join(", ")}], b = ${r.b.toFixed(3)}, mse ${r.loss.toExponential(2)}`)
})

const exit = await Effect.runPromiseExit(program)
if (Exit.isFailure(exit)) {
  console.error(Cause.pretty(exit.cause))
  process.exitCode = 1
}
