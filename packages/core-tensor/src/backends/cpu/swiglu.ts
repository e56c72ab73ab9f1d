import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"
import { forElements } from "./wasm-call.js"

/** σ(z) = 1 / (1 + e^−z); for very negative z, e^−z overflows to Infinity and σ is 0, as it should be. */
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z))

/** SwiGLU core: out = silu(gate) · up, silu(z) = z · σ(z). Contiguous, offsets honoured. WASM SIMD (exp within
 *  2 ulp) split over the threads when large; the JS loops are the reference. */
function siluMul({ gate, up, out }: KernelOf<"siluMul">, mem: Memory): void {
  const [za, ua, ya] = [mem.addr(gate), mem.addr(up), mem.addr(out)]
  forElements("silu_mul", elementCount(out.shape), 6, (s, n) => [ya + 4 * s, za + 4 * s, ua + 4 * s, n])
}

export function siluMulJs({ gate, up, out }: KernelOf<"siluMul">, mem: Memory): void {
  const Z = mem.f32(gate)
  const U = mem.f32(up)
  const Y = mem.f32(out)
  const n = elementCount(out.shape)
  for (let i = 0; i < n; i++) {
    const z = Z[gate.offset + i]
    Y[out.offset + i] = z * sigmoid(z) * U[up.offset + i]
  }
}

/** dGate = g · up · σ(z)(1 + z(1 − σ(z))), dUp = g · silu(z). */
function siluMulBackward({ gate, up, g, dGate, dUp }: KernelOf<"siluMulBackward">, mem: Memory): void {
  const [za, ua, ga, dga, dua] = [mem.addr(gate), mem.addr(up), mem.addr(g), mem.addr(dGate), mem.addr(dUp)]
  forElements("silu_mul_bwd", elementCount(gate.shape), 8, (s, n) => [dga + 4 * s, dua + 4 * s, za + 4 * s, ua + 4 * s, ga + 4 * s, n])
}

export function siluMulBackwardJs({ gate, up, g, dGate, dUp }: KernelOf<"siluMulBackward">, mem: Memory): void {
  const Z = mem.f32(gate)
  const U = mem.f32(up)
  const G = mem.f32(g)
  const DG = mem.f32(dGate)
  const DU = mem.f32(dUp)
  const n = elementCount(gate.shape)
  for (let i = 0; i < n; i++) {
    const z = Z[gate.offset + i]
    const s = sigmoid(z)
    const gi = G[g.offset + i]
    DG[dGate.offset + i] = gi * U[up.offset + i] * s * (1 + z * (1 - s))
    DU[dUp.offset + i] = gi * z * s
  }
}

export const swigluKernels = { siluMul, siluMulBackward } satisfies KernelTable<"siluMul" | "siluMulBackward">
