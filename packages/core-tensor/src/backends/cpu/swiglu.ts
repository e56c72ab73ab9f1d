import type { KernelOf } from "../../backend.js"
import { elementCount, type Memory } from "./buffer.js"
import type { KernelTable } from "./kernel.js"

/** σ(z) = 1 / (1 + e^−z); for very negative z, e^−z overflows to Infinity and σ is 0, as it should be. */
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z))

/** SwiGLU core: out = silu(gate) · up, silu(z) = z · σ(z). Contiguous, offsets honoured. */
function siluMul({ gate, up, out }: KernelOf<"siluMul">, mem: Memory): void {
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
