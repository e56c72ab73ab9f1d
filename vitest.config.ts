import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "tests/**/*.test.ts"],
    // WebGPU on lavapipe is a single device per process; keep files in one fork each so they do not fight.
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})
