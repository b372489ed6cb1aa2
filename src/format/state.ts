/**
 * State files: one small JSON file per job and step (and per destination for copy) holding the
 * last logId that step finished. Written atomically, so a crash leaves the old or the new state.
 * For load, the record inside the target database is the truth; its state file mirrors it for
 * humans and for `status`.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from './atomic-file.js';
import { isLogId } from './logid.js';
import type { Cursor } from './manifest.js';

export interface StepState {
  job: string;
  step: string;
  /** Last logId done, as a decimal string; "0" when the step has never run. */
  logId: string;
  /** ISO time of the last change, or null when never. */
  updatedAt: string | null;
  /** The manifest file of the last delta done, for humans. */
  delta?: string;
  /**
   * extract only: where each table stands (see Cursor). A logid table without one stands at
   * `logId`, which is how a state written before cursors existed carries on.
   */
  cursors?: Record<string, Cursor>;
  /** load only: columns of the deltas the replica lacks and load skips, by table. */
  skippedColumns?: Record<string, string[]>;
  /** load only: the replica this state belongs to (the config's `replica`). */
  replica?: string;
  /** load only: which database that replica is (engine, host, port, database; never a password). */
  target?: string;
}

/**
 * load's step name for a replica: `load` for the default replica (the name earlier versions
 * used, so their state files and locks carry on), `load.<replica>` for any other, so that several
 * replicas of one job loaded from one host never share a state file or a lock.
 */
export function loadStepName(replica: string): string {
  return replica === DEFAULT_REPLICA ? 'load' : `load.${replica}`;
}

/** The replica a load config names when it names none. */
export const DEFAULT_REPLICA = 'default';

/** `extract`, `load`, `load.<replica>`, or `copy.<destination>`. */
export function stateFilePath(stateDir: string, job: string, step: string): string {
  return join(stateDir, `${job}.${step}.state.json`);
}

export async function readState(stateDir: string, job: string, step: string): Promise<StepState> {
  const path = stateFilePath(stateDir, job, step);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { job, step, logId: '0', updatedAt: null };
    }
    throw new ConfigError(`cannot read state file ${path}: ${(err as Error).message}`);
  }
  // JSON.parse may also return null, a number or an array: only an object with a logId will do.
  let parsed: Partial<StepState> | null;
  try {
    parsed = JSON.parse(text) as Partial<StepState> | null;
  } catch {
    throw new ConfigError(`state file ${path} is not valid JSON`, {
      hint: 'restore it, or write {"logId":"<last done logId>"} into it',
    });
  }
  if (typeof parsed?.logId !== 'string' || !isLogId(parsed.logId)) {
    throw new ConfigError(`state file ${path}: logId must be a decimal string`);
  }
  return {
    job,
    step,
    logId: parsed.logId,
    updatedAt: parsed.updatedAt ?? null,
    delta: parsed.delta,
    ...(parsed.cursors && typeof parsed.cursors === 'object' ? { cursors: parsed.cursors } : {}),
    ...(parsed.skippedColumns && typeof parsed.skippedColumns === 'object'
      ? { skippedColumns: parsed.skippedColumns }
      : {}),
    ...(typeof parsed.replica === 'string' ? { replica: parsed.replica } : {}),
    ...(typeof parsed.target === 'string' ? { target: parsed.target } : {}),
  };
}

export async function writeState(stateDir: string, state: StepState): Promise<void> {
  await writeFileAtomic(
    stateFilePath(stateDir, state.job, state.step),
    `${JSON.stringify(state, null, 2)}\n`,
  );
}

/**
 * Makes sure the state directory exists and is writable, before a step does any work: finding
 * out after a delta was applied would leave the state file behind the database.
 */
export async function ensureStateDir(stateDir: string): Promise<void> {
  try {
    await makeDirectories(stateDir);
    await writeFileAtomic(join(stateDir, '.write-test'), '');
  } catch (err) {
    throw new ConfigError(
      `state directory ${stateDir} is not writable: ${(err as Error).message}`,
      {
        hint: 'create it for this user or set stateDir in the config',
      },
    );
  }
}

/**
 * `mkdir -p`, one level at a time. Node's own `recursive: true` never returns for a path under
 * /proc or /sys (it retries the ENOENT for ever), and a stateDir mistyped there must fail, not hang.
 */
async function makeDirectories(path: string): Promise<void> {
  try {
    await mkdir(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(path) === path) throw err;
    await makeDirectories(dirname(path));
    await mkdir(path).catch((again: NodeJS.ErrnoException) => {
      if (again.code !== 'EEXIST') throw again;
    });
  }
}
