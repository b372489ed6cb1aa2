/**
 * The high-water mark on SQLite, and the n-th logId a row limit cuts a window at.
 *
 * Exact without waiting: SQLite has one writer at a time, and a logId (or a change log's
 * AUTOINCREMENT id) is taken inside the writing transaction, under the write lock. A snapshot
 * sees a prefix of the commits, so every id at or below the highest one it sees was taken by a
 * transaction it sees, or by one that rolled back: none can still commit below the mark. Every
 * function here reads in the caller's snapshot.
 */
import type { HighWaterMark, HighWaterRequest, NthLogIdRequest } from '../types.js';
import type { SqliteDb } from './connection.js';
import { translateError } from './read.js';
import { maxLogIdSql, nthLogIdSql } from './sql.js';

/** The highest logId of a table as a decimal string, or null when it is empty. */
export function maxLogId(db: SqliteDb, table: string, logIdColumn: string): string | null {
  let row: { m: bigint | number | null };
  try {
    row = db.prepare(maxLogIdSql(table, logIdColumn)).get() as typeof row;
  } catch (err) {
    throw translateError(err, table);
  }
  return row.m === null ? null : String(row.m);
}

/** The stable mark over the tables: their plain maximum (see above); never held back. */
export function stableHighWater(db: SqliteDb, req: HighWaterRequest): HighWaterMark {
  let high: bigint | null = null;
  for (const t of req.tables) {
    const m = maxLogId(db, t.table, t.logIdColumn);
    if (m !== null && (high === null || BigInt(m) > high)) high = BigInt(m);
  }
  return { high: high === null ? null : high.toString() };
}

/** The n-th logId (from 1) across the tables after their cursors, up to `upTo`. */
export function nthLogId(db: SqliteDb, req: NthLogIdRequest): string | null {
  const params = req.tables.flatMap((t) => [BigInt(t.after), BigInt(req.upTo)]);
  const row = db.prepare(nthLogIdSql(req)).get(...params, req.n - 1) as { l: bigint } | undefined;
  return row ? String(row.l) : null;
}
