import { writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { ModelScores } from "./metrics.js"

/** One line of the defense table: a model the defender ended up with, and what it cost. */
export interface DefenseRow extends ModelScores {
  readonly defense: string
  readonly mode: "full" | "adapter"
  /** Wall time of the defense itself (surgery + finetune; for the signature rows also building the signature). */
  readonly seconds: number
  readonly note?: string
}

const pct = (x: number) => `${(100 * x).toFixed(0)}%`

/** A GitHub-flavoured markdown table (header, alignment row, body). */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[], rightAligned: readonly number[] = []): string {
  const align = header.map((_, i) => (rightAligned.includes(i) ? "---:" : "---"))
  return [header, align, ...rows].map((cells) => `| ${cells.join(" | ")} |`).join("\n")
}

export function defenseTable(rows: readonly DefenseRow[]): string {
  return markdownTable(
    ["defense", "mode", "ASR", "false-trigger", "clean acc", "wall time", "note"],
    rows.map((r) => [r.defense, r.mode, pct(r.asr), pct(r.falseTrigger), pct(r.cleanAcc), `${r.seconds.toFixed(1)} s`, r.note ?? ""]),
    [2, 3, 4, 5],
  )
}

export interface AblationRow {
  readonly ablation: string
  readonly kept: string
  readonly asr: number
  readonly falseTrigger: number
}

export function ablationTable(rows: readonly AblationRow[]): string {
  return markdownTable(
    ["ablation", "updates kept (θ_0 + mask ⊙ (θ_b − θ_0))", "ASR", "false-trigger"],
    rows.map((r) => [r.ablation, r.kept, pct(r.asr), pct(r.falseTrigger)]),
    [2, 3],
  )
}

/** Write a report under the OS temp folder and return its path. */
export async function writeReport(name: string, text: string): Promise<string> {
  const path = join(tmpdir(), name)
  await writeFile(path, text)
  return path
}
