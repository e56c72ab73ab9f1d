import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

/** Suites that read the real data in ../shared/data (BackdoorLLM sets, benchmarks): `pnpm test:shared`. */
export default defineConfig({ ...base, test: { ...base.test, include: ["packages/*/test-shared/**/*.test.ts"] } })
