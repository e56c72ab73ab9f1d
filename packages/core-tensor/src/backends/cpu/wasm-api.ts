/**
 * The slice of the WebAssembly JS API the CPU backend uses. The repository compiles against ES2023 + Node
 * types, which do not declare the WebAssembly namespace's classes, so they are typed here and read from
 * globalThis.
 */
export interface WasmMemory {
  /** A SharedArrayBuffer for a shared memory; a new object after every grow (the old one stays valid). */
  readonly buffer: SharedArrayBuffer
  /** Grow by `pages` 64 KiB pages; returns the previous size in pages. */
  grow(pages: number): number
}
export type WasmModule = object
export interface WasmInstance {
  readonly exports: Record<string, unknown>
}
export interface WasmGlobal {
  value: number
}
interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory
  Module: new (bytes: Uint8Array) => WasmModule
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => WasmInstance
  validate(bytes: Uint8Array): boolean
}

export const wasm: WasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly
