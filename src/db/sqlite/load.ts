/**
 * How rows reach a SQLite table: one prepared `INSERT … ON CONFLICT DO UPDATE` per row, run
 * inside the caller's IMMEDIATE transaction (SQLite has no bulk path that beats it in-process),
 * and deletes by key, or by "every key not given" through a temporary key table.
 */
import { ConfigError, DeltaError } from '../../errors.js';
import type { ApplyRowsRequest, DeleteRowsRequest, WireRow } from '../types.js';
import { quoteIdent, type SqliteDb } from './connection.js';
import { upsertSql } from './sql.js';
import { fromWire } from './types.js';

/**
 * A row a constraint of the replica refused (NOT NULL, CHECK, UNIQUE on another column…), as a
 * DeltaError naming the table, the row's key, the column and its value; other errors as they are.
 */
function refusedRow(err: unknown, req: ApplyRowsRequest, row: WireRow): unknown {
  const code = (err as { code?: string }).code ?? '';
  if (!code.startsWith('SQLITE_CONSTRAINT')) return err;
  const message = (err as Error).message;
  const at = (name: string) => req.columns.findIndex((c) => c.name === name);
  const key = `(${req.key.join(', ')})=(${req.key.map((k) => String(row[at(k)])).join(', ')})`;
  // "NOT NULL constraint failed: t.c", "UNIQUE constraint failed: t.c", "CHECK constraint
  // failed: c < 100": name the delta's columns the message mentions, with their values.
  const detail = message.split(': ').slice(1).join(': ');
  const mentions = (name: string) =>
    new RegExp(`(^|\\W)${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|\\W)`).test(detail);
  const named = req.columns.filter((c) => mentions(c.name));
  const values = named
    .map(
      (c) =>
        `column ${c.name} value ${row[at(c.name)] === null ? 'NULL' : `'${String(row[at(c.name)])}'`}`,
    )
    .join(', ');
  const unique = code === 'SQLITE_CONSTRAINT_UNIQUE';
  return new DeltaError(
    `table '${req.table}' row ${key}: ${values ? `${values}: ` : ''}${message}`,
    {
      hint: unique
        ? 'SQLite checks unique constraints row by row: two rows of one delta cannot swap values of a unique column; drop that unique index on the replica or apply the swap by hand; nothing was applied'
        : 'fix the replica constraint or the source data; nothing was applied',
      cause: err,
    },
  );
}

/** Upserts every row by key; returns the row count. */
export async function applyRows(db: SqliteDb, req: ApplyRowsRequest): Promise<number> {
  let stmt;
  try {
    stmt = db.prepare(upsertSql(req));
  } catch (err) {
    const message = (err as Error).message;
    throw new ConfigError(
      /ON CONFLICT clause/.test(message)
        ? `target table '${req.table}' has no primary key or unique index on (${req.key.join(', ')})`
        : `target table '${req.table}': ${message}`,
      { hint: 'add one on the replica, or fix the key in the job configuration', cause: err },
    );
  }
  const types = req.columns.map((c) => c.type);
  let count = 0;
  for await (const row of req.rows) {
    if (row.length !== types.length) {
      throw new DeltaError(
        `table '${req.table}' row ${count + 1} of the delta has ${row.length} values for ${types.length} columns`,
        { hint: 'the delta is damaged or was not written by deltasync; nothing was applied' },
      );
    }
    try {
      stmt.run(row.map((v, i) => fromWire(v, types[i]!)));
    } catch (err) {
      throw refusedRow(err, req, row);
    }
    count++;
  }
  return count;
}

/** Deletes the rows with the given keys; returns how many. */
export async function deleteRows(db: SqliteDb, req: DeleteRowsRequest): Promise<number> {
  const where = req.key.map((k) => `${quoteIdent(k.name)} = ?`).join(' AND ');
  const stmt = db.prepare(`DELETE FROM ${quoteIdent(req.table)} WHERE ${where}`);
  const types = req.key.map((k) => k.type);
  let deleted = 0;
  for await (const key of req.rows) {
    deleted += stmt.run(key.map((v, i) => fromWire(v, types[i]!))).changes;
  }
  return deleted;
}

/** Deletes every row whose key is not given (a base table); returns how many. */
export async function deleteRowsNotIn(db: SqliteDb, req: DeleteRowsRequest): Promise<number> {
  const keys = quoteIdent('deltasync_base_keys');
  const names = req.key.map((k) => quoteIdent(k.name));
  db.exec(`DROP TABLE IF EXISTS temp.${keys}`);
  db.exec(`CREATE TEMP TABLE ${keys} (${names.join(', ')}, PRIMARY KEY (${names.join(', ')}))`);
  const insert = db.prepare(
    `INSERT OR IGNORE INTO temp.${keys} VALUES (${names.map(() => '?').join(', ')})`,
  );
  const types = req.key.map((k) => k.type);
  for await (const key of req.rows) insert.run(key.map((v, i) => fromWire(v, types[i]!)));
  const table = quoteIdent(req.table);
  const match = names.map((n) => `k.${n} = ${table}.${n}`).join(' AND ');
  const deleted = db
    .prepare(
      `DELETE FROM ${table} WHERE NOT EXISTS (SELECT 1 FROM temp.${keys} AS k WHERE ${match})`,
    )
    .run().changes;
  db.exec(`DROP TABLE temp.${keys}`);
  return deleted;
}
