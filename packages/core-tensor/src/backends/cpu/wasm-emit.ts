/**
 * A tiny WebAssembly binary emitter: enough of the format (types, an imported shared memory, functions,
 * mutable globals, exports, code) and of the instruction set (integer/float scalars, SIMD v128, relaxed SIMD,
 * bulk memory) to generate the CPU backend's kernels from TypeScript at start-up, with no external toolchain.
 *
 * Functions are written as stack-machine code through `FunctionBuilder`: each method appends one instruction
 * and returns the builder, so code reads top to bottom like the `.wat` text it encodes. Locals are allocated
 * by type with `local(type)`. The builder tracks nothing about the operand stack: `WebAssembly.validate` (run
 * once when the module is built) is the type checker.
 */

export const I32 = 0x7f
export const I64 = 0x7e
export const F32 = 0x7d
export const F64 = 0x7c
export const V128 = 0x7b
export type ValType = typeof I32 | typeof I64 | typeof F32 | typeof F64 | typeof V128

/** The block type of a `block`/`loop`/`if` without results. */
const EMPTY_BLOCK = 0x40

/** Unsigned LEB128. */
export function uleb(out: number[], value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`uleb: ${value}`)
  do {
    let byte = value & 0x7f
    value = Math.floor(value / 128)
    if (value !== 0) byte |= 0x80
    out.push(byte)
  } while (value !== 0)
}

/** Signed LEB128 of a 32-bit integer (values ≥ 2^31 are taken as their int32 bit pattern). */
export function sleb(out: number[], value: number): void {
  value |= 0
  for (;;) {
    const byte = value & 0x7f
    value >>= 7
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) {
      out.push(byte)
      return
    }
    out.push(byte | 0x80)
  }
}

const utf8 = new TextEncoder()
function name(out: number[], s: string): void {
  const bytes = utf8.encode(s)
  uleb(out, bytes.length)
  for (const b of bytes) out.push(b)
}

const scratchF32 = new Float32Array(1)
const scratchF64 = new Float64Array(1)

/** Memory-access immediates: log2 alignment and a constant byte offset added to the address operand. */
interface MemArg {
  readonly offset?: number
  readonly align?: number
}

export class FunctionBuilder {
  readonly code: number[] = []
  /** Types of the locals declared with `local`, in order (after the parameters). */
  readonly localTypes: ValType[] = []

  constructor(
    readonly index: number,
    readonly name: string,
    readonly params: readonly ValType[],
    readonly results: readonly ValType[],
  ) {}

  /** Index of parameter i. */
  param(i: number): number {
    if (i >= this.params.length) throw new RangeError(`${this.name}: no parameter ${i}`)
    return i
  }

  /** A fresh local of `type`; its index. */
  local(type: ValType): number {
    this.localTypes.push(type)
    return this.params.length + this.localTypes.length - 1
  }

  op(...bytes: number[]): this {
    for (const b of bytes) this.code.push(b)
    return this
  }

  private mem(opcode: number[], naturalAlign: number, arg: MemArg): this {
    this.code.push(...opcode)
    uleb(this.code, arg.align ?? naturalAlign)
    uleb(this.code, arg.offset ?? 0)
    return this
  }

  private simd(op: number): this {
    this.code.push(0xfd)
    uleb(this.code, op)
    return this
  }

  // ---- control ----
  block(): this {
    return this.op(0x02, EMPTY_BLOCK)
  }
  loop(): this {
    return this.op(0x03, EMPTY_BLOCK)
  }
  if(): this {
    return this.op(0x04, EMPTY_BLOCK)
  }
  else(): this {
    return this.op(0x05)
  }
  end(): this {
    return this.op(0x0b)
  }
  br(depth: number): this {
    this.op(0x0c)
    uleb(this.code, depth)
    return this
  }
  brIf(depth: number): this {
    this.op(0x0d)
    uleb(this.code, depth)
    return this
  }
  return(): this {
    return this.op(0x0f)
  }
  call(fn: FunctionBuilder | number): this {
    this.op(0x10)
    uleb(this.code, typeof fn === "number" ? fn : fn.index)
    return this
  }
  drop(): this {
    return this.op(0x1a)
  }
  select(): this {
    return this.op(0x1b)
  }

  // ---- variables ----
  get(local: number): this {
    this.op(0x20)
    uleb(this.code, local)
    return this
  }
  set(local: number): this {
    this.op(0x21)
    uleb(this.code, local)
    return this
  }
  tee(local: number): this {
    this.op(0x22)
    uleb(this.code, local)
    return this
  }
  globalGet(global: number): this {
    this.op(0x23)
    uleb(this.code, global)
    return this
  }
  globalSet(global: number): this {
    this.op(0x24)
    uleb(this.code, global)
    return this
  }

  // ---- memory ----
  i32Load(arg: MemArg = {}): this {
    return this.mem([0x28], 2, arg)
  }
  f32Load(arg: MemArg = {}): this {
    return this.mem([0x2a], 2, arg)
  }
  f64Load(arg: MemArg = {}): this {
    return this.mem([0x2b], 3, arg)
  }
  i32Store(arg: MemArg = {}): this {
    return this.mem([0x36], 2, arg)
  }
  f32Store(arg: MemArg = {}): this {
    return this.mem([0x38], 2, arg)
  }
  f64Store(arg: MemArg = {}): this {
    return this.mem([0x39], 3, arg)
  }
  v128Load(arg: MemArg = {}): this {
    return this.mem([0xfd, 0x00], 4, arg)
  }
  v128Load32Splat(arg: MemArg = {}): this {
    return this.mem([0xfd, 0x09], 2, arg)
  }
  v128Load32Zero(arg: MemArg = {}): this {
    return this.mem([0xfd, 0x5c], 2, arg)
  }
  v128Load64Zero(arg: MemArg = {}): this {
    return this.mem([0xfd, 0x5d], 3, arg)
  }
  v128Store(arg: MemArg = {}): this {
    return this.mem([0xfd, 0x0b], 4, arg)
  }
  /** memory.fill(dst, byte value, length). */
  memoryFill(): this {
    return this.op(0xfc, 0x0b, 0x00)
  }
  /** memory.copy(dst, src, length). */
  memoryCopy(): this {
    return this.op(0xfc, 0x0a, 0x00, 0x00)
  }

  // ---- constants ----
  i32Const(value: number): this {
    this.op(0x41)
    sleb(this.code, value)
    return this
  }
  f32Const(value: number): this {
    scratchF32[0] = value
    this.op(0x43, ...new Uint8Array(scratchF32.buffer))
    return this
  }
  f64Const(value: number): this {
    scratchF64[0] = value
    this.op(0x44, ...new Uint8Array(scratchF64.buffer))
    return this
  }
  /** v128.const with four f32 lanes (one value splats). */
  v128ConstF32(...lanes: number[]): this {
    const values = lanes.length === 1 ? [lanes[0], lanes[0], lanes[0], lanes[0]] : lanes
    if (values.length !== 4) throw new RangeError("v128ConstF32: 1 or 4 lanes")
    const bytes = new Uint8Array(new Float32Array(values).buffer)
    this.simd(0x0c)
    return this.op(...bytes)
  }
  v128ConstI32(...lanes: number[]): this {
    const values = lanes.length === 1 ? [lanes[0], lanes[0], lanes[0], lanes[0]] : lanes
    if (values.length !== 4) throw new RangeError("v128ConstI32: 1 or 4 lanes")
    const bytes = new Uint8Array(new Int32Array(values).buffer)
    this.simd(0x0c)
    return this.op(...bytes)
  }

  // ---- i32 ----
  i32Eqz(): this {
    return this.op(0x45)
  }
  i32Eq(): this {
    return this.op(0x46)
  }
  i32Ne(): this {
    return this.op(0x47)
  }
  i32LtS(): this {
    return this.op(0x48)
  }
  i32LtU(): this {
    return this.op(0x49)
  }
  i32GtS(): this {
    return this.op(0x4a)
  }
  i32GtU(): this {
    return this.op(0x4b)
  }
  i32LeS(): this {
    return this.op(0x4c)
  }
  i32GeS(): this {
    return this.op(0x4e)
  }
  i32GeU(): this {
    return this.op(0x4f)
  }
  i32Add(): this {
    return this.op(0x6a)
  }
  i32Sub(): this {
    return this.op(0x6b)
  }
  i32Mul(): this {
    return this.op(0x6c)
  }
  i32DivS(): this {
    return this.op(0x6d)
  }
  i32DivU(): this {
    return this.op(0x6e)
  }
  i32RemU(): this {
    return this.op(0x70)
  }
  i32And(): this {
    return this.op(0x71)
  }
  i32Or(): this {
    return this.op(0x72)
  }
  i32Xor(): this {
    return this.op(0x73)
  }
  i32Shl(): this {
    return this.op(0x74)
  }
  i32ShrS(): this {
    return this.op(0x75)
  }
  i32ShrU(): this {
    return this.op(0x76)
  }
  i32TruncF32S(): this {
    return this.op(0xa8)
  }
  i32ReinterpretF32(): this {
    return this.op(0xbc)
  }

  // ---- f32 / f64 scalar ----
  f32Eq(): this {
    return this.op(0x5b)
  }
  f32Ne(): this {
    return this.op(0x5c)
  }
  f32Lt(): this {
    return this.op(0x5d)
  }
  f32Gt(): this {
    return this.op(0x5e)
  }
  f32Abs(): this {
    return this.op(0x8b)
  }
  f32Neg(): this {
    return this.op(0x8c)
  }
  f32Sqrt(): this {
    return this.op(0x91)
  }
  f32Add(): this {
    return this.op(0x92)
  }
  f32Sub(): this {
    return this.op(0x93)
  }
  f32Mul(): this {
    return this.op(0x94)
  }
  f32Div(): this {
    return this.op(0x95)
  }
  f32Min(): this {
    return this.op(0x96)
  }
  f32Max(): this {
    return this.op(0x97)
  }
  f32ConvertI32S(): this {
    return this.op(0xb2)
  }
  f32DemoteF64(): this {
    return this.op(0xb6)
  }
  f32ReinterpretI32(): this {
    return this.op(0xbe)
  }
  f64Lt(): this {
    return this.op(0x63)
  }
  f64Gt(): this {
    return this.op(0x64)
  }
  f64Sqrt(): this {
    return this.op(0x9f)
  }
  f64Add(): this {
    return this.op(0xa0)
  }
  f64Sub(): this {
    return this.op(0xa1)
  }
  f64Mul(): this {
    return this.op(0xa2)
  }
  f64Div(): this {
    return this.op(0xa3)
  }
  f64Max(): this {
    return this.op(0xa5)
  }
  f64ConvertI32S(): this {
    return this.op(0xb7)
  }
  f64PromoteF32(): this {
    return this.op(0xbb)
  }

  // ---- v128 ----
  f32x4Splat(): this {
    return this.simd(0x13)
  }
  i32x4Splat(): this {
    return this.simd(0x11)
  }
  f32x4ExtractLane(lane: number): this {
    return this.simd(0x1f).op(lane)
  }
  f32x4ReplaceLane(lane: number): this {
    return this.simd(0x20).op(lane)
  }
  /** i8x16.shuffle with 16 byte-lane indices (0–15 from the first operand, 16–31 from the second). */
  i8x16Shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16) throw new RangeError("i8x16Shuffle: 16 lanes")
    return this.simd(0x0d).op(...lanes)
  }
  /** Shuffle of 32-bit lanes (0–3 first operand, 4–7 second), as an i8x16.shuffle. */
  i32x4Shuffle(lanes: readonly number[]): this {
    return this.i8x16Shuffle(lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]))
  }
  f32x4Eq(): this {
    return this.simd(0x41)
  }
  f32x4Ne(): this {
    return this.simd(0x42)
  }
  f32x4Lt(): this {
    return this.simd(0x43)
  }
  f32x4Gt(): this {
    return this.simd(0x44)
  }
  f32x4Le(): this {
    return this.simd(0x45)
  }
  f32x4Ge(): this {
    return this.simd(0x46)
  }
  v128Not(): this {
    return this.simd(0x4d)
  }
  v128And(): this {
    return this.simd(0x4e)
  }
  v128AndNot(): this {
    return this.simd(0x4f)
  }
  v128Or(): this {
    return this.simd(0x50)
  }
  v128Xor(): this {
    return this.simd(0x51)
  }
  /** bitselect(a, b, mask) = (a & mask) | (b & ~mask). */
  v128Bitselect(): this {
    return this.simd(0x52)
  }
  v128AnyTrue(): this {
    return this.simd(0x53)
  }
  f32x4Floor(): this {
    return this.simd(0x68)
  }
  f32x4Nearest(): this {
    return this.simd(0x6a)
  }
  i32x4Eq(): this {
    return this.simd(0x37)
  }
  i32x4Shl(): this {
    return this.simd(0xab)
  }
  i32x4ShrS(): this {
    return this.simd(0xac)
  }
  i32x4ShrU(): this {
    return this.simd(0xad)
  }
  i32x4Add(): this {
    return this.simd(0xae)
  }
  i32x4Sub(): this {
    return this.simd(0xb1)
  }
  i32x4Mul(): this {
    return this.simd(0xb5)
  }
  f32x4Abs(): this {
    return this.simd(0xe0)
  }
  f32x4Neg(): this {
    return this.simd(0xe1)
  }
  f32x4Sqrt(): this {
    return this.simd(0xe3)
  }
  f32x4Add(): this {
    return this.simd(0xe4)
  }
  f32x4Sub(): this {
    return this.simd(0xe5)
  }
  f32x4Mul(): this {
    return this.simd(0xe6)
  }
  f32x4Div(): this {
    return this.simd(0xe7)
  }
  f32x4Min(): this {
    return this.simd(0xe8)
  }
  f32x4Max(): this {
    return this.simd(0xe9)
  }
  /** pmax(a, b) = a < b ? b : a (no NaN propagation rules: maps to a single maxps). */
  f32x4Pmax(): this {
    return this.simd(0xeb)
  }
  f32x4Pmin(): this {
    return this.simd(0xea)
  }
  i32x4TruncSatF32x4S(): this {
    return this.simd(0xf8)
  }
  f32x4ConvertI32x4S(): this {
    return this.simd(0xfa)
  }
  f64x2PromoteLowF32x4(): this {
    return this.simd(0x5f)
  }
  f32x4DemoteF64x2Zero(): this {
    return this.simd(0x5e)
  }
  f64x2Splat(): this {
    return this.simd(0x14)
  }
  f64x2Add(): this {
    return this.simd(0xf0)
  }
  f64x2Sub(): this {
    return this.simd(0xf1)
  }
  f64x2Div(): this {
    return this.simd(0xf3)
  }
  f64x2Sqrt(): this {
    return this.simd(0xef)
  }
  f64x2Mul(): this {
    return this.simd(0xf2)
  }
  f64x2ExtractLane(lane: number): this {
    return this.simd(0x21).op(lane)
  }
  /** relaxed-simd f32x4.relaxed_madd(a, b, c) = a·b + c, fused or not (a single FMA on x64 with FMA3). */
  f32x4RelaxedMadd(): this {
    return this.simd(0x105)
  }
}

export interface ExportedGlobal {
  readonly index: number
  readonly name: string
}

/**
 * A module that imports one memory ("env", "memory") — shared, so that every worker thread's instance sees
 * the same bytes — and defines functions, mutable i32 globals and exports.
 */
export class ModuleBuilder {
  private readonly functions: FunctionBuilder[] = []
  private readonly globals: { readonly type: ValType; readonly init: number; readonly name: string }[] = []

  constructor(
    private readonly memory: { readonly initialPages: number; readonly maximumPages: number; readonly shared: boolean },
  ) {}

  /** Declare a function; its body is emitted later through the returned builder (any order). */
  func(name: string, params: readonly ValType[], results: readonly ValType[] = []): FunctionBuilder {
    const f = new FunctionBuilder(this.functions.length, name, params, results)
    this.functions.push(f)
    return f
  }

  /** A mutable i32 global, exported under `name`; per instance, i.e. per thread. */
  global(name: string, init = 0): ExportedGlobal {
    this.globals.push({ type: I32, init, name })
    return { index: this.globals.length - 1, name }
  }

  /** Export names of the functions, in function-index order. */
  functionNames(): string[] {
    return this.functions.map((f) => f.name)
  }

  build(): Uint8Array {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
    const section = (id: number, body: number[]) => {
      out.push(id)
      uleb(out, body.length)
      for (const b of body) out.push(b)
    }
    // type: one signature per distinct (params, results).
    const signatures: string[] = []
    const typeOf: number[] = []
    const types: number[] = []
    for (const f of this.functions) {
      const key = `${f.params.join(",")}>${f.results.join(",")}`
      let t = signatures.indexOf(key)
      if (t < 0) {
        t = signatures.length
        signatures.push(key)
        types.push(0x60)
        uleb(types, f.params.length)
        types.push(...f.params)
        uleb(types, f.results.length)
        types.push(...f.results)
      }
      typeOf.push(t)
    }
    const typeSection: number[] = []
    uleb(typeSection, signatures.length)
    section(1, typeSection.concat(types))
    // import: the memory.
    const imports: number[] = []
    uleb(imports, 1)
    name(imports, "env")
    name(imports, "memory")
    imports.push(0x02, this.memory.shared ? 0x03 : 0x01)
    uleb(imports, this.memory.initialPages)
    uleb(imports, this.memory.maximumPages)
    section(2, imports)
    // function: type indices.
    const funcs: number[] = []
    uleb(funcs, this.functions.length)
    for (const t of typeOf) uleb(funcs, t)
    section(3, funcs)
    // global.
    if (this.globals.length > 0) {
      const globals: number[] = []
      uleb(globals, this.globals.length)
      for (const g of this.globals) {
        globals.push(g.type, 0x01, 0x41)
        sleb(globals, g.init)
        globals.push(0x0b)
      }
      section(6, globals)
    }
    // export: every function and global by name.
    const exports: number[] = []
    uleb(exports, this.functions.length + this.globals.length)
    for (const f of this.functions) {
      name(exports, f.name)
      exports.push(0x00)
      uleb(exports, f.index)
    }
    this.globals.forEach((g, i) => {
      name(exports, g.name)
      exports.push(0x03)
      uleb(exports, i)
    })
    section(7, exports)
    // code.
    const code: number[] = []
    uleb(code, this.functions.length)
    for (const f of this.functions) {
      const body: number[] = []
      const locals = f.localTypes
      // Run-length encode the local declarations.
      const runs: [number, ValType][] = []
      for (const t of locals) {
        const last = runs[runs.length - 1]
        if (last !== undefined && last[1] === t) last[0]++
        else runs.push([1, t])
      }
      uleb(body, runs.length)
      for (const [n, t] of runs) {
        uleb(body, n)
        body.push(t)
      }
      for (const b of f.code) body.push(b)
      body.push(0x0b)
      uleb(code, body.length)
      for (const b of body) code.push(b)
    }
    section(10, code)
    return new Uint8Array(out)
  }
}
