/**
 * A directory store: a local folder or a mounted network disk, written exactly as deltasync always
 * has (src/format/atomic-file.ts): a temporary name, fsync, rename, fsync the directory.
 */
import { constants, createReadStream, createWriteStream, ReadStream } from 'node:fs';
import { copyFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeltaError, UnavailableError } from '../../errors.js';
import {
  isTemporaryName,
  publishTemporary,
  temporaryPathFor,
  writeFileAtomic,
} from '../../format/atomic-file.js';
import { hashFile } from '../../format/checksum.js';
import { listManifests } from '../../format/delta-dir.js';
import {
  acceptExisting,
  digestStream,
  fsError,
  missingFile,
  leftoversAmong,
  mismatch,
  sameDigest,
  temporariesOf,
  toReadable,
} from '../common.js';
import type { DeltaStore, FileDigest, Leftover, PublishOptions, StoreManifest } from '../store.js';

export class DirStore implements DeltaStore {
  readonly where: string;

  constructor(readonly dir: string) {
    this.where = dir;
  }

  async check(): Promise<void> {
    const s = await stat(this.dir).catch(() => null);
    if (!s?.isDirectory()) {
      throw new UnavailableError(`${this.dir} is not a directory`, {
        hint: 'check that the disk is mounted; deltasync does not create store directories there',
      });
    }
  }

  async listManifests(after = '0'): Promise<StoreManifest[]> {
    return (await listManifests(this.dir, after)).map(({ file, logId }) => ({ file, logId }));
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.names()).filter((n) => n.startsWith(prefix) && !isTemporaryName(n)).sort();
  }

  async read(file: string): Promise<Readable> {
    const path = join(this.dir, file);
    const stream = createReadStream(path, { highWaterMark: 1 << 20 });
    // Open before returning, so that a missing file is an error here, not mid-pipeline.
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' ? missingFile(file, this.where, err) : fsError(err, path)),
      );
    });
    return stream;
  }

  async stat(file: string): Promise<{ bytes: number } | null> {
    try {
      return { bytes: (await stat(join(this.dir, file))).size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw fsError(err, `cannot stat ${join(this.dir, file)}`);
    }
  }

  async publish(
    file: string,
    source: Readable | Uint8Array | string,
    options: PublishOptions = {},
  ): Promise<FileDigest> {
    const from = localFileOf(source);
    if (from !== undefined && options.expect) {
      (source as Readable).destroy();
      return this.publishCopy(file, from, options.expect);
    }
    const digest = await digestStream(file, `publishing at ${this.where}`, options.expect);
    return this.publishThrough(file, async (tmp) => {
      await pipeline(
        toReadable(source),
        digest,
        createWriteStream(tmp, { flags: 'wx', mode: 0o644 }),
      );
      if (options.expect) {
        // Read back what the disk holds before publishing it: a network disk may write
        // something else than it was given.
        const written = await hashFile(tmp);
        if (!sameDigest(written, options.expect))
          throw this.wroteElse(file, written, options.expect);
      }
      return digest.digest();
    });
  }

  /**
   * A file from another local directory (copy from a directory outbox): the kernel copies it,
   * then the copy is read back once and checked against `expect` before it is published. That
   * is one read where streaming it takes a read, a write and a read back, and it checks the same
   * thing, the destination's bytes. Only when they are wrong is the source read too, to say
   * which side is damaged.
   */
  private publishCopy(file: string, from: string, expect: FileDigest): Promise<FileDigest> {
    return this.publishThrough(file, async (tmp) => {
      await copyFile(from, tmp, constants.COPYFILE_EXCL);
      const written = await hashFile(tmp);
      if (!sameDigest(written, expect)) {
        const source = await hashFile(from);
        if (!sameDigest(source, expect))
          throw mismatch(file, `publishing at ${this.where}`, source, expect);
        throw this.wroteElse(file, written, expect);
      }
      return written;
    });
  }

  /**
   * Create-only publishing around `write`, which fills the temporary file and returns its digest:
   * a file already there is accepted only with the same bytes; the temporary file never outlives
   * a failure; the rename is atomic (src/format/atomic-file.ts).
   */
  private async publishThrough(
    file: string,
    write: (tmp: string) => Promise<FileDigest>,
  ): Promise<FileDigest> {
    const finalPath = join(this.dir, file);
    const tmp = temporaryPathFor(finalPath);
    let written: FileDigest;
    try {
      written = await write(tmp);
      if (await this.stat(file)) {
        await rm(tmp, { force: true });
        return await acceptExisting(this, file, written);
      }
    } catch (err) {
      await rm(tmp, { force: true });
      throw fsError(err, `cannot publish ${file} at ${this.dir}`);
    }
    await publishTemporary(tmp, finalPath).catch((err) => {
      throw fsError(err, `cannot publish ${file} at ${this.dir}`);
    });
    return written;
  }

  /** The destination holds other bytes than it was given. */
  private wroteElse(file: string, written: FileDigest, expect: FileDigest): DeltaError {
    return new DeltaError(
      `${file} at ${this.dir} reads back as ${written.bytes} bytes with checksum ${written.xxhash64}; the manifest says ${expect.bytes} bytes, ${expect.xxhash64}`,
      {
        file,
        hint: 'the destination disk wrote something else: check it, then run copy again',
      },
    );
  }

  async replace(file: string, data: Uint8Array | string): Promise<void> {
    for (const name of temporariesOf(await this.names(), file)) await this.remove(name);
    await writeFileAtomic(join(this.dir, file), data).catch((err) => {
      throw fsError(err, `cannot write ${join(this.dir, file)}`);
    });
  }

  async remove(file: string): Promise<void> {
    await rm(join(this.dir, file), { force: true }).catch((err) => {
      throw fsError(err, `cannot remove ${join(this.dir, file)}`);
    });
  }

  async leftovers(after = '0'): Promise<Leftover[]> {
    return leftoversAmong(await this.names(), after);
  }

  async removeLeftover(leftover: Leftover): Promise<void> {
    await this.remove(leftover.ref);
  }

  async close(): Promise<void> {}

  private async names(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw fsError(err, `cannot list ${this.dir}`);
    }
  }
}

/**
 * The path of a local file that `source` streams from its start, untouched: what another
 * directory store's `read` returns. Anything else (a stream already read from, another store's
 * stream, bytes in memory) is streamed.
 */
function localFileOf(source: Readable | Uint8Array | string): string | undefined {
  if (!(source instanceof ReadStream) || typeof source.path !== 'string') return undefined;
  const { start } = source as ReadStream & { start?: number };
  if (source.bytesRead !== 0 || source.readableLength !== 0 || (start ?? 0) !== 0) return undefined;
  return source.path;
}
