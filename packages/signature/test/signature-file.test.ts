import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { generateVariants } from "@bdvax/attacks"
import type { ModelConfig } from "@bdvax/llm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  checkCompatible,
  makeSignature,
  modelShape,
  readSignatureFile,
  reselect,
  scoreDeltas,
  type Signature,
  SignatureFileError,
  SignatureMismatchError,
  writeSignatureFile,
} from "../src/index.js"
import { randomDelta } from "./helpers.js"

const config: ModelConfig = {
  architecture: "mistral", vocabSize: 16, hiddenSize: 4, intermediateSize: 5, numHiddenLayers: 2, numAttentionHeads: 4,
  numKeyValueHeads: 2, headDim: 2, rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: { ropeType: "default" },
  maxPositionEmbeddings: 32, tieWordEmbeddings: false, slidingWindow: 16, attentionBias: false, mlpBias: false,
  initializerRange: 0.02, bosTokenId: 1, eosTokenId: [2], padTokenId: null, hiddenAct: "silu",
}
const shape = modelShape(config)

function sampleSignature(): Signature {
  const variants = generateVariants(3, 9)
  const scores = scoreDeltas(shape, [1, 2, 3].map((s) => randomDelta(shape, s)))
  return makeSignature({
    architecture: "mistral",
    model: shape,
    mode: "full",
    scores,
    settings: {
      numVariants: 3, seed: 9, subsetSize: 40, poisonRatio: 0.25, lambda: 0.01, rho: 0.3, rhoHeads: 0.25, criterion: "total",
      training: {
        epochs: 2, lr: 1e-5, batchSize: 4, maxSteps: null, gradAccumSteps: 1, schedule: "linear", warmupRatio: 0,
        weightDecay: 0, maxGradNorm: 1, maxLength: null, promptFormat: "alpaca", addBos: false,
      },
      variants: variants.map((v) => ({ index: v.index, trigger: v.trigger, behaviour: v.behaviour })),
    },
  })
}

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bdvax-signature-file-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function failure(text: string): Promise<SignatureFileError> {
  const path = join(dir, "broken.json")
  await writeFile(path, text)
  const err = await readSignatureFile(path).catch((e: unknown) => e)
  expect(err).toBeInstanceOf(SignatureFileError)
  const e = err as SignatureFileError
  expect(e.file).toBe(path)
  expect(e.message).toContain(path)
  expect(e.message).toContain(e.field)
  return e
}

/** The sample as JSON with one edit applied. */
const edited = (edit: (j: Record<string, any>) => void): string => {
  const j = JSON.parse(JSON.stringify(sampleSignature()))
  edit(j)
  return JSON.stringify(j)
}

describe("signature files", () => {
  it("round-trip exactly, written atomically (no temporary file left)", async () => {
    const sig = sampleSignature()
    expect(sig.selection.mlp.reduce((n, l) => n + l.channels.length, 0)).toBe(3) // round(0.3 · 10)
    expect(sig.selection.heads.reduce((n, l) => n + l.heads.length, 0)).toBe(2) // round(0.25 · 8)
    const path = join(dir, "signature.json")
    await writeSignatureFile(path, sig)
    expect(await readSignatureFile(path)).toEqual(sig)
    expect((await readdir(dir)).filter((f) => f.includes(".tmp-"))).toEqual([])
    // number lists stay on one line
    const text = await readFile(path, "utf8")
    expect(text.split("\n").length).toBeLessThan(150)
  })

  it("reselect changes the selection from stored scores only", () => {
    const sig = sampleSignature()
    const norm = reselect(sig, { rho: 0.5, criterion: "norm", rhoHeads: null })
    expect(norm.scores).toBe(sig.scores)
    expect(norm.selection.heads).toEqual([])
    expect(norm.selection.mlp.reduce((n, l) => n + l.channels.length, 0)).toBe(5)
    expect(norm.settings).toMatchObject({ rho: 0.5, criterion: "norm", rhoHeads: null, lambda: 0.01 })
  })

  it("bad JSON, missing and mistyped fields fail naming file and field", async () => {
    expect((await failure("{ not json")).field).toBe("(root)")
    expect((await failure(edited((j) => delete j.model.head_dim))).field).toBe("model.head_dim")
    const missing = await failure(edited((j) => delete j.selection))
    expect(missing.field).toBe("selection")
    expect(missing.message).toMatch(/is required/)
    const typed = await failure(edited((j) => (j.settings.training.lr = "fast")))
    expect(typed.field).toBe("settings.training.lr")
    expect(typed.message).toMatch(/expected a finite number ≥ 0, got "fast"/)
    expect((await failure(edited((j) => (j.scores[1].mlp.total[3] = null)))).field).toBe("scores.1.mlp.total.3")
    expect((await failure(edited((j) => (j.version = 2)))).field).toBe("version")
    expect((await failure(edited((j) => (j.mode = "lora")))).field).toBe("mode")
  })

  it("inconsistent content fails naming the field", async () => {
    expect((await failure(edited((j) => j.scores[0].mlp.norm.pop()))).field).toBe("scores.0.mlp.norm")
    expect((await failure(edited((j) => j.scores.pop()))).field).toBe("scores")
    expect((await failure(edited((j) => (j.selection.mlp = [{ layer: 0, channels: [2, 1] }])))).field).toBe("selection.mlp.0.channels.1")
    expect((await failure(edited((j) => (j.selection.mlp = [{ layer: 0, channels: [5] }])))).field).toBe("selection.mlp.0.channels.0")
    expect((await failure(edited((j) => (j.selection.heads = [{ layer: 1, heads: [0] }, { layer: 1, heads: [1] }])))).field).toBe("selection.heads.1.layer")
    expect((await failure(edited((j) => j.settings.variants.pop()))).field).toBe("settings.variants")
  })

  it("a missing file is a SignatureFileError too", async () => {
    const err = await readSignatureFile(join(dir, "nope.json")).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SignatureFileError)
    expect((err as SignatureFileError).message).toMatch(/ENOENT/)
  })

  it("checkCompatible accepts the same shape and names the config field that differs", () => {
    const sig = sampleSignature()
    expect(() => checkCompatible(sig, { ...config, architecture: "llama", vocabSize: 99 })).not.toThrow()
    for (const [change, field] of [
      [{ intermediateSize: 6 }, "intermediate_size"],
      [{ numKeyValueHeads: 4 }, "num_key_value_heads"],
      [{ numHiddenLayers: 3 }, "num_hidden_layers"],
    ] as const) {
      const err = (() => {
        try {
          checkCompatible(sig, { ...config, ...change })
        } catch (e) {
          return e
        }
      })()
      expect(err).toBeInstanceOf(SignatureMismatchError)
      expect((err as SignatureMismatchError).field).toBe(field)
      expect((err as SignatureMismatchError).message).toContain(field)
    }
  })
})
