import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

export default defineConfig({
  resolve: {
    // Tests run against the sources of every workspace package (one module instance each, so `instanceof
    // Tensor` holds across packages); the built dist/ is what other consumers import.
    alias: {
      "@bdvax/core-tensor": src("core-tensor"),
      "@bdvax/llm": src("llm"),
      "@bdvax/attacks": src("attacks"),
      "@bdvax/signature": src("signature"),
      "@bdvax/purify": src("purify"),
      "@bdvax/eval": src("eval"),
      "@bdvax/cli": src("cli"),
    },
  },
  test: {
    include: ["packages/*/test/**/*.test.ts", "tests/**/*.test.ts"],
    // WebGPU on lavapipe is a single device per process; keep files in one fork each so they do not fight.
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})
