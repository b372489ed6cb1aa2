/**
 * Runs one deltasync bin (`deltasync-extract`, `-copy` or `-load`) the way cron does, and reads
 * what it reports: the JSON `summary` line its logger prints last when stdout is not a terminal,
 * and the peak RSS measured from outside by GNU time (the summary's own `maxRssMb` when GNU time
 * is missing).
 */
import { join } from 'node:path';
import { GNU_TIME, HAVE_GNU_TIME, run, tail } from './process.js';

export type StepName = 'extract' | 'copy' | 'load';

/** The fields of a bin's summary line that the bench reads. */
export interface StepSummary {
  step?: string;
  delta?: string | null;
  deltas?: number;
  tables?: number;
  rows?: number;
  bytes?: number;
  seconds?: number;
  maxRssMb?: number;
}

export interface StepResult {
  step: StepName;
  /** Wall-clock seconds from spawn to exit, Node start-up included. */
  seconds: number;
  /** Peak resident set size of the process, in MiB. */
  peakRssMb: number | null;
  /**
   * CPU seconds (user + system) of the bin's own process: what Node spent, as against the
   * database servers' share of the wall clock. Null without GNU time.
   */
  cpuSeconds: number | null;
  summary: StepSummary;
}

/** A marker of our own, so GNU time's line cannot be confused with the bin's stderr. */
const RSS_MARK = 'deltasync-bench-maxrss-kib=';

function parseSummary(stdout: string): StepSummary | null {
  let summary: StepSummary | null = null;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const record = JSON.parse(line) as StepSummary & { msg?: string };
      if (record.msg === 'summary') {
        // Only the contract's fields: level, time, pid and hostname are the logger's own.
        const { step, delta, deltas, tables, rows, bytes, seconds, maxRssMb } = record;
        summary = { step, delta, deltas, tables, rows, bytes, seconds, maxRssMb };
      }
    } catch {
      // Not one of the logger's lines; ignore it.
    }
  }
  return summary;
}

/** GNU time's line: `<mark><max RSS KiB> <user s> <system s>`. */
function parseTime(stderr: string): { kib: number; cpu: number } | null {
  const at = stderr.lastIndexOf(RSS_MARK);
  if (at < 0) return null;
  const [kib, user, system] = stderr
    .slice(at + RSS_MARK.length)
    .trim()
    .split(/\s+/)
    .map(Number);
  if (!Number.isFinite(kib) || !Number.isFinite(user) || !Number.isFinite(system)) return null;
  return { kib: kib!, cpu: user! + system! };
}

/** Runs `bin/deltasync-<step> -c <configFile>`; throws with the bin's own words when it fails. */
export async function runStep(
  repoRoot: string,
  step: StepName,
  configFile: string,
): Promise<StepResult> {
  const bin = join(repoRoot, 'bin', `deltasync-${step}`);
  const [command, args] = HAVE_GNU_TIME
    ? [GNU_TIME, ['-f', `${RSS_MARK}%M %U %S`, bin, '-c', configFile]]
    : [bin, ['-c', configFile]];
  // No TTY and no NO_COLOR games: the bin must print JSON lines because stdout is a pipe.
  const result = await run(command, args, { cwd: repoRoot });
  if (result.code !== 0) {
    const said = tail(result.stderr.split(RSS_MARK)[0] ?? '') || tail(result.stdout);
    throw new Error(`deltasync-${step} exited with ${result.code}: ${said}`);
  }
  const summary = parseSummary(result.stdout);
  if (!summary) {
    throw new Error(
      `deltasync-${step} printed no summary line; stdout ended: ${tail(result.stdout)}`,
    );
  }
  const time = parseTime(result.stderr);
  return {
    step,
    seconds: result.seconds,
    peakRssMb: time ? time.kib / 1024 : (summary.maxRssMb ?? null),
    cpuSeconds: time?.cpu ?? null,
    summary,
  };
}
