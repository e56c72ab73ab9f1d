import type { ConditionSummary } from "./data.js"

/**
 * A standalone SVG of the summary: per condition, the ASR on triggered prompts and the clean exact match, as two
 * bars, with the attacked model's ASR drawn across the chart as a dashed line ("before"), so every defense's
 * bars read as "after" against it. Values are percentages; a condition without a value shows "n/a".
 */
const COLORS = { asr: "#c0392b", clean: "#27ae60", before: "#7b241c" } as const
const xml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
const clip = (s: string, n = 42) => (s.length > n ? `${s.slice(0, n - 1)}…` : s)

export function conditionChartSvg(rows: readonly ConditionSummary[], options: { readonly title?: string } = {}): string {
  const n = Math.max(1, rows.length)
  const longest = Math.max(8, ...rows.map((r) => clip(r.name).length))
  const m = { left: 64, right: 24, top: 72, bottom: Math.ceil(24 + 0.62 * 6.4 * longest) }
  const slot = 64
  const title = options.title ?? "ASR and clean exact match per condition"
  // wide enough for the title (16 px bold: up to ~10 px a character) and the legend
  const pw = Math.max(690, n * slot, Math.ceil(10.2 * title.length) - m.left - m.right + 24)
  const ph = 300
  const width = m.left + pw + m.right
  const height = m.top + ph + m.bottom
  const yBase = m.top + ph
  const y = (pct: number) => yBase - (Math.max(0, Math.min(100, pct)) / 100) * ph
  const out: string[] = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${xml(title)}</text>`,
  ]
  // legend
  const legend: Array<[string, string, boolean]> = [
    ["ASR (triggered prompts)", COLORS.asr, false],
    ["clean exact match", COLORS.clean, false],
    ["ASR before defense (attacked model)", COLORS.before, true],
  ]
  legend.forEach(([label, color, dashed], i) => {
    const lx = m.left + i * 230
    out.push(
      dashed
        ? `<line x1="${lx}" y1="44" x2="${lx + 18}" y2="44" stroke="${color}" stroke-width="2" stroke-dasharray="5,3"/>`
        : `<rect x="${lx}" y="38" width="14" height="12" fill="${color}"/>`,
      `<text x="${lx + 22}" y="48" font-size="12">${xml(label)}</text>`,
    )
  })
  for (let t = 0; t <= 100; t += 20) {
    out.push(`<line x1="${m.left}" y1="${y(t)}" x2="${m.left + pw}" y2="${y(t)}" stroke="#ddd"/>`)
    out.push(`<text x="${m.left - 6}" y="${y(t) + 4}" text-anchor="end" font-size="11">${t}</text>`)
  }
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${yBase}" stroke="#333"/>`)
  out.push(`<line x1="${m.left}" y1="${yBase}" x2="${m.left + pw}" y2="${yBase}" stroke="#333"/>`)
  out.push(`<text x="0" y="0" text-anchor="middle" font-size="12" transform="translate(18 ${m.top + ph / 2}) rotate(-90)">percent</text>`)
  const gw = pw / n
  const bw = Math.min(24, gw * 0.36)
  rows.forEach((r, i) => {
    const cx = m.left + i * gw + gw / 2
    const bars: Array<[number | null, string, string]> = [
      [r.asr, COLORS.asr, "ASR"],
      [r.cleanAccuracy, COLORS.clean, "clean exact match"],
    ]
    bars.forEach(([v, color, what], k) => {
      const bx = cx - bw + k * bw
      if (v === null || !Number.isFinite(v)) {
        out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${yBase - 4}" text-anchor="middle" font-size="9" fill="#888">n/a</text>`)
        return
      }
      const pct = 100 * v
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${y(pct).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(yBase - y(pct)).toFixed(1)}" fill="${color}"><title>${xml(`${r.name} · ${what}: ${pct.toFixed(1)}%`)}</title></rect>`,
        `<text x="${(bx + (bw - 2) / 2).toFixed(1)}" y="${(y(pct) - 3).toFixed(1)}" text-anchor="middle" font-size="9">${pct.toFixed(0)}</text>`,
      )
    })
    out.push(`<text x="0" y="0" text-anchor="end" font-size="11" transform="translate(${cx.toFixed(1)} ${yBase + 14}) rotate(-35)">${xml(clip(r.name))}</text>`)
  })
  const attacked = rows.filter((r) => r.role === "attacked" && r.asr !== null)
  for (const a of attacked) {
    const ay = y(100 * (a.asr as number))
    out.push(
      `<line x1="${m.left}" y1="${ay.toFixed(1)}" x2="${m.left + pw}" y2="${ay.toFixed(1)}" stroke="${COLORS.before}" stroke-width="1.5" stroke-dasharray="6,4"><title>${xml(`${a.name}: ASR ${(100 * (a.asr as number)).toFixed(1)}%`)}</title></line>`,
    )
  }
  if (rows.length === 0) out.push(`<text x="${m.left + pw / 2}" y="${m.top + ph / 2}" text-anchor="middle" font-size="12" fill="#888">no conditions</text>`)
  out.push(`</svg>`, "")
  return out.join("\n")
}
