import type { LossCurve } from "./data.js"

/**
 * A standalone SVG line chart of training losses per optimizer step, one line per training run, with axes,
 * ticks and a legend. Steps are normalised to each run's length when runs differ in length, so curves of
 * different runs share the x axis as "fraction of training".
 */
const PALETTE = ["#2e86c1", "#c0392b", "#27ae60", "#e67e22", "#8e44ad", "#7f8c8d"]
const xml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

function niceMax(x: number): number {
  if (!(x > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(x))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p
  return 10 * p
}

export function lossChartSvg(curves: readonly LossCurve[], options: { width?: number; height?: number; title?: string } = {}): string {
  const width = options.width ?? 720
  const height = options.height ?? 360
  const m = { left: 64, right: 20, top: 56, bottom: 48 }
  const pw = width - m.left - m.right
  const ph = height - m.top - m.bottom
  const finite = curves.flatMap((c) => c.losses.filter(Number.isFinite))
  const yMax = niceMax(Math.max(0, ...finite))
  const sameLength = curves.every((c) => c.losses.length === curves[0]?.losses.length)
  const xMax = sameLength ? Math.max(1, (curves[0]?.losses.length ?? 1)) : 1
  const x = (i: number, n: number) => m.left + (sameLength ? i / xMax : n <= 1 ? 0 : (i - 1) / (n - 1)) * pw
  const y = (v: number) => m.top + ph - (Math.min(Math.max(v, 0), yMax) / yMax) * ph
  const parts: string[] = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${xml(options.title ?? "Training loss")}</text>`,
  ]
  for (let k = 0; k <= 5; k++) {
    const v = (yMax * k) / 5
    parts.push(`<line x1="${m.left}" y1="${y(v).toFixed(1)}" x2="${m.left + pw}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`)
    parts.push(`<text x="${m.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${Number(v.toPrecision(3))}</text>`)
  }
  parts.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="#333"/>`)
  parts.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="#333"/>`)
  for (let k = 0; k <= 4; k++) {
    const label = sameLength ? String(Math.round((xMax * k) / 4)) : `${25 * k}%`
    const at = sameLength ? Math.round((xMax * k) / 4) / xMax : k / 4
    parts.push(`<text x="${(m.left + at * pw).toFixed(1)}" y="${m.top + ph + 16}" text-anchor="middle" font-size="11">${label}</text>`)
  }
  parts.push(`<text x="${m.left + pw / 2}" y="${height - 10}" text-anchor="middle" font-size="12">${sameLength ? "optimizer step" : "fraction of training"}</text>`)
  parts.push(`<text x="0" y="0" text-anchor="middle" font-size="12" transform="translate(16 ${m.top + ph / 2}) rotate(-90)">loss (cross-entropy)</text>`)
  curves.forEach((c, ci) => {
    const color = PALETTE[ci % PALETTE.length]
    const points = c.losses
      .map((v, i) => (Number.isFinite(v) ? `${x(i + 1, c.losses.length).toFixed(1)},${y(v).toFixed(1)}` : null))
      .filter((p) => p !== null)
    if (points.length > 0) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points.join(" ")}"><title>${xml(c.name)}</title></polyline>`)
    const lx = m.left + 10 + ci * 160
    parts.push(`<rect x="${lx}" y="34" width="14" height="4" fill="${color}"/><text x="${lx + 20}" y="40" font-size="12">${xml(c.name)}</text>`)
  })
  if (curves.length === 0) parts.push(`<text x="${m.left + pw / 2}" y="${m.top + ph / 2}" text-anchor="middle" font-size="12" fill="#888">no training in this run</text>`)
  parts.push(`</svg>`, "")
  return parts.join("\n")
}
