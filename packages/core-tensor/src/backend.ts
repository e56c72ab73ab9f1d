import type { DType } from "./dtype.js"

/**
 * The backend contract: a handful of methods that every device implements (cpu, webgpu). The tensor layer
 * above owns shapes, views, autodiff and memory accounting; a backend only moves bytes and runs kernels.
 *
 * Kernels are described by `KernelCall`, a discriminated union. Its static part (`KernelSpec`: kind, op,
 * dtypes, ranks) is what `compile` sees and caches — on WebGPU, a WGSL source and pipeline; on the CPU, a
 * closure. Everything that varies per call (shapes, strides, offsets, scalars) is passed to `dispatch`, which on
 * WebGPU goes into a uniform buffer so that one pipeline serves every shape.
 *
 * Conventions every kernel follows:
 *  - sizes, strides and offsets are in elements (4 bytes each, see dtype.ts), never bytes;
 *  - an input `View` may be any strided view (strides may be 0 for broadcast, offset may be non-zero), unless
 *    the kernel's doc says "contiguous" — then strides are row-major and offset is 0;
 *  - outputs are fresh contiguous buffers allocated by the tensor layer, offset 0, never aliasing an input,
 *    except the optimizer kernels whose `inout` views are updated in place (bound once, read_write);
 *  - every output element is written (kernels never rely on a buffer being zeroed beforehand);
 *  - the tensor layer never dispatches a kernel with an empty output.
 */
export type BackendName = "cpu" | "webgpu"

/** Opaque device buffer handle. `byteLength` is the size asked for in `alloc`. */
export interface DeviceBuffer {
  readonly byteLength: number
}

/** A strided view into a device buffer. */
export interface View {
  readonly buffer: DeviceBuffer
  readonly dtype: DType
  readonly shape: readonly number[]
  readonly strides: readonly number[]
  readonly offset: number
  /** float32 values stored as IEEE binary16 (dtype.ts `CreateDType`): 2 bytes per element, and shape, strides
   *  and offset count halves. Only a backend whose info.features has "shader-f16" (WebGPU) is given such views,
   *  and only as matmul operands and as the input or output of a float32 `cast`. */
  readonly half?: boolean
}

export type UnaryOp = "neg" | "reciprocal" | "exp" | "log" | "sqrt" | "sin" | "cos" | "cast"
export type BinaryOp = "add" | "mul" | "max" | "cmplt" | "cmpeq"
export type ReduceOp = "sum" | "max"

/**
 * Every kernel, with its exact semantics. `out` views are contiguous; their shape is given.
 */
export type KernelCall =
  /** out[i] = f(x[i]). x and out have the same shape. `cast` converts x.dtype → out.dtype
   *  (float→int truncates toward zero, NaN and values outside the int32 range are unspecified; →bool is
   *  x != 0; bool→number is 0/1). For the other ops
   *  x and out are float32. */
  | { readonly kind: "unary"; readonly op: UnaryOp; readonly x: View; readonly out: View }
  /** out[i] = a[i] ∘ b[i]; a, b, out have the same shape (broadcasting is done with stride-0 views).
   *  add/mul/max: a.dtype = b.dtype = out.dtype (float32 or int32). cmplt (a < b) / cmpeq (a == b):
   *  out.dtype = bool, a.dtype = b.dtype (any). max of NaN is NaN is not required. */
  | { readonly kind: "binary"; readonly op: BinaryOp; readonly a: View; readonly b: View; readonly out: View }
  /** out[i] = cond[i] != 0 ? a[i] : b[i]; cond is bool; a, b, out share a dtype; all the same shape. */
  | { readonly kind: "where"; readonly cond: View; readonly a: View; readonly b: View; readonly out: View }
  /** Reduce x along `axis`: out.shape = x.shape with shape[axis] = 1. sum of an empty axis is 0, max of an
   *  empty axis is -Infinity (float32) or -2^31 (int32). dtype float32 or int32, out has x's dtype. */
  | { readonly kind: "reduce"; readonly op: ReduceOp; readonly axis: number; readonly x: View; readonly out: View }
  /** out = x, materialised contiguously (x strided, same shape and dtype). */
  | { readonly kind: "copy"; readonly x: View; readonly out: View }
  /** Constant pad: out[j] = x[j - before] where every coordinate is inside x, else `value`.
   *  out.shape[d] = before[d] + x.shape[d] + after[d] (before/after ≥ 0; negative pads are slices above). */
  | { readonly kind: "pad"; readonly x: View; readonly before: readonly number[]; readonly value: number; readonly out: View }
  /** Batched matrix product, float32. a: [...batch, M, K], b: [...batch, K, N], both strided (a transpose is
   *  just swapped strides; a broadcast batch dim has stride 0), batch shapes equal; out: [...batch, M, N].
   *  Batch rank ≤ 4. K may be 0 (out = 0). */
  | { readonly kind: "matmul"; readonly a: View; readonly b: View; readonly out: View }
  /** Embedding lookup. table: [V, D] float32 contiguous; index: [N] int32 contiguous; out: [N, D].
   *  An index outside [0, V) yields a row of zeros (the tensor layer validates host-side indices). */
  | { readonly kind: "gather"; readonly table: View; readonly index: View; readonly out: View }
  /** The adjoint of gather: out: [V, D] = 0, then out[index[n]] += src[n] for n = 0..N-1 in order
   *  (deterministic). src: [N, D] float32 contiguous; index: [N] int32 contiguous; out-of-range n skipped. */
  | { readonly kind: "scatterAdd"; readonly src: View; readonly index: View; readonly out: View }
  /** out[i] = value (cast to out.dtype). */
  | { readonly kind: "fill"; readonly value: number; readonly out: View }
  /** Counter-based random numbers (Philox-4x32-10, see rng.ts for the exact definition that both backends
   *  implement). out float32 contiguous, element i from block counter (i + offset, 0, streamLo, streamHi)
   *  under key (seedLo, seedHi). uniform: [0, 1). normal: standard normal (Box–Muller, cosine branch). */
  | {
      readonly kind: "random"
      readonly dist: "uniform" | "normal"
      readonly seed: readonly [number, number]
      readonly stream: readonly [number, number]
      readonly offset: number
      readonly out: View
    }
  /** RMSNorm over the last axis, as Hugging Face's LlamaRMSNorm. x: [R, D] contiguous, weight: [D].
   *  rstd[r] = 1 / sqrt(mean_d x[r,d]² + eps); out[r,d] = weight[d] · x[r,d] · rstd[r]. Writes out and rstd [R]. */
  | { readonly kind: "rmsNorm"; readonly eps: number; readonly x: View; readonly weight: View; readonly out: View; readonly rstd: View }
  /** Gradient of rmsNorm w.r.t. x: with h = x·rstd, gw = g·weight:
   *  dx[r,d] = rstd[r] · (gw[r,d] − h[r,d] · mean_e(gw[r,e]·h[r,e])). x, g: [R, D]; weight [D]; rstd [R]. */
  | { readonly kind: "rmsNormBackward"; readonly x: View; readonly weight: View; readonly rstd: View; readonly g: View; readonly dx: View }
  /** Rotary embedding, Hugging Face rotate-half convention. x: [B, H, T, Dh] contiguous (Dh even, half = Dh/2),
   *  cos, sin: [Bc, T, Dh] contiguous with Bc ∈ {1, B} (Bc = 1 broadcasts over the batch).
   *  forward:  out[..d] = x[d]·cos[d] + rot(x)[d]·sin[d], rot(x) = (−x[half..], x[..half])
   *  backward: out[d] = g[d]·cos[d] + rotᵀ(g·sin)[d], rotᵀ(y) = (y[half..], −y[..half])
   *  i.e. for d < half: out = g[d]cos[d] + g[d+half]sin[d+half]; for d ≥ half: out = g[d]cos[d] − g[d−half]sin[d−half]. */
  | { readonly kind: "rope"; readonly backward: boolean; readonly x: View; readonly cos: View; readonly sin: View; readonly out: View }
  /** SwiGLU core: out = silu(gate)·up, silu(z) = z·σ(z). gate, up, out same shape, contiguous. */
  | { readonly kind: "siluMul"; readonly gate: View; readonly up: View; readonly out: View }
  /** Its gradient: dGate = g·up·σ(z)(1 + z(1 − σ(z))), dUp = g·silu(z), z = gate. All contiguous, same shape. */
  | { readonly kind: "siluMulBackward"; readonly gate: View; readonly up: View; readonly g: View; readonly dGate: View; readonly dUp: View }
  /** Masked softmax over the last axis. x: [R, C] contiguous (R = B·Hq·Tq rows ordered b, h, t; C = Tk).
   *  Query row r has query position i = r mod Tq, batch b = floor(r / (heads·Tq)); key j is allowed iff
   *  (!causal or j ≤ i + qOffset) and (window = 0 or j > i + qOffset − window) and (no keyMask or
   *  keyMask[b, j] != 0). keyMask: [B, C] bool contiguous, optional. Scale is applied first: z = x·scale.
   *  out[r, j] = exp(z − max) / Σ over allowed keys, 0 for disallowed keys; a row with no allowed key is all 0.
   *  With causal = false, window = 0 and no keyMask, heads/tq/qOffset are ignored (a plain softmax). */
  | {
      readonly kind: "softmax"
      readonly scale: number
      readonly causal: boolean
      readonly window: number
      readonly tq: number
      readonly heads: number
      readonly qOffset: number
      readonly x: View
      readonly keyMask: View | null
      readonly out: View
    }
  /** dx[r, j] = p[r, j] · (g[r, j] − Σ_k g[r, k] p[r, k]) · scale. p, g, dx: [R, C] contiguous. */
  | { readonly kind: "softmaxBackward"; readonly scale: number; readonly p: View; readonly g: View; readonly dx: View }
  /** Fused grouped-query attention, forward. q: [B, Hq, T, D]; k, v: [B, Hkv, Tk, D] with Hq = G·Hkv (query head
   *  h reads KV head floor(h / G)) and Tk ≥ T; keyMask: [B, Tk] bool or null; all contiguous, float32.
   *  Query t sits at position i = t + qOffset with qOffset = Tk − T; key j is allowed by exactly the rule of the
   *  `softmax` kernel (causal: j ≤ i; window > 0: j > i − window; keyMask[b, j] != 0). With s_j = scale · q_t·k_j:
   *  lse[b, h, t] = log Σ_{allowed j} exp(s_j) and out[b, h, t] = Σ_{allowed j} exp(s_j − lse) · v_j.
   *  A query with no allowed key gets out = 0 and lse = −Infinity. out: [B, Hq, T, D], lse: [B, Hq, T]. */
  | {
      readonly kind: "attention"
      readonly scale: number
      readonly causal: boolean
      readonly window: number
      readonly q: View
      readonly k: View
      readonly v: View
      readonly keyMask: View | null
      readonly out: View
      readonly lse: View
    }
  /** Gradient of `attention` (same shapes, mask and scale) given its out and lse and the cotangent dOut
   *  [B, Hq, T, D] (contiguous). With p_tj = exp(s_tj − lse_t) on allowed keys (0 elsewhere, and for rows with
   *  lse = −∞) and δ_t = Σ_d dOut_td · out_td:
   *  dq_t = scale · Σ_j p_tj (dOut_t·v_j − δ_t) k_j;  dk_j = scale · Σ_{h in group, t} p_tj (dOut_t·v_j − δ_t) q_t;
   *  dv_j = Σ_{h in group, t} p_tj dOut_t — dk and dv sum over the G query heads sharing a KV head.
   *  dq: [B, Hq, T, D], dk, dv: [B, Hkv, Tk, D]. */
  | {
      readonly kind: "attentionBackward"
      readonly scale: number
      readonly causal: boolean
      readonly window: number
      readonly q: View
      readonly k: View
      readonly v: View
      readonly keyMask: View | null
      readonly out: View
      readonly lse: View
      readonly dOut: View
      readonly dq: View
      readonly dk: View
      readonly dv: View
    }
  /** Per-row cross-entropy of logits [N, V] (contiguous) against target [N] int32:
   *  lse[n] = log Σ_v exp(logits[n, v]); loss[n] = lse[n] − logits[n, target[n]], or 0 (and lse still written)
   *  when target[n] == ignoreIndex or outside [0, V). Writes loss [N] and lse [N]. */
  | { readonly kind: "crossEntropy"; readonly ignoreIndex: number; readonly logits: View; readonly target: View; readonly loss: View; readonly lse: View }
  /** dlogits[n, v] = g[n] · (exp(logits[n, v] − lse[n]) − [v == target[n]]), a zero row for ignored targets.
   *  g: [N] float32. */
  | {
      readonly kind: "crossEntropyBackward"
      readonly ignoreIndex: number
      readonly logits: View
      readonly target: View
      readonly lse: View
      readonly g: View
      readonly dlogits: View
    }
  /** AdamW step in place (decoupled weight decay, PyTorch's torch.optim.AdamW order):
   *  p ← p − lr·wd·p; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
   *  p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 − β1^t, bc2 = 1 − β2^t.
   *  p, m, v: inout contiguous float32 views of distinct buffers; g: contiguous, same size. */
  | {
      readonly kind: "adamw"
      readonly lr: number
      readonly beta1: number
      readonly beta2: number
      readonly eps: number
      readonly weightDecay: number
      readonly bc1: number
      readonly bc2: number
      readonly p: View
      readonly m: View
      readonly v: View
      readonly g: View
    }
  /** SGD with momentum and (coupled) weight decay in place, as torch.optim.SGD (dampening 0, no nesterov):
   *  d = g + wd·p; buf ← first ? d : momentum·buf + d; p ← p − lr·(momentum > 0 ? buf : d).
   *  `buf` is written even when momentum = 0. p, buf inout; g contiguous. */
  | {
      readonly kind: "sgd"
      readonly lr: number
      readonly momentum: number
      readonly weightDecay: number
      readonly first: boolean
      readonly p: View
      readonly buf: View
      readonly g: View
    }

export type KernelKind = KernelCall["kind"]
export type KernelOf<K extends KernelKind> = Extract<KernelCall, { kind: K }>

/** The static part of a kernel call: what a compiled program depends on. */
export interface KernelSpec {
  readonly kind: KernelKind
  /** A stable string that identifies the compiled program: kind, op, dtypes, ranks, flags. */
  readonly key: string
  readonly call: KernelCall
}

export interface BackendLimits {
  /** Largest single buffer, bytes. */
  readonly maxBufferSize: number
  /** Largest buffer a kernel can bind, bytes (lavapipe: 128 MiB). */
  readonly maxBindingSize: number
}

export interface BackendInfo {
  readonly name: BackendName
  /** Adapter / device description, e.g. "llvmpipe (LLVM 19...)" or "cpu (2 threads)". */
  readonly device: string
  readonly features: readonly string[]
  readonly limits: BackendLimits
}

/** A compiled kernel, opaque to the caller. */
export interface Program {
  readonly key: string
}

export interface Backend {
  readonly name: BackendName
  readonly info: BackendInfo
  /** A buffer of at least `byteLength` bytes (contents undefined). */
  alloc(byteLength: number): DeviceBuffer
  /** Return a buffer; it may be pooled and handed out again by `alloc`. */
  free(buffer: DeviceBuffer): void
  /** Copy host bytes into a buffer at `byteOffset`. Ordered with respect to dispatches. */
  write(buffer: DeviceBuffer, data: ArrayBufferView, byteOffset?: number): void
  /** Read bytes back; resolves after every earlier dispatch has finished. */
  read(buffer: DeviceBuffer, byteOffset: number, byteLength: number): Promise<Uint8Array>
  /** Compile (or fetch from the cache) the program for a kernel's static part. */
  compile(spec: KernelSpec): Program
  /** Enqueue one kernel call with its dynamic parameters. */
  dispatch(program: Program, call: KernelCall): void
  /** Submit queued work and wait until the device is idle. */
  flush(): Promise<void>
  /** Release every resource; the backend is unusable afterwards. */
  destroy(): void
}

const viewKey = (v: View | null) => (v === null ? "none" : `${v.half ? "float16" : v.dtype}${v.shape.length}`)

/** The static key of a call: kind, op and the dtype/rank of each view. Shapes are dynamic. */
export function specOf(call: KernelCall): KernelSpec {
  const parts: string[] = [call.kind]
  for (const [name, value] of Object.entries(call)) {
    if (name === "kind") continue
    if (typeof value === "string" || typeof value === "boolean") parts.push(`${name}=${value}`)
    else if (value === null || (typeof value === "object" && "buffer" in value)) parts.push(`${name}:${viewKey(value as View | null)}`)
  }
  return { kind: call.kind, key: parts.join("|"), call }
}
