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

function parseRssKib(stderr: string): number | null {
  const at = stderr.lastIndexOf(RSS_MARK);
  if (at < 0) return null;
  const kib = Number.parseInt(stderr.slice(at + RSS_MARK.length), 10);
  return Number.isFinite(kib) ? kib : null;
}

/** Runs `bin/deltasync-<step> -c <configFile>`; throws with the bin's own words when it fails. */
export async function runStep(
  repoRoot: string,
  step: StepName,
  configFile: string,
): Promise<StepResult> {
  const bin = join(repoRoot, 'bin', `deltasync-${step}`);
  const [command, args] = HAVE_GNU_TIME
    ? [GNU_TIME, ['-f', `${RSS_MARK}%M`, bin, '-c', configFile]]
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
  const kib = parseRssKib(result.stderr);
  return {
    step,
    seconds: result.seconds,
    peakRssMb: kib !== null ? kib / 1024 : (summary.maxRssMb ?? null),
    summary,
  };
}
