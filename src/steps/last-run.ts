/**
 * Run records: every run of a step leaves `<job>.<step>.last-run.json` in the state directory
 * (`<step>` as in the state files: `load.<replica>` for a named replica), failures included, so
 * that `status` and monitoring can tell "ran and failed" from "did not run" from "ran, nothing to
 * do". The record also carries the last *successful* run, so one failure does not hide when the
 * step last worked. Written atomically; a reader sees the old record or the new one.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../format/atomic-file.js';

/** What one destination of a copy run did (copy handles every destination in one run). */
export interface DestinationRun {
  name: string;
  deltas: number;
  rows: number;
  bytes: number;
}

/** One run of a step, as it ended. */
export interface RunOutcome {
  /** ISO 8601. */
  started: string;
  finished: string;
  /** The process's exit code for this step (0 done; see the README's exit code table). */
  exitCode: number;
  /** One line: what was done, or what went wrong and what to do. */
  message: string;
  /** Deltas written, copied or applied. */
  deltas: number;
  rows: number;
  bytes: number;
  destinations?: DestinationRun[];
}

export interface LastRun extends RunOutcome {
  job: string;
  step: string;
  /** The last run that exited 0: this one, an earlier one, or null when none ever did. */
  lastSuccess: RunOutcome | null;
}

export function lastRunPath(stateDir: string, job: string, step: string): string {
  return join(stateDir, `${job}.${step}.last-run.json`);
}

/** The step's record, or null when it never ran (or the record cannot be read as one). */
export async function readLastRun(
  stateDir: string,
  job: string,
  step: string,
): Promise<LastRun | null> {
  let text: string;
  try {
    text = await readFile(lastRunPath(stateDir, job, step), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const r = JSON.parse(text) as Partial<LastRun> | null;
    // A record is information for humans and monitoring: a damaged one is treated as absent
    // (the next run rewrites it) rather than stopping a step or status.
    if (typeof r?.finished !== 'string' || typeof r.exitCode !== 'number') return null;
    return { ...r, lastSuccess: r.lastSuccess ?? null } as LastRun;
  } catch {
    return null;
  }
}

/**
 * Writes the step's record for a run that ended with `outcome`, keeping the previous record's
 * last success when this run failed. Returns the record written.
 */
export async function writeLastRun(
  stateDir: string,
  job: string,
  step: string,
  outcome: RunOutcome,
): Promise<LastRun> {
  const previous = outcome.exitCode === 0 ? null : await readLastRun(stateDir, job, step);
  const record: LastRun = {
    job,
    step,
    ...outcome,
    lastSuccess: outcome.exitCode === 0 ? outcome : (previous?.lastSuccess ?? null),
  };
  await writeFileAtomic(lastRunPath(stateDir, job, step), `${JSON.stringify(record, null, 2)}\n`);
  return record;
}
