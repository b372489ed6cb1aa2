/**
 * snapshot mode: small tables with nothing to track. Every run reads the whole table and compares
 * each row's hash with the previous run's, kept beside the state as
 * `<job>.snapshot.<table>.<logId>.ndjson.gz` (one `[key, hash]` per line); only inserts, updates
 * and deletes go into the delta. The file is named after the delta it belongs to, so that a delta
 * adopted after a crash finds its snapshot, and a delta never published leaves a file no cursor
 * names (removed by the next run).
 */
import { createReadStream } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import type { WireRow } from '../../db/types.js';
import { writeStreamAtomic } from '../../format/atomic-file.js';
import { hashText } from '../../format/checksum.js';
import type { TableWriter } from '../../format/delta-writer.js';
import type { Shaper } from './shape.js';

export function snapshotFile(dir: string, job: string, table: string, logId: string): string {
  return join(dir, `${job}.snapshot.${table.replace(/[^A-Za-z0-9_-]/g, '_')}.${logId}.ndjson.gz`);
}

async function readPrevious(path: string | null): Promise<Map<string, string>> {
  const previous = new Map<string, string>();
  if (!path) return previous;
  let carry = '';
  try {
    for await (const chunk of createReadStream(path).pipe(createGunzip())) {
      const lines = (carry + (chunk as Buffer).toString('utf8')).split('\n');
      carry = lines.pop()!;
      for (const line of lines) {
        const [key, hash] = JSON.parse(line) as [string, string];
        previous.set(key, hash);
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return previous;
    throw err;
  }
  return previous;
}

/**
 * Writes the table's changes against the previous snapshot into `writer`; writes the new
 * snapshot file when anything changed. Returns the number of upserts and deletes.
 */
export async function diffSnapshot(
  rows: AsyncIterable<WireRow>,
  shaper: Shaper,
  writer: TableWriter,
  where: {
    dir: string;
    job: string;
    table: string;
    previous: string | null;
    next: string;
    /** Write the snapshot file even when nothing changed (a base starts the comparison over). */
    always?: boolean;
  },
): Promise<number> {
  const previous = await readPrevious(
    where.previous ? snapshotFile(where.dir, where.job, where.table, where.previous) : null,
  );
  const current: [string, string][] = [];
  let changes = 0;
  for await (const sourceRow of rows) {
    const row = shaper.row(sourceRow);
    if (!row) continue; // Filtered out: as if absent, so a row that leaves the filter is deleted.
    const key = JSON.stringify(shaper.keyOf(sourceRow));
    const hash = await hashText(JSON.stringify(row));
    current.push([key, hash]);
    if (previous.get(key) !== hash) {
      await writer.upsert(row);
      changes++;
    }
    previous.delete(key);
  }
  for (const key of previous.keys()) {
    await writer.delete(JSON.parse(key) as WireRow);
    changes++;
  }
  if (changes > 0 || where.always) {
    const text =
      current.map((entry) => JSON.stringify(entry)).join('\n') + (current.length ? '\n' : '');
    await writeStreamAtomic(
      snapshotFile(where.dir, where.job, where.table, where.next),
      Readable.from([text]).pipe(createGzip({ level: 1 })),
    );
  }
  return changes;
}

/** Removes snapshot files of a table other than the one its cursor names. */
export async function pruneSnapshots(
  dir: string,
  job: string,
  table: string,
  keep: string | null,
): Promise<void> {
  const prefix = `${job}.snapshot.${table.replace(/[^A-Za-z0-9_-]/g, '_')}.`;
  const keepName = keep ? snapshotFile(dir, job, table, keep).slice(dir.length + 1) : null;
  for (const name of await readdir(dir)) {
    if (name.startsWith(prefix) && name !== keepName) await rm(join(dir, name), { force: true });
  }
}
