/**
 * Format 1 part files: one JSON array per line (NDJSON), optionally gzip-compressed. Load still
 * reads them (deltas in flight during an upgrade); extract writes format 2 (copy-part.ts). The
 * writer stays for tests and for rehearsing an upgrade with format-1 deltas.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { WireRow } from './wire.js';
import type { ManifestPart } from './manifest.js';
import {
  PartFileWriter,
  partError,
  splitLines,
  verifiedPartBytes,
  type Compression,
} from './part-file.js';

export { MAX_LINE_BYTES, type Compression } from './part-file.js';

/** Rows are batched into chunks of about this size before they reach zlib. */
const WRITE_CHUNK_CHARS = 256 * 1024;

/**
 * A part's file name: `<prefix>.<table>.<d?><number><ext>`. Table names may hold a schema and
 * odd characters; the manifest maps parts to tables, so the name only needs to be safe and
 * recognisable.
 */
export function partBaseName(
  prefix: string,
  table: string,
  index: number,
  kind: 'rows' | 'deletes',
): string {
  const safeTable = table.replace(/[^A-Za-z0-9_-]/g, '_');
  const number = String(index).padStart(4, '0');
  return `${prefix}.${safeTable}.${kind === 'deletes' ? 'd' : ''}${number}`;
}

/** A format-1 part's file name (`.ndjson.gz`, or `.ndjson` uncompressed). */
export function partFileName(
  prefix: string,
  table: string,
  index: number,
  compression: Compression,
  kind: 'rows' | 'deletes' = 'rows',
): string {
  const ext = compression === 'gzip' ? '.ndjson.gz' : '.ndjson';
  return partBaseName(prefix, table, index, kind) + ext;
}

/** Writes one format-1 part file; call `write` per row, then `finish` (or `abort` on failure). */
export class PartWriter {
  private pending = '';
  private pendingRows = 0;

  private constructor(private readonly out: PartFileWriter) {}

  static async create(
    dir: string,
    file: string,
    compression: Compression,
    options: { sha256?: boolean } = {},
  ): Promise<PartWriter> {
    return new PartWriter(await PartFileWriter.create(dir, file, compression, options));
  }

  get file(): string {
    return this.out.file;
  }

  get rows(): number {
    return this.out.lines + this.pendingRows;
  }

  async write(row: WireRow): Promise<void> {
    this.pending += JSON.stringify(row) + '\n';
    this.pendingRows++;
    if (this.pending.length >= WRITE_CHUNK_CHARS) await this.flushPending();
  }

  private async flushPending(): Promise<void> {
    const chunk = this.pending;
    const rows = this.pendingRows;
    this.pending = '';
    this.pendingRows = 0;
    await this.out.write(chunk, rows);
  }

  /** Flushes, fsyncs and renames the part into place; returns its manifest entry. */
  async finish(): Promise<ManifestPart> {
    if (this.pending.length > 0) {
      try {
        await this.flushPending();
      } catch (err) {
        await this.out.abort();
        throw err;
      }
    }
    return this.out.finish();
  }

  abort(): Promise<void> {
    return this.out.abort();
  }
}

/**
 * Reads a format-1 part as a stream of rows, checking each row's width as it goes and the part's
 * row count, byte count and xxhash64 at its end. Any mismatch throws DeltaError after the rows
 * before it were yielded: the caller must treat everything read from the part as void (load
 * rolls back).
 */
export async function* readPart(
  dir: string,
  part: ManifestPart,
  compression: Compression,
  width: number,
): AsyncGenerator<WireRow> {
  const path = join(dir, part.file);
  yield* readPartFrom(createReadStream(path, { highWaterMark: 1 << 20 }), part, compression, width);
}

/**
 * `readPart` over any byte stream of the part (a store's `read`, an HTTP body), with the same
 * checks: row width and count, byte count, xxhash64 (and SHA-256 when signed) at its end.
 */
export async function* readPartFrom(
  fileStream: Readable,
  part: ManifestPart,
  compression: Compression,
  width: number,
): AsyncGenerator<WireRow> {
  let rows = 0;
  for await (const line of splitLines(verifiedPartBytes(fileStream, part, compression))) {
    rows++;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw partError(part, `row ${rows} is not valid JSON`);
    }
    if (!Array.isArray(row) || row.length !== width) {
      throw partError(
        part,
        `row ${rows} has ${Array.isArray(row) ? row.length : 'no'} columns, the manifest declares ${width}`,
      );
    }
    yield row as WireRow;
  }
}
