import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ExitCode, LockHeldError } from '../../src/errors.js';
import { acquireLock } from '../../src/format/lock.js';
import { listDir, testdir } from '../helpers/tmp.js';

/** A lock file's content, in the shape acquireLock writes. */
function ownerJson(pid: number, startTime: string | null, host = hostname()): string {
  return JSON.stringify({ pid, startTime, host, since: '2024-05-01T12:00:00.000Z' });
}

/** The pid of a process that has exited: spawn a child and wait for it to end. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(child, 'exit');
  const pid = child.pid!;
  expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  return pid;
}

/** A child that stays alive until the test finishes. */
async function liveChild(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  await once(child, 'spawn');
  return child;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), read here independently. */
function startTimeOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

async function heldError(path: string): Promise<LockHeldError> {
  const err = await acquireLock(path).then(
    async (lock) => {
      await lock.release();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockHeldError);
  expect((err as LockHeldError).exitCode).toBe(ExitCode.LOCKED);
  expect((err as LockHeldError).exitCode).toBe(75);
  return err as LockHeldError;
}

async function ownerOf(path: string): Promise<{ pid: number; host: string; startTime: string }> {
  return JSON.parse(await readFile(path, 'utf8'));
}

describe('acquireLock', () => {
  it('a second acquire while the lock is held throws LockHeldError naming the holder', async () => {
    const dir = await testdir();
    const path = join(dir, 'acme.extract.lock');
    const lock = await acquireLock(path);
    expect(lock.path).toBe(path);
    expect(await ownerOf(path)).toMatchObject({
      pid: process.pid,
      host: hostname(),
      startTime: startTimeOf(process.pid),
    });
    const err = await heldError(path);
    expect(err.holderPid).toBe(process.pid);
    expect(err.message).toContain(`pid ${process.pid}`);
    expect(err.message).toContain(path);
    await lock.release();
  });

  it('release removes the lock, so the next acquire works', async () => {
    const dir = await testdir();
    const path = join(dir, 'acme.load.lock');
    const first = await acquireLock(path);
    await first.release();
    expect(await listDir(dir)).toEqual([]);
    const second = await acquireLock(path);
    expect(await listDir(dir)).toEqual(['acme.load.lock']);
    await first.release(); // a second release of the old lock must not free the new one
    await heldError(path);
    await second.release();
    expect(await listDir(dir)).toEqual([]);
  });

  it('release leaves alone a lock that another process has since taken', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const lock = await acquireLock(path);
    const other = await liveChild();
    await writeFile(path, ownerJson(other.pid!, startTimeOf(other.pid!)));
    await lock.release();
    expect((await ownerOf(path)).pid).toBe(other.pid);
  });

  it('only one of many concurrent acquires wins', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => acquireLock(path)));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LockHeldError);
    }
  });

  it('takes over a stale lock whose process is dead', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const pid = await deadPid();
    await writeFile(path, ownerJson(pid, '12345'));
    const lock = await acquireLock(path);
    expect((await ownerOf(path)).pid).toBe(process.pid);
    expect(await listDir(dir)).toEqual(['x.lock']); // the takeover guard is gone too
    await lock.release();
  });

  it('only one of many concurrent acquires takes over a stale lock', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    await writeFile(path, ownerJson(await deadPid(), null));
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => acquireLock(path)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((await ownerOf(path)).pid).toBe(process.pid);
  });

  it.each([
    ['an empty file', ''],
    ['a half-written owner', ownerJson(4242, null).slice(0, 17)],
    ['binary junk', '\u0000\u0001\u00ff\ufffd'],
    ['JSON null', 'null'],
    ['an empty object', '{}'],
    ['a JSON number', '4242'],
    ['a JSON array', '[4242]'],
    ['an owner with a string pid', JSON.stringify({ pid: 'x', startTime: null, host: hostname() })],
  ])('takes over a lock file holding garbage: %s', async (_what, text) => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    await writeFile(path, text);
    const lock = await acquireLock(path);
    expect((await ownerOf(path)).pid).toBe(process.pid);
    await lock.release();
  });

  it('takes over a lock whose pid is alive but was reused by a newer process', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const child = await liveChild();
    const realStart = startTimeOf(child.pid!);
    // Control: with the true start time the child is the holder.
    await writeFile(path, ownerJson(child.pid!, realStart));
    expect((await heldError(path)).holderPid).toBe(child.pid);
    // A lock written by an earlier process that had the same pid.
    await writeFile(path, ownerJson(child.pid!, String(Number(realStart) - 1)));
    const lock = await acquireLock(path);
    expect((await ownerOf(path)).pid).toBe(process.pid);
    await lock.release();
  });

  it('does not take over a live pid whose start time is unknown', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const child = await liveChild();
    await writeFile(path, ownerJson(child.pid!, null));
    expect((await heldError(path)).holderPid).toBe(child.pid);
  });

  it('does not take over a lock of another host, even with a pid that is dead here', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const text = ownerJson(await deadPid(), '1', `not-${hostname()}`);
    await writeFile(path, text);
    const err = await heldError(path);
    expect(err.message).toContain(`not-${hostname()}`);
    expect(await readFile(path, 'utf8')).toBe(text);
  });

  it('waits out a takeover in progress instead of racing it', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    const text = ownerJson(await deadPid(), null);
    await writeFile(path, text);
    await writeFile(`${path}.takeover`, ownerJson(process.pid, null));
    const err = await heldError(path);
    expect(err.message).toContain('could not take');
    expect(await readFile(path, 'utf8')).toBe(text);
  });

  it('clears a takeover guard left by a process killed mid-takeover', async () => {
    const dir = await testdir();
    const path = join(dir, 'x.lock');
    await writeFile(path, ownerJson(await deadPid(), null));
    await writeFile(`${path}.takeover`, '');
    const old = new Date(Date.now() - 60_000);
    await utimes(`${path}.takeover`, old, old);
    const lock = await acquireLock(path);
    expect((await ownerOf(path)).pid).toBe(process.pid);
    expect(await listDir(dir)).toEqual(['x.lock']);
    await lock.release();
  });
});
