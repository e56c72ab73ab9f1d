/**
 * The core-tensor demo: trains a one-block Llama-style transformer (GQA attention, RoPE, SwiGLU, RMSNorm) on
 * a counting task, on the CPU and — where a WebGPU adapter exists — on WebGPU, from the same seed, and prints
 * both loss curves side by side. No downloads, no Python.
 *
 *   ./run demo
 */
import { AdamW, Device, Rng, type Tensor, valueAndGrad } from "../src/index.js"
import { blockLoss, type BlockConfig, makeBlock, ropeTables } from "./tiny-models.js"

const config: BlockConfig = { vocab: 32, dim: 64, heads: 4, kvHeads: 2, ffn: 128 }
const batch = 8
const seqLen = 16
const steps = 60

async function trainOn(name: "cpu" | "webgpu"): Promise<{ curve: number[]; ms: number; device: string } | string> {
  let dev: Device
  try {
    dev = await Device.create(name)
  } catch (e) {
    return (e as Error).message
  }
  const tok: number[] = []
  const tgt: number[] = []
  for (let i = 0; i < batch; i++)
    for (let j = 0; j < seqLen; j++) {
      tok.push((5 * i + j) % config.vocab)
      tgt.push((5 * i + j + 1) % config.vocab)
    }
  const tokens = dev.tensor(tok, [batch, seqLen], "int32")
  const targets = dev.tensor(tgt, [batch, seqLen], "int32")
  const rope = ropeTables(dev, seqLen, config.dim / config.heads)
  const params = makeBlock(dev, new Rng(2024), config)
  const opt = new AdamW({ lr: 3e-3, weightDecay: 0 })
  const step = valueAndGrad((p: typeof params) => blockLoss(p, config, tokens, targets, rope))
  const curve: number[] = []
  const start = performance.now()
  for (let i = 0; i < steps; i++) {
    const [loss, grads] = step(params)
    opt.step(params, grads)
    curve.push(await loss.item())
    loss.dispose()
    for (const g of Object.values(grads) as Tensor[]) g.dispose()
    if (i % 10 === 0 || i === steps - 1) {
      const elapsed = (performance.now() - start) / 1000
      const eta = (elapsed / (i + 1)) * (steps - i - 1)
      process.stderr.write(`  [${name}] step ${String(i + 1).padStart(3)}/${steps}  loss ${curve[i].toFixed(4)}  ${((batch * seqLen * (i + 1)) / elapsed).toFixed(0)} tok/s  ETA ${eta.toFixed(1)} s\n`)
    }
  }
  const ms = performance.now() - start
  const device = dev.backend.info.device
  dev.destroy()
  return { curve, ms, device }
}

const guarded = (name: "cpu" | "webgpu") => trainOn(name).catch((e: unknown) => `failed: ${(e as Error).message.split("\n")[0]}`)
const cpu = await guarded("cpu")
const gpu = await guarded("webgpu")
console.log(`\nOne Llama block (d=${config.dim}, ${config.heads} heads / ${config.kvHeads} KV heads, ffn ${config.ffn}), batch ${batch}×${seqLen}, AdamW, ${steps} steps\n`)
const describe = (r: typeof cpu, name: string) => (typeof r === "string" ? `${name}: unavailable (${r})` : `${name}: ${r.device}, ${(r.ms / 1000).toFixed(2)} s`)
console.log(describe(cpu, "cpu"))
console.log(describe(gpu, "webgpu"))
console.log("\n step | loss (cpu) | loss (webgpu) | |Δ|")
console.log("------|------------|---------------|--------")
for (let i = 0; i < steps; i += i < 10 ? 1 : 10) {
  const c = typeof cpu === "string" ? NaN : cpu.curve[i]
  const g = typeof gpu === "string" ? NaN : gpu.curve[i]
  console.log(` ${String(i + 1).padStart(4)} | ${c.toFixed(6).padStart(10)} | ${g.toFixed(6).padStart(13)} | ${Number.isNaN(g) ? "-" : Math.abs(c - g).toExponential(1)}`)
}
if (typeof cpu !== "string") console.log(`\nfinal loss ${cpu.curve[steps - 1].toFixed(4)} (from ${cpu.curve[0].toFixed(4)}; ln ${config.vocab} = ${Math.log(config.vocab).toFixed(4)})`)
