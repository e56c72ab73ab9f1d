/**
 * Wall time of a stage's work, recorded in its result as `wallSeconds`: what the condition cost to compute. It is
 * a measurement, not part of the artifact's identity (stage hashes never include it), so a resumed run reports the
 * time the reused stage took when it ran. Rounded to 10 ms.
 */
export function stopwatch(): () => number {
  const t0 = performance.now()
  return () => Math.round((performance.now() - t0) / 10) / 100
}
