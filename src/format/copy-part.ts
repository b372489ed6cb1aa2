/**
 * Format 2 part files: one row per line of canonical COPY text (copy-text.ts), optionally
 * gzip-compressed. Two readers over the same verified bytes: the bytes themselves, for a replica
 * that loads COPY text without looking at rows, and decoded wire rows, for every other path.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { LogicalType, WireRow } from './wire.js';
import type { ManifestPart } from './manifest.js';
import { decodeLine } from './copy-text.js';
import { partBaseName } from './part-codec.js';
import { partError, splitLines, verifiedPartBytes, type Compression } from './part-file.js';

/** A format-2 part's file name (`.copy.gz`, or `.copy` uncompressed). */
export function copyPartFileName(
  prefix: string,
  table: string,
  index: number,
  compression: Compression,
  kind: 'rows' | 'deletes' = 'rows',
): string {
  return partBaseName(prefix, table, index, kind) + (compression === 'gzip' ? '.copy.gz' : '.copy');
}

/**
 * A part's COPY text, decompressed, as it comes off the stream (chunk boundaries anywhere). It
 * throws at its end, after the last byte, when the part is not what the manifest says.
 */
export function readCopyBytes(
  fileStream: Readable,
  part: ManifestPart,
  compression: Compression,
): AsyncGenerator<Buffer> {
  return verifiedPartBytes(fileStream, part, compression);
}

/**
 * A format-2 part's rows, decoded for the given column types (all of the delta's columns, or
 * the key columns for a delete part), with the byte reader's checks.
 */
export async function* readCopyRowsFrom(
  fileStream: Readable,
  part: ManifestPart,
  compression: Compression,
  types: readonly LogicalType[],
): AsyncGenerator<WireRow> {
  let rows = 0;
  for await (const line of splitLines(verifiedPartBytes(fileStream, part, compression))) {
    rows++;
    let row: WireRow;
    try {
      row = decodeLine(line, types);
    } catch (err) {
      throw partError(part, `row ${rows} ${(err as Error).message}`);
    }
    yield row;
  }
}

/** `readCopyRowsFrom` over a part file in `dir`. */
export function readCopyRows(
  dir: string,
  part: ManifestPart,
  compression: Compression,
  types: readonly LogicalType[],
): AsyncGenerator<WireRow> {
  const stream = createReadStream(join(dir, part.file), { highWaterMark: 1 << 20 });
  return readCopyRowsFrom(stream, part, compression, types);
}
