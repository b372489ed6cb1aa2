/** What every step shares: its context, its lock, and how file-system failures are named. */
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { DeltasyncError, UnavailableError } from '../errors.js';
import { sweepTemporaryFiles } from '../format/atomic-file.js';
import { acquireLock } from '../format/lock.js';
import { ensureStateDir } from '../format/state.js';
import type { Logger } from '../log.js';

export interface StepContext {
  config: LoadedConfig;
  log: Logger;
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

const UNAVAILABLE_CODES = new Set([
  'ENOSPC',
  'EDQUOT',
  'EACCES',
  'EPERM',
  'EROFS',
  'ENOENT',
  'EIO',
  'ENOTDIR',
  'EFBIG',
]);

/**
 * Names a file-system failure for the operator: a full disk or a missing mount is a destination
 * that cannot be written (69), not a bug. Our own errors pass through.
 */
export function fileError(err: unknown, what: string): unknown {
  if (err instanceof DeltasyncError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code && UNAVAILABLE_CODES.has(code)) {
    const hint =
      code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG'
        ? 'free some space (or raise the limit) and run again; nothing was published'
        : 'check that the directory exists, is mounted and is writable by this user';
    return new UnavailableError(`${what}: ${(err as Error).message}`, { hint, cause: err });
  }
  return err;
}

export function elapsedSeconds(startNs: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - startNs) / 1e6) / 1000;
}
