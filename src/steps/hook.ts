/**
 * The after-load hook: a command and/or a SQL statement run after each delta commits on the
 * replica (refresh a materialised view, notify a service). It runs after the commit, so it can
 * never undo a delta: a failure is logged, load goes on with the next delta, and the run exits 70.
 */
import { spawn } from 'node:child_process';
import type { LoadedConfig } from '../config/load.js';
import type { TargetWriter } from '../db/types.js';
import type { Logger } from '../log.js';

export interface AppliedDelta {
  delta: string;
  fromLogId: string;
  toLogId: string;
  rows: number;
  deletes: number;
  /** Per table: rows upserted and deleted. */
  tables: Record<string, { rows: number; deletes: number }>;
}

/** The environment the hook command sees, and the `{name}` values its SQL may use. */
export function hookValues(job: string, d: AppliedDelta): Record<string, string> {
  return {
    DELTASYNC_JOB: job,
    DELTASYNC_DELTA: d.delta,
    DELTASYNC_FROM_LOGID: d.fromLogId,
    DELTASYNC_LOGID: d.toLogId,
    DELTASYNC_ROWS: String(d.rows),
    DELTASYNC_DELETES: String(d.deletes),
    DELTASYNC_TABLES: JSON.stringify(d.tables),
  };
}

/** `{logId}`, `{fromLogId}`, `{delta}`, `{job}`, `{rows}` in the hook's SQL. Their values are digits and safe names. */
export function hookSql(sql: string, job: string, d: AppliedDelta): string {
  const values: Record<string, string> = {
    job,
    delta: d.delta,
    logId: d.toLogId,
    fromLogId: d.fromLogId,
    rows: String(d.rows),
  };
  return sql.replace(/\{(job|delta|logId|fromLogId|rows)\}/g, (_, name: string) => values[name]!);
}

function runCommand(
  command: string,
  env: Record<string, string>,
  timeoutMs: number,
  log: Logger,
): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    let output = '';
    const keep = (chunk: Buffer) => {
      if (output.length < 4096) output += chunk.toString('utf8');
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => resolve(`cannot run: ${err.message}`));
    child.on('close', (code, signal) => {
      if (output.trim())
        log.info({ hookOutput: output.trim().slice(0, 4096) }, 'after-load hook said');
      if (code === 0) resolve(null);
      else resolve(signal ? `killed by ${signal}` : `exited with ${code}`);
    });
  });
}

/** Runs the hook for one applied delta; returns why it failed, or null when it succeeded. */
export async function runAfterLoad(
  config: LoadedConfig,
  target: TargetWriter,
  applied: AppliedDelta,
  log: Logger,
): Promise<string | null> {
  const hook = config.afterLoad;
  if (!hook) return null;
  if (hook.sql) {
    try {
      await target.execute(hookSql(hook.sql, config.name, applied));
    } catch (err) {
      return `hook SQL failed: ${(err as Error).message.split('\n')[0]}`;
    }
  }
  if (hook.command) {
    const failure = await runCommand(
      hook.command,
      hookValues(config.name, applied),
      hook.timeoutSeconds * 1000,
      log,
    );
    if (failure) return `hook command ${failure}`;
  }
  return null;
}
