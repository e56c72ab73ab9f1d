import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { detectProgressMode, formatBar, formatLine, makeProgress } from "../src/index.js"

describe("progress text", () => {
  const state = { label: "plant", unit: "step", done: 12, total: 40, elapsedMs: 6000, loss: 1.23456, tokensPerSecond: 812.4, etaMs: 14_000 }

  it("draws a bar with step/total, loss, tokens/s and ETA, fitted to the terminal width", () => {
    const line = formatBar(state, 100)
    expect(line).toBe("plant [#########.....................] 12/40 · loss 1.2346 · 812 tok/s · ETA 14s")
    expect(formatBar(state, 60)).toBe("plant [###......] 12/40 · loss 1.2346 · 812 tok/s · ETA 14s")
    // too narrow for a bar: the numbers stay
    expect(formatBar(state, 50)).toBe("plant 12/40 · loss 1.2346 · 812 tok/s · ETA 14s")
  })

  it("writes log lines with items/s and an ETA from the mean rate when the worker gives none", () => {
    expect(formatLine({ label: "eval", unit: "prompt", done: 10, total: 40, elapsedMs: 5000 })).toBe("[eval] prompt 10/40 (25%) · 2.0 prompts/s · ETA 15s")
    expect(formatLine({ label: "eval", unit: "prompt", done: 40, total: 40, elapsedMs: 2000 }, true)).toBe("[eval] prompt 40/40 (100%) · 20 prompts/s · took 2s")
  })

  it("line mode prints the first update, each further tenth and the end; tty mode redraws in place", () => {
    let t = 0
    const out: string[] = []
    const lines = makeProgress("lines", { write: (s) => void out.push(s), columns: () => 80 }, () => t)
    const bar = lines.bar("train", "step")
    for (let step = 1; step <= 100; step++) {
      t += 10
      bar.onTraining({ step, totalSteps: 100, epoch: step / 50, loss: 2 - step / 100, lr: 1e-3, gradNorm: 1, lossTokens: 10, inputTokens: 20, tokensPerSecond: 2000, elapsedMs: t, etaMs: (100 - step) * 10 })
    }
    bar.finish()
    expect(out.length).toBe(1 + 10 + 1)
    expect(out[0]).toBe("[train] step 1/100 (1%) · loss 1.9900 · 2000 tok/s · ETA 1s\n")
    expect(out[out.length - 1]).toMatch(/^\[train\] step 100\/100 \(100%\) · loss 1\.0000 · 2000 tok\/s · took 1s\n$/)

    const tty: string[] = []
    const live = makeProgress("tty", { write: (s) => void tty.push(s), columns: () => 80 }, () => t)
    const b2 = live.bar("eval", "prompt", 4)
    b2.onItems(1, 4)
    Effect.runSync(live.note("✓ stage done"))
    b2.onItems(4, 4)
    b2.finish()
    expect(tty[0].startsWith("\r\x1b[2Keval [")).toBe(true)
    expect(tty).toContain("✓ stage done\n")
    expect(tty[tty.length - 1]).toMatch(/^\r\x1b\[2K\[eval\] prompt 4\/4 \(100%\).*took/)
  })

  it("picks line mode off a terminal and under CI, and honours BDVAX_PROGRESS", () => {
    expect(detectProgressMode({}, true)).toBe("tty")
    expect(detectProgressMode({}, false)).toBe("lines")
    expect(detectProgressMode({ CI: "true" }, true)).toBe("lines")
    expect(detectProgressMode({ BDVAX_PROGRESS: "off" }, true)).toBe("off")
  })
})
