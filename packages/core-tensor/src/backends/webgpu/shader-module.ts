import type { ShaderParts } from "./kernel.js"
import { type Binding, INFINITY_DECLS, PARAM_WORDS, type ParamList, paramDeclarations, wgslType } from "./wgsl-helpers.js"

/**
 * Wrap a kernel's WGSL parts into a complete module. Binding 0 is the uniform block, an array of vec4<u32>
 * (a plain array<u32> would need a 16-byte stride in the uniform address space); bindings 1… are the storage
 * buffers. `main` starts with one `let` per parameter and the flat indices every generator may use.
 */
export function shaderModule(parts: ShaderParts, bindings: readonly Binding[], params: ParamList): string {
  const [x, y, z] = parts.workgroupSize
  const storage = bindings.map((b, i) => {
    const type = b.type ?? (b.words ? "u32" : wgslType(b.view.dtype))
    const access = b.access === "read" ? "read" : "read_write"
    return `@group(0) @binding(${i + 1}) var<storage, ${access}> ${b.name}_buf: array<${type}>;`
  })
  const enables = new Set(parts.enables ?? [])
  if (bindings.some((b) => b.type?.includes("f16"))) enables.add("f16")
  const header = [...enables].map((e) => `enable ${e};\n`).join("")
  return `${header}struct Params { w: array<vec4<u32>, ${PARAM_WORDS / 4}> }
@group(0) @binding(0) var<uniform> params: Params;
${storage.join("\n")}
${INFINITY_DECLS}
${parts.decls ?? ""}

@compute @workgroup_size(${x}, ${y}, ${z})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
${paramDeclarations(params)}
  let wg = wid.y * nwg.x + wid.x;
  let gi = wg * ${x * y * z}u + li;
${parts.body}
}
`
}

/** The bind group layout a binding list needs, as a cache key: one letter per storage binding. */
export const layoutSignature = (bindings: readonly Binding[]) => bindings.map((b) => (b.access === "read" ? "r" : "w")).join("")
