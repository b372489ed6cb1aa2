/**
 * Durations on the command line: a number and a unit, `500ms`, `2s`, `1.5m`, `2h`. One reading
 * for every flag that takes one (`run --every`), so the same text means the same everywhere.
 */

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Milliseconds for `text`, or undefined when it is not a duration (a bare number is not one). */
export function parseDurationMs(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** `1500` → `1.5s`, `120000` → `2m`: how messages show a duration. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000 || ms % 60_000 !== 0) return `${Math.round(ms / 100) / 10}s`;
  if (ms < 3_600_000 || ms % 3_600_000 !== 0) return `${ms / 60_000}m`;
  return `${ms / 3_600_000}h`;
}
