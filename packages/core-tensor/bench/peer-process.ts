import { spawn } from "node:child_process"
import { errText } from "./shared.js"

/**
 * A benchmark peer (PyTorch, jax-js, tfjs) runs in its own process so that a crash or a hang cannot take the
 * bench down. Used by bench:tensor and bench:llm alike.
 */
export interface ChildOutput {
  lastJson: unknown
  stderrTail: string[]
  code: number | null
  signal: NodeJS.Signals | null
  timedOut: boolean
  spawnError?: string
}

export interface PeerProcess {
  readonly label: string
  readonly command: string
  readonly args: readonly string[]
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
  readonly timeoutMs: number
  /** Receives "<label>: <message>" for every "[peer] " line the process writes to stderr. */
  readonly progress: (message: string) => void
}

/** Calls onLine for every line of the stream (split at \n or \r, so carriage-return progress lines count too). */
function eachLine(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = ""
  stream.setEncoding("utf8")
  stream.on("data", (chunk: string) => {
    buf += chunk
    let i: number
    while ((i = buf.search(/[\n\r]/)) >= 0) {
      onLine(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  stream.on("end", () => {
    if (buf !== "") onLine(buf)
  })
}

/**
 * Runs a peer process. Each stdout line is a JSON snapshot of its results so far (the last one wins); stderr lines
 * that start with "[peer] " are forwarded as progress, the others kept (last 12, clipped) to explain a failure.
 */
export function runPeerProcess(p: PeerProcess): Promise<ChildOutput> {
  return new Promise((resolve) => {
    const out: ChildOutput = { lastJson: undefined, stderrTail: [], code: null, signal: null, timedOut: false }
    let child: ReturnType<typeof spawn>
    try {
      child = spawn(p.command, [...p.args], { cwd: p.cwd, env: p.env, stdio: ["ignore", "pipe", "pipe"] })
    } catch (e) {
      out.spawnError = errText(e)
      resolve(out)
      return
    }
    eachLine(child.stdout!, (line) => {
      if (!line.startsWith("{")) return
      try {
        out.lastJson = JSON.parse(line)
      } catch {
        // a line cut short by a crash: keep the previous snapshot
      }
    })
    eachLine(child.stderr!, (line) => {
      if (line.startsWith("[peer] ")) p.progress(`${p.label}: ${line.slice(7)}`)
      else if (line.trim() !== "") {
        out.stderrTail.push(line.length > 300 ? `${line.slice(0, 300)}…` : line)
        if (out.stderrTail.length > 12) out.stderrTail.shift()
      }
    })
    const timer = setTimeout(() => {
      out.timedOut = true
      child.kill("SIGKILL")
    }, p.timeoutMs)
    child.on("error", (e) => {
      out.spawnError = errText(e)
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      out.code = code
      out.signal = signal
      resolve(out)
    })
  })
}

/** Why a peer process ended badly, or undefined when it exited cleanly. */
export function childTrouble(c: ChildOutput, timeoutMs: number): string | undefined {
  if (c.spawnError !== undefined) return `could not start: ${c.spawnError}`
  if (c.timedOut) return `killed after ${timeoutMs / 1000} s`
  if (c.code === 0) return undefined
  const why = c.stderrTail.filter((l) => /error|abort|fail|killed|memory/i.test(l)).slice(-2).join(" ") || c.stderrTail.slice(-2).join(" ")
  return `exited with ${c.signal ?? `status ${c.code}`}${why !== "" ? `: ${why.replace(/\s+/g, " ").slice(0, 300)}` : ""}`
}
