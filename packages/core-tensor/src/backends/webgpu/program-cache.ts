import type { KernelCall, KernelKind, KernelOf, KernelSpec, Program, View } from "../../backend.js"
import type { FusedKernel } from "./fusion-codegen.js"
import { type KernelContext, type KernelGenerator, type KernelPass, planCall, type ScratchAlloc, type ShaderParts } from "./kernel.js"
import { KERNELS } from "./kernels.js"
import { layoutSignature, shaderModule } from "./shader-module.js"
import { type Binding, type Grid, MAX_RANK, type ParamList } from "./wgsl-helpers.js"

/** A compiled kernel: its generator and one pipeline per variant (compiled on first use). */
export interface WebGpuProgram<K extends KernelKind> extends Program {
  readonly kind: K
  readonly generator: KernelGenerator<K>
  readonly pipelines: Map<string, { readonly pipeline: GPUComputePipeline; readonly layout: GPUBindGroupLayout }>
}

/** What one dispatch needs once its program is known. */
export interface PreparedDispatch {
  readonly pipeline: GPUComputePipeline
  readonly layout: GPUBindGroupLayout
  readonly bindings: readonly Binding[]
  readonly params: ParamList
  readonly grid: Grid
  readonly label: string
}

/**
 * Programs by spec key, pipelines by (spec key, variant) and then by WGSL source (different specs often generate
 * the same shader: a copy of int32 and of float32 both move words), bind group layouts by their access signature.
 *
 * Variants: the spec key only carries kind, op, dtypes and ranks (backend.ts `specOf`). Everything else that
 * shapes the code — a matmul's tile configuration, whether M/N/K fit the tile (no bounds checks), vec4 loads,
 * split-K, an attention head dim — is the generator's `variant` string, chosen per call from the shapes, strides
 * and this device's tuning, and each variant is compiled once and kept in the program's own map.
 */
export class ProgramCache {
  private readonly programs = new Map<string, WebGpuProgram<KernelKind>>()
  private readonly pipelines = new Map<string, GPUComputePipeline>()
  private readonly layouts = new Map<string, { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout }>()
  private readonly fusedPipelines = new Map<string, { readonly pipeline: GPUComputePipeline; readonly layout: GPUBindGroupLayout }>()

  constructor(
    private readonly device: GPUDevice,
    public context: KernelContext,
  ) {}

  get(spec: KernelSpec): WebGpuProgram<KernelKind> {
    const cached = this.programs.get(spec.key)
    if (cached !== undefined) return cached
    checkRanks(spec.call)
    const generator = KERNELS[spec.kind] as KernelGenerator<KernelKind>
    const program: WebGpuProgram<KernelKind> = { key: spec.key, kind: spec.kind, generator, pipelines: new Map() }
    // Compile the variants this call needs now, so shader errors surface at compile time. Scratch views are
    // stand-ins: planning only reads their dtype and size.
    const placeholder: ScratchAlloc = (elements) => scratchView({ byteLength: Math.max(4, elements * 4) }, elements)
    for (const pass of planCall(generator, spec.call as KernelOf<KernelKind>, this.context, placeholder)) this.pipeline(program, pass)
    this.programs.set(spec.key, program)
    return program
  }

  /** The dispatches of one call, in order. */
  prepare<K extends KernelKind>(program: WebGpuProgram<K>, call: KernelOf<K>, scratch: ScratchAlloc): PreparedDispatch[] {
    return planCall(program.generator, call, this.context, scratch).map((pass) => {
      const { pipeline, layout } = this.pipeline(program, pass)
      const label = pass.variant === "" ? program.key : `${program.key} (${pass.variant})`
      return { pipeline, layout, bindings: pass.bindings, params: pass.params, grid: pass.grid, label }
    })
  }

  private pipeline<K extends KernelKind>(program: WebGpuProgram<K>, pass: KernelPass) {
    const known = program.pipelines.get(pass.variant)
    if (known !== undefined) return known
    const entry = this.compilePipeline(`${program.key}${pass.variant === "" ? "" : ` (${pass.variant})`}`, pass.shader(), pass.bindings, pass.params)
    program.pipelines.set(pass.variant, entry)
    return entry
  }

  /** The pipeline of a fused kernel, by its structural key (fusion-codegen.ts); compiled on first use. */
  fused(kernel: FusedKernel): { readonly pipeline: GPUComputePipeline; readonly layout: GPUBindGroupLayout } {
    let entry = this.fusedPipelines.get(kernel.key)
    if (entry === undefined) {
      entry = this.compilePipeline(kernel.label, kernel.shader(), kernel.bindings, kernel.params)
      this.fusedPipelines.set(kernel.key, entry)
    }
    return entry
  }

  /** Distinct fused kernels compiled so far. */
  get fusedVariants(): number {
    return this.fusedPipelines.size
  }

  private compilePipeline(label: string, parts: ShaderParts, bindings: readonly Binding[], params: ParamList) {
    const source = shaderModule(parts, bindings, params)
    const layout = this.layout(bindings)
    let pipeline = this.pipelines.get(source)
    if (pipeline === undefined) {
      const module = this.device.createShaderModule({ code: source, label })
      pipeline = this.device.createComputePipeline({ layout: layout.pipeline, compute: { module, entryPoint: "main" }, label })
      this.pipelines.set(source, pipeline)
    }
    return { pipeline, layout: layout.group }
  }

  private layout(bindings: readonly Binding[]) {
    const signature = layoutSignature(bindings)
    const known = this.layouts.get(signature)
    if (known !== undefined) return known
    const group = this.device.createBindGroupLayout({
      label: `bindings ${signature}`,
      entries: [
        // Dynamic offset: each dispatch's slot of the uniform ring, so bind groups can be reused (bind-groups.ts).
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } },
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

/** A contiguous float32 view of `elements` elements over `buffer`. */
export const scratchView = (buffer: View["buffer"], elements: number): View => ({ buffer, dtype: "float32", shape: [elements], strides: [1], offset: 0 })

const isView = (value: unknown): value is View => typeof value === "object" && value !== null && "buffer" in value && "strides" in value

/** float16 storage (View.half) is read by matmul and converted by float32 casts; no other kernel reads halves. */
const halfAllowed = (call: KernelCall, name: string) =>
  call.kind === "matmul" ? name !== "out" : call.kind === "unary" && call.op === "cast" && call.x.dtype === "float32" && call.out.dtype === "float32"

function checkRanks(call: KernelCall): void {
  for (const [name, value] of Object.entries(call)) {
    if (isView(value) && value.shape.length > MAX_RANK)
      throw new RangeError(`webgpu ${call.kind}: ${name} has rank ${value.shape.length}; kernels support rank ≤ ${MAX_RANK}`)
    if (isView(value) && value.half === true && !halfAllowed(call, name))
      throw new TypeError(`webgpu ${call.kind}: ${name} is float16 storage, which only matmul operands and float32 casts accept`)
  }
  if (call.kind === "unary" && call.x.half === true && call.out.half === true) throw new TypeError("webgpu cast: float16 to float16 is not a conversion")
  if (call.kind === "matmul" && call.a.shape.length - 2 > 4)
    throw new RangeError(`webgpu matmul: batch rank ${call.a.shape.length - 2} exceeds 4`)
}
