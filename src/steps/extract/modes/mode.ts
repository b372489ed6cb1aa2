/**
 * One capture mode's part of a delta, behind one small interface. Extract opens every mode for
 * each delta, after the delta's source snapshot is taken: `open` fixes what the mode ships this
 * time (its window), then `write` puts each of its tables into the delta.
 *
 * A table is written as a **base** (`tables[].base` in the manifest: its whole content as of the
 * delta's snapshot, which load puts in place of the replica's) when `deltasync resync` names it,
 * when its columns changed, or (changelog) when it joins the job; the mode then reads it whole
 * and sets its cursor so that the changes after that snapshot follow.
 */
import type { LoadedConfig } from '../../../config/load.js';
import type { TableConfig } from '../../../config/schema.js';
import type { ColumnInfo, SourceReader, WireRow } from '../../../db/types.js';
import type { TableWriter } from '../../../format/delta-writer.js';
import type { Cursor } from '../../../format/manifest.js';
import type { Logger } from '../../../log.js';
import type { Shaper } from '../shape.js';

export interface TableCapture {
  config: TableConfig;
  shaper: Shaper;
  /** Source columns, in the order source rows come. */
  source: ColumnInfo[];
}

/** What every mode sees of the delta being made. */
export interface ModeContext {
  source: SourceReader;
  config: LoadedConfig;
  log: Logger;
  /** The cursors after the previous delta (read only). */
  cursors: Readonly<Record<string, Cursor>>;
  /** The previous delta's logId. */
  last: string;
  /** True when the extract state predates per-table cursors (tables stand at `last`). */
  legacyState: boolean;
  /** Tables to write as a base in this delta (resync, changed columns); new tables add themselves. */
  base: ReadonlySet<string>;
  /** Rows still allowed in this delta (delta.maxRowsPerDelta), or undefined for no limit. */
  budget(): number | undefined;
}

/** What a mode did for one table. */
export interface CaptureOutcome {
  /** The table's cursor after this delta; undefined leaves it as it was. */
  cursor: Cursor | undefined;
  /** Rows (and deletes) written. */
  rows: number;
  /** True when a limit stopped it before it was caught up. */
  limited: boolean;
  /** True when the table went out whole (base). */
  base?: boolean;
}

export interface ModeDelta {
  /** The highest logId this mode ships: the delta's own logId is at least this. */
  highLogId: string | null;
  /** True when a limit cut the mode's window: more is there to extract now. */
  limited: boolean;
  /** Whether the table goes out as a base in this delta (decided before its writer opens). */
  isBase(plan: TableCapture): boolean;
  /** Writes one table of the mode into the delta. */
  write(plan: TableCapture, writer: TableWriter, toLogId: string): Promise<CaptureOutcome>;
  /** Cursors the mode's tables share (changelog: the change log's position). */
  shared(): Record<string, Cursor>;
}

export type OpenMode = (ctx: ModeContext, plans: TableCapture[]) => Promise<ModeDelta>;

/** Shapes and writes source rows as upserts; returns how many were written. */
export async function writeRows(
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

/**
 * The source columns a table's rows can be read with as COPY text straight into the delta (the
 * format 2 fast path, SourceReader.copyChanges and friends): the kept ones, in delta order, when
 * shaping is only excluding and renaming columns, which the query does. Null when a `filter` or
 * `computed` column needs each row in JavaScript.
 */
export function copyColumns(capture: TableCapture): ColumnInfo[] | null {
  const t = capture.config;
  if (t.filter || Object.keys(t.computed ?? {}).length > 0) return null;
  const excluded = new Set(t.exclude ?? []);
  return capture.source.filter((c) => !excluded.has(c.name));
}

/** Writes every row of the table as of the delta's snapshot (a base); streams, any size. */
export async function writeBase(
  source: SourceReader,
  capture: TableCapture,
  writer: TableWriter,
): Promise<number> {
  const request = { table: capture.config.name, key: capture.config.key };
  const columns = copyColumns(capture);
  if (columns && source.copyAll) {
    return (await writer.writeCopyText(source.copyAll({ ...request, columns }))).rows;
  }
  return writeRows(capture, writer, source.readAll({ ...request, columns: capture.source }));
}
