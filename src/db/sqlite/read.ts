/**
 * Streaming rows out of SQLite as wire rows, shared by the source (changes, keysets, whole
 * tables) and the target (`verify` reads the replica the same way). better-sqlite3 iterates
 * lazily, so memory stays flat.
 */
import { ConfigError } from '../../errors.js';
import type { ColumnInfo, ReadAllRequest, WireRow, WireValue } from '../types.js';
import type { SqliteDb } from './connection.js';
import { readAllSql } from './sql.js';
import { toWire } from './types.js';

/**
 * A missing table or column is the operator's to fix (the config names it): a ConfigError, like
 * every other engine's; anything else is passed on.
 */
export function translateError(err: unknown, table: string): unknown {
  const message = (err as Error)?.message ?? '';
  if (/^no such (table|column)/.test(message)) {
    return new ConfigError(`SQLite table '${table}': ${message}`, {
      hint: 'check the table and column names in the config against the database',
    });
  }
  return err;
}

/**
 * Streams a statement's rows as wire rows (better-sqlite3 iterates lazily). An iteration stays
 * in `open` while it runs: the connection can do nothing else until it ends, so close() ends
 * the abandoned ones first.
 */
export function* wireRows(
  db: SqliteDb,
  sql: string,
  params: unknown[],
  columns: ColumnInfo[],
  table: string,
  open?: Set<Iterator<unknown>>,
): Generator<WireRow> {
  let rows: IterableIterator<unknown[]>;
  try {
    rows = db
      .prepare(sql)
      .raw(true)
      .iterate(...params) as IterableIterator<unknown[]>;
  } catch (err) {
    throw translateError(err, table);
  }
  const types = columns.map((c) => c.type);
  open?.add(rows);
  try {
    for (const row of rows) yield row.map((v, i) => toWire(v as never, types[i]!));
  } finally {
    open?.delete(rows);
    rows.return?.();
  }
}

/**
 * SQLite keeps times as text; a cursor's wire timestamp is compared with the stored text, so it
 * goes back to the common stored form `YYYY-MM-DD HH:MM:SS[.fff]` (see the README: SQLite
 * timestamp mode needs the column written in that form, UTC for timestamptz).
 */
export function storedTime(value: WireValue): WireValue {
  return typeof value === 'string' ? value.replace('T', ' ').replace(/Z$/, '') : value;
}

/** A key value as a statement parameter (64-bit integers as BigInt, exactly). */
export function keyParam(value: WireValue, column: ColumnInfo): unknown {
  if (value === null) return null;
  return column.type === 'bigint' ? BigInt(value as string) : value;
}

/** Every row of a table ordered by key: shared by the source (snapshot) and the target (verify). */
export function* readAllRows(
  db: SqliteDb,
  req: ReadAllRequest,
  open?: Set<Iterator<unknown>>,
): Generator<WireRow> {
  yield* wireRows(db, readAllSql(req), [], req.columns, req.table, open);
}
