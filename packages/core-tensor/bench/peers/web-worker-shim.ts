/**
 * A minimal Web `Worker` for Node, on top of `node:worker_threads`, so that libraries written for the browser that
 * spread work over Web Workers (jax-js's wasm backend: `new Worker(blobUrl, { type: "module" })`, `self.onmessage`,
 * `postMessage`) run multi-threaded in Node, which has no global `Worker`. Covers what those libraries use:
 * blob:/file:/data: script URLs, `postMessage` (structured clone, so a shared `WebAssembly.Memory` and
 * `WebAssembly.Module`s pass through), `onmessage`/`onerror`, `addEventListener`, `terminate`.
 */
import { resolveObjectURL } from "node:buffer"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Worker as NodeWorker } from "node:worker_threads"

/** Runs inside the worker thread: gives the script a `self`/`postMessage`/`onmessage` scope, then evaluates it. */
const BOOTSTRAP = `
const { parentPort, workerData } = require("node:worker_threads");
globalThis.self = globalThis;
globalThis.postMessage = (data, transfer) => parentPort.postMessage(data, transfer);
const listeners = [];
globalThis.addEventListener = (type, fn) => { if (type === "message") listeners.push(fn); };
globalThis.close = () => process.exit(0);
parentPort.on("message", (data) => {
  const event = { data };
  if (typeof globalThis.onmessage === "function") globalThis.onmessage(event);
  for (const fn of listeners) fn(event);
});
(0, eval)(workerData.source);
`

type Listener = (event: { data?: unknown; message?: string; error?: unknown }) => void

const live = new Set<WebWorker>()
let started = 0

class WebWorker {
  onmessage: Listener | null = null
  onerror: Listener | null = null
  readonly #listeners = new Map<string, Listener[]>()
  readonly #pending: Array<[unknown, unknown[] | undefined]> = []
  #worker: NodeWorker | null = null
  #terminated = false

  constructor(url: string | URL, _options?: { type?: string; name?: string }) {
    live.add(this)
    void this.#start(String(url)).catch((e: unknown) => this.#emit("error", { message: e instanceof Error ? e.message : String(e), error: e }))
  }

  async #start(url: string): Promise<void> {
    let source: string
    if (url.startsWith("blob:")) {
      const blob = resolveObjectURL(url)
      if (blob === undefined) throw new Error(`web-worker-shim: ${url} is not a live blob URL`)
      source = await blob.text()
    } else if (url.startsWith("data:")) source = await (await fetch(url)).text()
    else source = readFileSync(url.startsWith("file:") ? fileURLToPath(url) : url, "utf8")
    if (this.#terminated) return
    const w = new NodeWorker(BOOTSTRAP, { eval: true, workerData: { source } })
    started += 1
    w.on("message", (data: unknown) => this.#emit("message", { data }))
    w.on("error", (error: Error) => this.#emit("error", { message: error.message, error }))
    this.#worker = w
    for (const [data, transfer] of this.#pending.splice(0)) w.postMessage(data, transfer as never)
  }

  #emit(type: "message" | "error", event: Parameters<Listener>[0]): void {
    const handler = type === "message" ? this.onmessage : this.onerror
    handler?.call(this, event)
    for (const fn of this.#listeners.get(type) ?? []) fn.call(this, event)
  }

  postMessage(data: unknown, transfer?: unknown[]): void {
    if (this.#worker === null) this.#pending.push([data, transfer])
    else this.#worker.postMessage(data, transfer as never)
  }

  addEventListener(type: string, fn: Listener): void {
    this.#listeners.set(type, [...(this.#listeners.get(type) ?? []), fn])
  }

  removeEventListener(type: string, fn: Listener): void {
    this.#listeners.set(type, (this.#listeners.get(type) ?? []).filter((f) => f !== fn))
  }

  terminate(): void {
    this.#terminated = true
    live.delete(this)
    void this.#worker?.terminate()
  }
}

/** Installs the shim as `globalThis.Worker` unless the runtime already has one. Returns whether it installed it. */
export function installWebWorkerShim(): boolean {
  const g = globalThis as { Worker?: unknown }
  if (typeof g.Worker !== "undefined") return false
  g.Worker = WebWorker
  return true
}

/** How many worker threads the shim has started. */
export const shimWorkersStarted = () => started

/** Ends every worker the shim started (the library never does), so the process can exit. */
export async function terminateShimWorkers(): Promise<void> {
  for (const w of [...live]) w.terminate()
}
