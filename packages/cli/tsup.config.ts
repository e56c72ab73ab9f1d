import { defineConfig } from "tsup"

export default defineConfig({
  entry: ["src/index.ts", "src/bin.ts"],
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node22",
  external: ["webgpu", "@bdvax/core-tensor", "@bdvax/llm", "@bdvax/attacks", "@bdvax/signature", "@bdvax/purify", "@bdvax/eval"],
})
