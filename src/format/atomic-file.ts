/**
 * The one way a step publishes a file: write to a temporary name in the same directory, fsync,
 * rename over the final name, fsync the directory. A reader sees the old file or the whole new
 * one, never a part; after a crash at most a `*.tmp-*` file is left, which readers ignore.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Marker in temporary file names; listings skip any name containing it. */
export const TMP_MARKER = '.tmp-';

export function isTemporaryName(name: string): boolean {
  return name.includes(TMP_MARKER);
}

export function temporaryPathFor(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}${TMP_MARKER}${process.pid}-${randomBytes(4).toString('hex')}`,
  );
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync a directory so that a rename in it survives a power cut. */
export async function fsyncDirectory(dir: string): Promise<void> {
  await fsyncPath(dir);
}

/** Moves a finished temporary file into place: fsync it, rename, fsync the directory. */
export async function publishTemporary(tmpPath: string, finalPath: string): Promise<void> {
  try {
    await fsyncPath(tmpPath);
    await rename(tmpPath, finalPath);
  } catch (err) {
    await rm(tmpPath, { force: true });
    throw err;
  }
  await fsyncDirectory(dirname(finalPath));
}

/** Writes `data` to `path` atomically. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = temporaryPathFor(path);
  try {
    const handle = await open(tmp, 'wx', 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await publishTemporary(tmp, path);
}

/** Streams `source` into `path` atomically; the temporary file is removed on any failure. */
export async function writeStreamAtomic(path: string, source: Readable): Promise<void> {
  const tmp = temporaryPathFor(path);
  try {
    await pipeline(source, createWriteStream(tmp, { flags: 'wx', mode: 0o644 }));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await publishTemporary(tmp, path);
}

function processIsGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Removes temporary files in `dir` left by processes that no longer exist (killed mid-write).
 * A temporary file of a live process is left alone: it may be another step writing right now.
 */
export async function sweepTemporaryFiles(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const at = name.indexOf(TMP_MARKER);
    if (at === -1) continue;
    const pid = Number.parseInt(name.slice(at + TMP_MARKER.length), 10);
    if (Number.isInteger(pid) && pid > 0 && processIsGone(pid)) {
      await rm(join(dir, name), { force: true });
      removed.push(name);
    }
  }
  return removed;
}
