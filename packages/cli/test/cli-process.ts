import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

/**
 * The `bdvax` executable as a child process: `node --import tsx packages/cli/src/bin.ts …` from the repository
 * root, so workspace packages resolve to their sources through tsconfig paths (the same code the tests import)
 * and no build is needed. Progress is forced to line mode (stderr is a pipe here anyway).
 */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url))
export const BIN = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

export interface CliRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** True when `killWhen` matched and the process was sent SIGKILL. */
  readonly killed: boolean
}

export interface CliOptions {
  /** Send SIGKILL as soon as stderr matches (progress and stage lines are on stderr). */
  readonly killWhen?: RegExp
  readonly env?: Record<string, string>
  readonly timeoutMs?: number
}

export function runBdvax(args: readonly string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", BIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, BDVAX_PROGRESS: "lines", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    let killed = false
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`bdvax ${args.join(" ")}: no exit within ${options.timeoutMs ?? 120_000} ms\n${stderr}`))
    }, options.timeoutMs ?? 120_000)
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s))
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      stderr += s
      if (!killed && options.killWhen?.test(stderr)) {
        killed = true
        child.kill("SIGKILL")
      }
    })
    child.on("error", reject)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resolvePromise({ code, signal, stdout, stderr, killed })
    })
  })
}
