import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { join } from "node:path"

/** The repo's Python (the .venv that scripts/setup-python.sh + tests/parity/requirements.txt make). */
export const REPO = join(import.meta.dirname, "../../..")
export const PYTHON = existsSync(join(REPO, ".venv/bin/python")) ? join(REPO, ".venv/bin/python") : "python3"

export function runPython(args: string[], timeoutMs = 600_000): { status: number | null; output: string } {
  const r = spawnSync(PYTHON, args, { cwd: REPO, encoding: "utf8", timeout: timeoutMs, env: { ...process.env, PYTHONUNBUFFERED: "1" } })
  return { status: r.status, output: `${r.stdout ?? ""}${r.stderr ?? ""}` }
}
