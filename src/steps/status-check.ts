/**
 * `status --check`: the job's health as one line and a Nagios/Icinga plugin exit code, so it can
 * be dropped into existing monitoring. The rules (README "### Monitoring"):
 * - CRITICAL (2): a step's last run failed, a gap stops load, or a lag is above 2 × max-lag;
 * - UNKNOWN (3): status could not read a store, the replica or a run record it needs;
 * - WARNING (1): a lag above max-lag, or a lag that cannot be told (nothing run or applied yet);
 * - OK (0) otherwise.
 * CRITICAL wins over UNKNOWN, which wins over WARNING: a failure status did see is never hidden
 * by one it could not look at.
 */
import type { JobStatus } from './status.js';

export const CheckCode = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 } as const;
export type CheckCodeValue = (typeof CheckCode)[keyof typeof CheckCode];
const NAMES = ['OK', 'WARNING', 'CRITICAL', 'UNKNOWN'] as const;

/** `--max-lag` when none is given: three 5-minute cron cycles. */
export const DEFAULT_MAX_LAG = '15m';
export const DEFAULT_MAX_LAG_SECONDS = 15 * 60;

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90s`, `15m`, `2h`, `1d` (or bare seconds) as seconds; null when it is none of those. */
export function parseDuration(text: string): number | null {
  const m = /^([0-9]+)([smhd]?)$/.exec(text.trim());
  if (!m) return null;
  const seconds = Number(m[1]) * UNITS[m[2] || 's']!;
  return seconds > 0 && Number.isSafeInteger(seconds) ? seconds : null;
}

/** A duration for humans: `42s`, `3m12s`, `2h05m`, `3d04h`. */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400)
    return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor(s / 3600) % 24).padStart(2, '0')}h`;
}

export interface CheckResult {
  code: CheckCodeValue;
  /** The one line a monitoring system shows: state, reasons, then perfdata after `|`. */
  line: string;
}

export function checkStatus(s: JobStatus, maxLagSeconds = DEFAULT_MAX_LAG_SECONDS): CheckResult {
  const critical: string[] = [];
  const unknown = (s.problems ?? []).map((p) => `cannot read ${p}`);
  const warning: string[] = [];
  let lag: number | undefined;
  let waiting = 0;
  for (const st of s.steps) {
    if (st.error) critical.push(`${st.step} failed (exit ${st.lastRun?.exitCode}): ${st.error}`);
    if (st.gaps?.length) critical.push(`${st.step}: gap ${st.gaps[0]}`);
    waiting += st.waiting ?? 0;
    if (st.lagSeconds === undefined) {
      warning.push(`${st.step}: lag unknown${st.note ? ` (${st.note})` : ''}`);
      continue;
    }
    lag = Math.max(lag ?? 0, st.lagSeconds);
    // Without heartbeats a replica with nothing waiting may only be looking at an idle source.
    const note =
      st.note ??
      (s.heartbeatSeconds === undefined && st.step.startsWith('load') && st.waiting === 0
        ? 'nothing waiting: the source may be idle; delta.heartbeatSeconds tells idle from stalled'
        : undefined);
    const what = `${st.step} lag ${formatDuration(st.lagSeconds)}${note ? ` (${note})` : ''}`;
    if (st.lagSeconds > 2 * maxLagSeconds)
      critical.push(`${what} > 2 × max-lag ${formatDuration(maxLagSeconds)}`);
    else if (st.lagSeconds > maxLagSeconds)
      warning.push(`${what} > max-lag ${formatDuration(maxLagSeconds)}`);
  }
  for (const r of s.replicas ?? []) {
    if (r.behindSeconds === undefined) continue;
    lag = Math.max(lag ?? 0, r.behindSeconds);
    const what = `replica ${r.replica} behind by ${formatDuration(r.behindSeconds)}`;
    if (r.behindSeconds > 2 * maxLagSeconds) critical.push(what);
    else if (r.behindSeconds > maxLagSeconds) warning.push(what);
  }
  const code =
    critical.length > 0
      ? CheckCode.CRITICAL
      : unknown.length > 0
        ? CheckCode.UNKNOWN
        : warning.length > 0
          ? CheckCode.WARNING
          : CheckCode.OK;
  const reasons = [...critical, ...unknown, ...warning];
  const summary =
    reasons.length > 0
      ? reasons.join('; ')
      : `lag ${lag === undefined ? 'unknown' : formatDuration(lag)}, ${waiting} waiting`;
  const perf = [
    ...(lag === undefined ? [] : [`lag=${lag}s;${maxLagSeconds};${2 * maxLagSeconds};0`]),
    `waiting=${waiting};;;0`,
  ];
  // Monitoring systems read one line: no newline may come from a message.
  const text = `DELTASYNC ${NAMES[code]} - job ${s.job}: ${summary}`.replace(/[\r\n|]+/g, ' ');
  return { code, line: `${text} | ${perf.join(' ')}` };
}

/** The check's line when status itself could not run (no config, say): UNKNOWN. */
export function unknownLine(message: string): string {
  return `DELTASYNC UNKNOWN - ${message}`.replace(/[\r\n|]+/g, ' ');
}
