/**
 * @bdvax/cli — the `bdvax` command line as a library: the artifact store (resumable, content-addressed stages),
 * the Progress service, config schemas, the stages (toy world, plant, evaluate, report) and the command tree.
 */
export * from "./errors.js"
export * from "./flags.js"
export * from "./output.js"
export * from "./context.js"
export { VERSION } from "./version.js"
export { rootCommand, runCli, EXIT } from "./main.js"

export * from "./store/hash.js"
export * from "./store/atomic.js"
export * from "./store/manifest.js"
export * from "./store/lock.js"
export * from "./store/store.js"

export * from "./progress/format.js"
export * from "./progress/progress.js"

export * from "./config/decode.js"
export * from "./config/fields.js"
export * from "./config/options.js"
export * from "./config/experiment.js"

export * from "./metrics/exact-match.js"
export * from "./report/data.js"
export * from "./report/render.js"
export * from "./report/loss-chart.js"
export * from "./report/summary.js"
export * from "./report/condition-chart.js"

export * from "./pipeline/located.js"
export * from "./pipeline/records.js"
export * from "./pipeline/model-io.js"
export * from "./pipeline/toy.js"
export * from "./pipeline/poison.js"
export * from "./pipeline/plant.js"
export * from "./pipeline/evaluate.js"
export * from "./pipeline/report.js"
export * from "./pipeline/timing.js"
export * from "./pipeline/variant-pair.js"
export * from "./pipeline/signature.js"
export * from "./pipeline/immunize.js"
export * from "./pipeline/defense.js"
export * from "./pipeline/demo.js"
export * from "./pipeline/sanity.js"
export * from "./pipeline/experiment.js"
export * from "./pipeline/ablations.js"

export { probeBackend, type BackendReport } from "./commands/info.js"
