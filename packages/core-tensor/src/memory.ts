import type { Backend, DeviceBuffer } from "./backend.js"
import { LeakError } from "./errors.js"
import type { Tensor } from "./tensor.js"

/**
 * Reference-counted device memory. A `Storage` is one backend buffer; every Tensor (a view) holds one
 * reference, so a reshape or a slice costs no copy and the buffer returns to the backend's pool when the last
 * view is disposed. Accounting lives here so the leak detector and peak-memory figures are exact.
 */
export class MemoryAccount {
  liveBytes = 0
  peakBytes = 0
  liveStorages = 0
  readonly liveTensors = new Set<Tensor>()

  resetPeak(): void {
    this.peakBytes = this.liveBytes
  }
}

export class Storage {
  private refs = 1
  constructor(
    readonly backend: Backend,
    readonly buffer: DeviceBuffer,
    readonly byteLength: number,
    private readonly account: MemoryAccount,
  ) {
    account.liveBytes += byteLength
    account.liveStorages += 1
    if (account.liveBytes > account.peakBytes) account.peakBytes = account.liveBytes
  }

  get alive(): boolean {
    return this.refs > 0
  }

  retain(): this {
    this.refs += 1
    return this
  }

  release(): void {
    if (this.refs <= 0) return
    this.refs -= 1
    if (this.refs === 0) {
      this.account.liveBytes -= this.byteLength
      this.account.liveStorages -= 1
      this.backend.free(this.buffer)
    }
  }
}

/** A snapshot of a device's memory use. */
export interface MemoryStats {
  readonly liveTensors: number
  readonly liveStorages: number
  readonly liveBytes: number
  readonly peakBytes: number
}

// ---- scopes -------------------------------------------------------------------------------------------------

const scopeStack: Set<Tensor>[] = []

/** Called by every Tensor constructor: the innermost open scope owns the new tensor. */
export function registerInScope(t: Tensor): void {
  scopeStack[scopeStack.length - 1]?.add(t)
}

/** Take a tensor out of the scope that owns it, so the scope's end does not dispose it. */
export function keep<T extends Tensor>(t: T): T {
  for (let i = scopeStack.length - 1; i >= 0; i--) if (scopeStack[i].delete(t)) break
  return t
}

function collectTensors(value: unknown, into: Set<Tensor>, isTensor: (v: unknown) => v is Tensor): void {
  if (isTensor(value)) into.add(value)
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into, isTensor)
  else if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype)
    for (const v of Object.values(value)) collectTensors(v, into, isTensor)
}

let tensorPredicate: (v: unknown) => v is Tensor = (_v): _v is Tensor => false
/** @internal wired by tensor.ts to break the import cycle. */
export function setTensorPredicate(p: (v: unknown) => v is Tensor): void {
  tensorPredicate = p
}

/**
 * Run `fn` and dispose every tensor it created except those in its result (found in arrays and plain objects).
 * Synchronous on purpose: an `await` inside would let unrelated work register in this scope. For async code,
 * dispose explicitly or use `using t = ...` (Tensor implements Symbol.dispose).
 */
export function tidy<R>(fn: () => R): R {
  const scope = new Set<Tensor>()
  scopeStack.push(scope)
  let result: R
  try {
    result = fn()
  } catch (e) {
    scopeStack.pop()
    for (const t of scope) t.dispose()
    throw e
  }
  scopeStack.pop()
  const survivors = new Set<Tensor>()
  collectTensors(result, survivors, tensorPredicate)
  for (const t of scope) {
    if (survivors.has(t)) registerInScope(t)
    else t.dispose()
  }
  return result
}

/**
 * Leak detector for tests: runs `fn` (sync or async) and fails with a LeakError listing the shapes of tensors
 * that were created inside and are still alive afterwards, beyond those returned.
 */
export async function expectNoLeaks<R>(account: MemoryAccount, fn: () => R | Promise<R>): Promise<R> {
  const before = new Set(account.liveTensors)
  const result = await fn()
  const returned = new Set<Tensor>()
  collectTensors(result, returned, tensorPredicate)
  const leaked = [...account.liveTensors].filter((t) => !before.has(t) && !returned.has(t))
  if (leaked.length > 0) {
    const shapes = leaked.slice(0, 10).map((t) => `${t.dtype}[${t.shape.join(",")}]`)
    throw new LeakError({ live: leaked.length, message: `${leaked.length} tensor(s) leaked: ${shapes.join(" ")}${leaked.length > 10 ? " …" : ""}` })
  }
  return result
}
