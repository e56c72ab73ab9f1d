import type { KernelCall, KernelKind, KernelOf, KernelSpec, Program, View } from "../../backend.js"
import type { KernelGenerator } from "./kernel.js"
import { KERNELS } from "./kernels.js"
import { layoutSignature, shaderModule } from "./shader-module.js"
import { type Binding, type Grid, MAX_RANK, ParamList } from "./wgsl-helpers.js"

/** A compiled kernel: its generator, bind group layout, and one pipeline per variant (compiled on first use). */
export interface WebGpuProgram<K extends KernelKind> extends Program {
  readonly kind: K
  readonly generator: KernelGenerator<K>
  readonly layout: GPUBindGroupLayout
  readonly pipelines: Map<string, GPUComputePipeline>
}

/** What one dispatch needs once its program is known. */
export interface PreparedDispatch {
  readonly pipeline: GPUComputePipeline
  readonly layout: GPUBindGroupLayout
  readonly bindings: readonly Binding[]
  readonly params: ParamList
  readonly grid: Grid
}

/**
 * Programs by spec key, pipelines by WGSL source (different specs often generate the same shader: a copy of
 * int32 and of float32 both move words), bind group layouts by their access signature.
 */
export class ProgramCache {
  private readonly programs = new Map<string, WebGpuProgram<KernelKind>>()
  private readonly pipelines = new Map<string, GPUComputePipeline>()
  private readonly layouts = new Map<string, { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout }>()

  constructor(private readonly device: GPUDevice) {}

  get(spec: KernelSpec): WebGpuProgram<KernelKind> {
    const cached = this.programs.get(spec.key)
    if (cached !== undefined) return cached
    checkRanks(spec.call)
    const generator = KERNELS[spec.kind] as KernelGenerator<KernelKind>
    const call = spec.call as KernelOf<KernelKind>
    const program: WebGpuProgram<KernelKind> = {
      key: spec.key,
      kind: spec.kind,
      generator,
      layout: this.layout(generator.bindings(call)).group,
      pipelines: new Map(),
    }
    // Compile the variant this call needs now, so shader errors surface at compile time.
    this.pipeline(program, call, generator.variant?.(call) ?? "")
    this.programs.set(spec.key, program)
    return program
  }

  prepare<K extends KernelKind>(program: WebGpuProgram<K>, call: KernelOf<K>): PreparedDispatch {
    const g = program.generator
    const variant = g.variant?.(call) ?? ""
    const params = new ParamList()
    g.params(call, params)
    return { pipeline: this.pipeline(program, call, variant), layout: program.layout, bindings: g.bindings(call), params, grid: g.grid(call, variant) }
  }

  private pipeline<K extends KernelKind>(program: WebGpuProgram<K>, call: KernelOf<K>, variant: string): GPUComputePipeline {
    const known = program.pipelines.get(variant)
    if (known !== undefined) return known
    const g = program.generator
    const bindings = g.bindings(call)
    const params = new ParamList()
    g.params(call, params)
    const source = shaderModule(g.shader(call, variant), bindings, params)
    let pipeline = this.pipelines.get(source)
    if (pipeline === undefined) {
      const label = `${program.key}${variant === "" ? "" : ` (${variant})`}`
      const module = this.device.createShaderModule({ code: source, label })
      pipeline = this.device.createComputePipeline({ layout: this.layout(bindings).pipeline, compute: { module, entryPoint: "main" }, label })
      this.pipelines.set(source, pipeline)
    }
    program.pipelines.set(variant, pipeline)
    return pipeline
  }

  private layout(bindings: readonly Binding[]) {
    const signature = layoutSignature(bindings)
    const known = this.layouts.get(signature)
    if (known !== undefined) return known
    const group = this.device.createBindGroupLayout({
      label: `bindings ${signature}`,
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
        ...bindings.map((b, i) => ({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: b.access === "read" ? ("read-only-storage" as const) : ("storage" as const) },
        })),
      ],
    })
    const layout = { group, pipeline: this.device.createPipelineLayout({ bindGroupLayouts: [group] }) }
    this.layouts.set(signature, layout)
    return layout
  }
}

const isView = (value: unknown): value is View => typeof value === "object" && value !== null && "buffer" in value && "strides" in value

function checkRanks(call: KernelCall): void {
  for (const [name, value] of Object.entries(call)) {
    if (isView(value) && value.shape.length > MAX_RANK)
      throw new RangeError(`webgpu ${call.kind}: ${name} has rank ${value.shape.length}; kernels support rank ≤ ${MAX_RANK}`)
  }
  if (call.kind === "matmul" && call.a.shape.length - 2 > 4)
    throw new RangeError(`webgpu matmul: batch rank ${call.a.shape.length - 2} exceeds 4`)
}
