/**
 * The four capture modes: how each table's changes since its cursor become rows and deletes of
 * the delta being written. Each returns the table's new cursor.
 *
 * - logid: rows with `cursor < logId <= high`.
 * - changelog: keys the change log names in `(cursor, high]`, as their current row or a delete.
 * - timestamp: rows after the `(ts, key)` cursor up to the settle horizon, at most `limit`.
 * - snapshot: every row, compared by hash with the previous run's, as inserts/updates/deletes.
 */
import type { SourceReader, WireRow } from '../../db/types.js';
import type { TableWriter } from '../../format/delta-writer.js';
import type { Cursor } from '../../format/manifest.js';
import type { TableConfig } from '../../config/schema.js';
import type { Shaper } from './shape.js';
import { diffSnapshot } from './snapshot.js';

export interface TableCapture {
  config: TableConfig;
  shaper: Shaper;
  /** Source columns, in the order source rows come. */
  source: import('../../db/types.js').ColumnInfo[];
}

/** What a mode did for one table. */
export interface CaptureOutcome {
  cursor: Cursor | undefined;
  /** Rows (and deletes) written. */
  rows: number;
  /** True when a limit stopped it before it was caught up. */
  limited: boolean;
}

async function writeRows(
  capture: TableCapture,
  writer: TableWriter,
  rows: AsyncIterable<WireRow>,
): Promise<number> {
  let n = 0;
  for await (const sourceRow of rows) {
    const row = capture.shaper.row(sourceRow);
    if (row) {
      await writer.upsert(row);
      n++;
    }
  }
  return n;
}

export async function captureLogId(
  source: SourceReader,
  capture: TableCapture,
  writer: TableWriter,
  after: string,
  upTo: string,
): Promise<CaptureOutcome> {
  const rows = source.readChanges({
    table: capture.config.name,
    columns: capture.source,
    logIdColumn: capture.config.logIdColumn!,
    after,
    upTo,
  });
  return { cursor: upTo, rows: await writeRows(capture, writer, rows), limited: false };
}

export async function captureChangelog(
  source: SourceReader,
  capture: TableCapture,
  writer: TableWriter,
  changelog: string,
  after: string,
  upTo: string,
): Promise<CaptureOutcome> {
  const read = source.readChangelog.bind(source);
  let n = 0;
  for await (const change of read({
    changelog,
    table: capture.config.name,
    columns: capture.source,
    key: capture.config.key,
    after,
    upTo,
  })) {
    if (change.op === 'delete') {
      await writer.delete(change.key);
      n++;
    } else {
      const row = capture.shaper.row(change.row);
      if (row) {
        await writer.upsert(row);
        n++;
      }
    }
  }
  return { cursor: upTo, rows: n, limited: false };
}

export async function captureTimestamp(
  source: SourceReader,
  capture: TableCapture,
  writer: TableWriter,
  cursor: Cursor | undefined,
  upTo: string,
  limit: number | undefined,
): Promise<CaptureOutcome> {
  const read = source.readKeyset.bind(source);
  const { config, shaper } = capture;
  const tsIndex = capture.source.findIndex((c) => c.name === config.timestampColumn);
  let after =
    cursor && typeof cursor === 'object'
      ? cursor
      : config.startAt
        ? { ts: config.startAt, key: [] }
        : null;
  let read_ = 0;
  let n = 0;
  for await (const sourceRow of read({
    table: config.name,
    columns: capture.source,
    tsColumn: config.timestampColumn!,
    key: config.key,
    after,
    upTo,
    limit,
  })) {
    read_++;
    after = { ts: sourceRow[tsIndex]!, key: shaper.keyOf(sourceRow) };
    const row = shaper.row(sourceRow);
    if (row) {
      await writer.upsert(row);
      n++;
    }
  }
  return { cursor: after ?? undefined, rows: n, limited: limit !== undefined && read_ >= limit };
}

export async function captureSnapshot(
  source: SourceReader,
  capture: TableCapture,
  writer: TableWriter,
  previous: string | null,
  next: string,
  snapshotDir: { dir: string; job: string },
): Promise<CaptureOutcome> {
  const read = source.readAll.bind(source);
  const rows = read({
    table: capture.config.name,
    columns: capture.source,
    key: capture.config.key,
  });
  const changed = await diffSnapshot(rows, capture.shaper, writer, {
    ...snapshotDir,
    table: capture.config.name,
    previous,
    next,
  });
  // Unchanged tables keep pointing at their previous snapshot.
  return { cursor: changed > 0 ? next : (previous ?? undefined), rows: changed, limited: false };
}
