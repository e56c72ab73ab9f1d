import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

/** Suites that need Python with transformers/peft (and downloaded PyPI packages): `pnpm test:parity`. */
export default defineConfig({ ...base, test: { ...base.test, include: ["packages/*/test-parity/**/*.test.ts"], testTimeout: 900_000 } })
