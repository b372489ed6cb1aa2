/**
 * Single-instance locks. Cron starts each step every few minutes; a run that finds the previous
 * one still going must leave at once. A lock is a file created with O_EXCL holding the owner's
 * pid, its process start time and host. A lock whose owner is gone (killed, crashed, rebooted)
 * is stale and is taken over; the start time guards against a new process that reused the pid.
 *
 * Taking over a stale lock is itself serialised by a short-lived second lock (`<lock>.takeover`),
 * so two runs that find the same stale lock cannot both win.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { LockHeldError } from '../errors.js';

interface LockOwner {
  pid: number;
  /** Process start time in clock ticks since boot (Linux /proc/<pid>/stat field 22), if known. */
  startTime: string | null;
  host: string;
  since: string;
}

/** A takeover lock older than this was left by a process killed mid-takeover. */
const TAKEOVER_STALE_MS = 30_000;

function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: fields restart after ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function isAlive(owner: LockOwner): boolean {
  // Another host's process cannot be checked from here: assume it is alive rather than steal.
  if (owner.host !== hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  if (owner.startTime === null) return true;
  const current = processStartTime(owner.pid);
  return current === null || current === owner.startTime;
}

function me(): LockOwner {
  return {
    pid: process.pid,
    startTime: processStartTime(process.pid),
    host: hostname(),
    since: new Date().toISOString(),
  };
}

async function createExclusive(path: string, owner: LockOwner): Promise<boolean> {
  try {
    const handle = await open(path, 'wx', 0o644);
    try {
      await handle.writeFile(JSON.stringify(owner));
    } finally {
      await handle.close();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function isLockOwner(value: unknown): value is LockOwner {
  const v = value as Partial<LockOwner> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    Number.isInteger(v.pid) &&
    (v.pid as number) > 0 &&
    typeof v.host === 'string' &&
    (v.startTime === null || typeof v.startTime === 'string')
  );
}

async function readOwner(path: string): Promise<{ owner: LockOwner | null; text: string } | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    // Valid JSON that is not an owner record (`{}`, `42`, a pid that is not a number) names no
    // process that could still hold the lock: stale, like a partial write.
    return { owner: isLockOwner(parsed) ? parsed : null, text };
  } catch {
    // Killed between create and write: an empty or partial lock file is stale.
    return { owner: null, text };
  }
}

export interface Lock {
  readonly path: string;
  release(): Promise<void>;
}

/** Removes a lock file only if it is still the one we looked at. Runs under the takeover lock. */
async function takeOverStale(path: string, staleText: string): Promise<void> {
  const guard = `${path}.takeover`;
  if (!(await createExclusive(guard, me()))) {
    const age = await stat(guard).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    if (age > TAKEOVER_STALE_MS) await rm(guard, { force: true });
    return; // Someone else is taking over; the caller retries.
  }
  try {
    const again = await readOwner(path);
    if (again && again.text === staleText) await rm(path, { force: true });
  } finally {
    await rm(guard, { force: true });
  }
}

/**
 * Takes the lock at `path` or throws LockHeldError at once. Never waits: an overlapping cron run
 * should exit and let the next one try.
 */
export async function acquireLock(path: string): Promise<Lock> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const owner = me();
    if (await createExclusive(path, owner)) {
      let released = false;
      return {
        path,
        async release() {
          if (released) return;
          released = true;
          const current = await readOwner(path);
          if (current?.owner?.pid === owner.pid) await rm(path, { force: true });
        },
      };
    }
    const current = await readOwner(path);
    if (current === null) continue; // Released between our attempt and our look: try again.
    if (current.owner && isAlive(current.owner)) {
      throw new LockHeldError(
        `another instance (pid ${current.owner.pid} on ${current.owner.host}, since ${current.owner.since}) holds ${path}`,
        { holderPid: current.owner.pid },
      );
    }
    await takeOverStale(path, current.text);
  }
  throw new LockHeldError(`could not take ${path}: other processes keep taking it`);
}
