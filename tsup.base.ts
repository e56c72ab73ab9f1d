import { defineConfig, type Options } from "tsup"

/**
 * The build every package shares: ESM with declarations and source maps for Node 22. Dawn's native `webgpu`
 * module and the workspace's own packages stay external (each is built and resolved on its own), so a package's
 * dist never carries a copy of another's code.
 */
export function packageBuild(overrides: Options = {}) {
  return defineConfig({
    entry: ["src/index.ts"],
    format: ["esm"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "node22",
    external: ["webgpu", /^@bdvax\//],
    ...overrides,
  })
}
