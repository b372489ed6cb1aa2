/**
 * A part file as bytes, whatever its row format: the writer compresses, hashes and counts the
 * bytes as they go to disk and publishes the file atomically; the reader hashes and counts them as
 * they come off disk, counts lines (one row each, in every format version) and refuses, at the end
 * of the part, anything that does not match the manifest. Row formats sit on top: NDJSON for
 * format 1 (part-codec.ts), COPY text for format 2 (copy-part.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, constants as zlibConstants, type ZlibOptions } from 'node:zlib';
import { DeltaError, DeltasyncError } from '../errors.js';
import { publishTemporary, temporaryPathFor } from './atomic-file.js';
import { createHasher, type Hasher } from './checksum.js';
import type { ManifestPart } from './manifest.js';

export type Compression = 'gzip' | 'none';

/**
 * The longest line a reader accepts. A row is one line, so this bounds the memory one row may
 * take; a longer line is treated as corruption rather than read into memory.
 */
export const MAX_LINE_BYTES = 64 * 1024 * 1024;

const NEWLINE = 0x0a;

/**
 * zlib's output buffer (default 16 KiB). Each buffer-full is a round trip to the thread pool and
 * one chunk through every stream stage after it. Reading, the 1M-row bench delta's parts came in
 * ~9,000 chunks; 1 MiB makes that ~160. Writing, the output is a fifth of the input: 256 KiB.
 */
const GUNZIP_CHUNK_BYTES = 1024 * 1024;
const ZLIB_CHUNK_BYTES = 256 * 1024;

/** Bytes a part writer queues for zlib before `write` waits (see the constructor). */
const GZIP_QUEUED_BYTES = 2 * 1024 * 1024;

/** Bytes a part writer gathers before passing them on to zlib in one piece (see `write`). */
const WRITE_BATCH_BYTES = 512 * 1024;

function hashingCounter(hasher: Hasher, counter: { bytes: number }, sha256?: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      sha256?.update(chunk);
      counter.bytes += chunk.length;
      done(null, chunk);
    },
  });
}

/** Counts the '\n' bytes of a chunk. */
export function countLines(chunk: Uint8Array): number {
  let n = 0;
  for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/**
 * Writes one part file from bytes or text: call `write` with whole lines and how many there are,
 * then `finish` (or `abort` on failure). The caller splits lines; this only counts what it is told.
 */
export class PartFileWriter {
  readonly file: string;
  /** Lines (rows) written so far. */
  lines = 0;
  private readonly tmpPath: string;
  private readonly finalPath: string;
  private readonly counter = { bytes: 0 };
  private readonly head: Writable;
  private readonly done: Promise<void>;
  /** Bytes written and not yet passed on (see `write`). */
  private held: Uint8Array[] = [];
  private heldBytes = 0;

  private constructor(
    dir: string,
    file: string,
    compression: Compression,
    private readonly hasher: Hasher,
    private readonly sha256?: Hash,
  ) {
    this.file = file;
    this.finalPath = join(dir, file);
    this.tmpPath = temporaryPathFor(this.finalPath);
    const out = createWriteStream(this.tmpPath, { flags: 'wx', mode: 0o644 });
    const counting = hashingCounter(hasher, this.counter, sha256);
    if (compression === 'gzip') {
      // Level 1: measured ~3x faster than the default for ~10% more bytes; zlib is the bottleneck.
      // Up to GZIP_QUEUED_BYTES wait for zlib (the default is 16 KiB), so the caller goes on
      // reading its source while the thread pool compresses instead of waiting on every chunk.
      // Node passes stream options of the zlib classes on to their Transform.
      const gzip = createGzip({
        level: 1,
        chunkSize: ZLIB_CHUNK_BYTES,
        writableHighWaterMark: GZIP_QUEUED_BYTES,
      } as ZlibOptions);
      this.head = gzip;
      this.done = pipeline(gzip, counting, out);
    } else {
      this.head = counting;
      this.done = pipeline(counting, out);
    }
    // Errors surface through `done`; keep an early failure from becoming an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /**
   * `sha256`: also record the part's SHA-256, which signed deltas need (xxhash64 detects damage
   * but is easy to forge; the signature covers the manifest, the SHA-256 carries it to the bytes).
   */
  static async create(
    dir: string,
    file: string,
    compression: Compression,
    options: { sha256?: boolean } = {},
  ): Promise<PartFileWriter> {
    const sha = options.sha256 ? createHash('sha256') : undefined;
    return new PartFileWriter(dir, file, compression, await createHasher(), sha);
  }

  /**
   * Writes `lines` complete lines; resolves when the pipeline can take more. Bytes are held
   * until WRITE_BATCH_BYTES are there and go on together: each write is one job for zlib's
   * thread and two thread switches, and COPY output comes in chunks of 64 KiB or less. The
   * caller must not change a chunk it has written.
   */
  async write(chunk: string | Uint8Array, lines: number): Promise<void> {
    this.lines += lines;
    if (typeof chunk === 'string') {
      await this.flushHeld();
      return this.send(chunk);
    }
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    if (this.heldBytes >= WRITE_BATCH_BYTES) await this.flushHeld();
  }

  private async flushHeld(): Promise<void> {
    if (this.held.length === 0) return;
    const data = this.held.length === 1 ? this.held[0]! : Buffer.concat(this.held, this.heldBytes);
    this.held = [];
    this.heldBytes = 0;
    await this.send(data);
  }

  private async send(data: string | Uint8Array): Promise<void> {
    if (this.head.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        this.head.off('error', onError);
        resolve();
      };
      const onError = (err: Error) => {
        this.head.off('drain', onDrain);
        reject(err);
      };
      this.head.once('drain', onDrain);
      this.head.once('error', onError);
    });
  }

  /** Flushes, fsyncs and renames the part into place; returns its manifest entry. */
  async finish(): Promise<ManifestPart> {
    try {
      await this.flushHeld();
      this.head.end();
      await this.done;
    } catch (err) {
      this.head.destroy();
      await rm(this.tmpPath, { force: true });
      throw err;
    }
    await publishTemporary(this.tmpPath, this.finalPath);
    return {
      file: this.file,
      rows: this.lines,
      bytes: this.counter.bytes,
      xxhash64: this.hasher.digestHex(),
      ...(this.sha256 ? { sha256: this.sha256.digest('hex') } : {}),
    };
  }

  async abort(): Promise<void> {
    this.held = [];
    this.heldBytes = 0;
    this.head.destroy();
    await this.done.catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}

/** The error for a part that is not what its manifest says. */
export function partError(part: ManifestPart, why: string): DeltaError {
  return new DeltaError(`${part.file}: ${why}`, {
    file: part.file,
    hint: 'copy the delta again from the source outbox',
  });
}

/**
 * A part's decompressed bytes, as they come: chunk boundaries anywhere, every byte yielded
 * before the part is proven whole. It throws DeltaError on a line longer than MAX_LINE_BYTES or
 * more lines than declared as soon as it sees them, and at the end on a missing final newline,
 * a byte count, xxhash64 or SHA-256 (when signed) that does not match, or fewer lines: the
 * consumer must treat everything read from the part as void (load rolls back).
 */
export async function* verifiedPartBytes(
  fileStream: Readable,
  part: ManifestPart,
  compression: Compression,
): AsyncGenerator<Buffer> {
  const hasher = await createHasher();
  const counter = { bytes: 0 };
  const sha256 = part.sha256 ? createHash('sha256') : undefined;
  const streams: (Readable | Transform)[] = [fileStream, hashingCounter(hasher, counter, sha256)];
  if (compression === 'gzip') {
    // finishFlush lets a truncated gzip end without a zlib error; the checksum check then names it.
    streams.push(
      createGunzip({
        finishFlush: zlibConstants.Z_SYNC_FLUSH,
        chunkSize: GUNZIP_CHUNK_BYTES,
      }),
    );
  }
  const data = streams.reduce((a, b) => a.pipe(b as Transform)) as Readable;
  // pipe() does not forward errors: route any stage's failure to the stream we iterate.
  for (const s of streams) if (s !== data) s.on('error', (err) => data.destroy(err));
  let lines = 0;
  // Bytes since the last newline: the line being read.
  let open = 0;
  try {
    for await (const chunk of data as AsyncIterable<Buffer>) {
      const last = chunk.lastIndexOf(NEWLINE);
      if (last === -1) {
        open += chunk.length;
        if (open > MAX_LINE_BYTES)
          throw partError(
            part,
            `a line is longer than ${MAX_LINE_BYTES} bytes; the part is corrupt`,
          );
      } else {
        lines += countLines(chunk);
        open = chunk.length - last - 1;
        if (lines > part.rows)
          throw partError(part, `holds more rows than the ${part.rows} the manifest declares`);
      }
      yield chunk;
    }
  } catch (err) {
    // Our own errors keep their type: a store whose connection dropped mid-part is 69, not 65.
    if (err instanceof DeltasyncError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw partError(part, 'part file is missing');
    throw partError(part, `cannot be read (${(err as Error).message})`);
  } finally {
    // Also when the consumer stops early (a break, or a database error while applying rows):
    // pipe() does not pass destroy upstream, so the file would stay open.
    for (const s of streams) s.destroy();
  }
  if (open > 0) throw partError(part, 'last line has no newline; the part is truncated');
  if (counter.bytes !== part.bytes)
    throw partError(
      part,
      `is ${counter.bytes} bytes, the manifest says ${part.bytes} (truncated or altered)`,
    );
  const digest = hasher.digestHex();
  if (digest !== part.xxhash64)
    throw partError(part, `checksum ${digest} does not match the manifest's ${part.xxhash64}`);
  if (sha256 && sha256.digest('hex') !== part.sha256)
    throw partError(part, `SHA-256 does not match the signed manifest's (tampered?)`);
  if (lines !== part.rows)
    throw partError(part, `holds ${lines} rows, the manifest says ${part.rows}`);
}

/**
 * Splits bytes into lines (without their '\n') decoded as UTF-8, never holding more than one
 * line beyond the chunk at hand. A newline byte never occurs inside a multi-byte character, so
 * splitting bytes at newlines keeps characters whole.
 */
export async function* splitLines(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let carry: Buffer[] = [];
  for await (const chunk of chunks) {
    const last = chunk.lastIndexOf(NEWLINE);
    if (last === -1) {
      carry.push(chunk);
      continue;
    }
    const head = chunk.subarray(0, last);
    const text = (carry.length > 0 ? Buffer.concat([...carry, head]) : head).toString('utf8');
    carry = last + 1 < chunk.length ? [chunk.subarray(last + 1)] : [];
    yield* text.split('\n');
  }
  // A last line without '\n' is the byte reader's to refuse (it knows the part).
  if (carry.length > 0) yield Buffer.concat(carry).toString('utf8');
}
