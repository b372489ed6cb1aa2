/** What every step shares: its context, its lock, and how file-system failures are named. */
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { DbConfig } from '../db/types.js';
import { ConfigError } from '../errors.js';
import { sweepTemporaryFiles } from '../format/atomic-file.js';
import { acquireLock } from '../format/lock.js';
import {
  ensureStateDir,
  loadStepName,
  readState,
  stateFilePath,
  writeState,
  type StepState,
} from '../format/state.js';
import type { Logger } from '../log.js';

export interface StepContext {
  config: LoadedConfig;
  log: Logger;
  /** A live progress line, set only when a person watches a terminal (see cli/progress.ts). */
  progress?: Progress;
}

/** What a step reports as it goes; every call is cheap (the line is drawn on a timer). */
export interface Progress {
  /**
   * A table starts; `total` is its row count when known (load knows it from the manifest).
   * `done`, when given, is read at each redraw instead of counting `rows` calls.
   */
  table(name: string, total?: number, done?: () => number): void;
  /** `count` more rows of the current table are done. */
  rows(count: number): void;
  /** The step is over: the line goes away. */
  done(): void;
}

/** `rows` as they are, counted on `progress` as `table` when someone watches (see Progress). */
export function countedRows<T>(
  rows: AsyncIterable<T>,
  table: { name: string; rows?: number },
  progress: Progress | undefined,
): AsyncIterable<T> {
  if (!progress) return rows;
  progress.table(table.name, table.rows);
  return (async function* () {
    for await (const row of rows) {
      yield row;
      progress.rows(1);
    }
  })();
}

/** COPY text as it is, its lines counted on `progress` as `table` when someone watches. */
export function countedLines(
  data: AsyncIterable<Buffer>,
  table: { name: string; rows?: number },
  progress: Progress | undefined,
): AsyncIterable<Buffer> {
  if (!progress) return data;
  progress.table(table.name, table.rows);
  return (async function* () {
    for await (const chunk of data) {
      yield chunk;
      let lines = 0;
      for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) lines++;
      progress.rows(lines);
    }
  })();
}

/**
 * Runs `fn` holding the job's lock for `step`. The state directory is checked first: finding it
 * unwritable after the work would leave the state behind the data.
 */
export async function withStepLock<T>(
  config: LoadedConfig,
  step: string,
  fn: () => Promise<T>,
): Promise<T> {
  await ensureStateDir(config.stateDir);
  const lock = await acquireLock(join(config.stateDir, `${config.name}.${step}.lock`));
  try {
    // State writes of a process killed mid-write leave temporary files; only dead writers' go.
    await sweepTemporaryFiles(config.stateDir);
    return await fn();
  } finally {
    await lock.release();
  }
}

/**
 * Names a file-system failure for the operator: a full disk or a missing mount is a destination
 * that cannot be written (69), not a bug. One rule for steps and stores.
 */
export { fsError as fileError } from '../store/common.js';

export function elapsedSeconds(startNs: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - startNs) / 1e6) / 1000;
}

/**
 * Which database a replica is, for its state file: engine, host, port and database (or the SQLite
 * file), never a user or password. Two configs that load the same job into different databases
 * get different identities, so one can never quietly take over the other's state.
 */
export function replicaIdentity(db: DbConfig): string {
  const engine = db.client.toLowerCase();
  const c = db.connection;
  const url = typeof c === 'string' ? c : (c.uri ?? c.connectionString);
  if (typeof url === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    try {
      const u = new URL(url);
      return `${engine}://${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
    } catch {
      return `${engine}:${url.replace(/\/\/[^@/]*@/, '//')}`;
    }
  }
  if (typeof c === 'string') return `${engine}:${c.replace(/password=[^;]*/gi, '')}`;
  const o = c as Record<string, unknown>;
  if (typeof o.filename === 'string') return `${engine}:${o.filename}`;
  const host = o.socketPath ?? o.host ?? o.server ?? 'localhost';
  const port = o.port === undefined ? '' : `:${String(o.port)}`;
  return `${engine}://${String(host)}${port}/${String(o.database ?? '')}`;
}

/** load's lock and state file name for the config's replica (see loadStepName). */
export function loadStep(config: LoadedConfig): string {
  return loadStepName(config.replica);
}

/**
 * Reads load's state file for the config's replica, and refuses one written for another replica
 * or another database: two replicas sharing a state file would overwrite each other's logId run
 * after run. A state file from before replicas were named carries neither and is adopted.
 */
export async function readLoadState(config: LoadedConfig): Promise<StepState> {
  const step = loadStep(config);
  const state = await readState(config.stateDir, config.name, step);
  const identity = replicaIdentity(config.target!);
  const path = stateFilePath(config.stateDir, config.name, step);
  if (state.replica !== undefined && state.replica !== config.replica) {
    throw new ConfigError(
      `state file ${path} belongs to replica '${state.replica}', not '${config.replica}'`,
      { hint: 'give each replica of the job its own replica: name in its load config' },
    );
  }
  if (state.target !== undefined && state.target !== identity) {
    throw new ConfigError(
      `state file ${path} belongs to the replica at ${state.target}, but this config loads ${identity}`,
      {
        hint: "give each replica its own replica: NAME in its load config; if it is the same database reached another way, delete the state file (the replica's deltasync_applied is the truth)",
      },
    );
  }
  return state;
}

/** Writes load's state file for the config's replica, stamped with the replica and its identity. */
export async function writeLoadState(
  config: LoadedConfig,
  state: Omit<StepState, 'job' | 'step'>,
): Promise<void> {
  await writeState(config.stateDir, {
    ...state,
    job: config.name,
    step: loadStep(config),
    replica: config.replica,
    target: replicaIdentity(config.target!),
  });
}
