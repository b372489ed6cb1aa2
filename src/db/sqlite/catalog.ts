/** Reading SQLite's catalog: a table's columns and the tables it references. */
import type { ColumnInfo, TargetColumn } from '../types.js';
import type { SqliteDb } from './connection.js';
import { logicalTypeOf } from './types.js';

/**
 * A table's columns with their logical types, or null when it does not exist; generated columns
 * included and marked (table_xinfo's `hidden` is 2 for a virtual generated column, 3 for a
 * stored one; 1, a virtual table's hidden column, is left out as table_info leaves it).
 */
export function sqliteTargetColumns(db: SqliteDb, table: string): TargetColumn[] | null {
  const rows = db
    .prepare('SELECT name, type, hidden FROM pragma_table_xinfo(?) WHERE hidden IN (0, 2, 3)')
    .all(table) as { name: string; type: string; hidden: number | bigint }[];
  if (rows.length === 0) return null;
  return rows.map((r) => ({
    name: r.name,
    type: logicalTypeOf(r.type),
    nativeType: r.type,
    ...(Number(r.hidden) !== 0 ? { generated: true } : {}),
  }));
}

/** The columns a source reads: its generated ones are left out (a replica computes its own). */
export function sqliteColumns(db: SqliteDb, table: string): ColumnInfo[] | null {
  return sqliteTargetColumns(db, table)?.filter((c) => !c.generated) ?? null;
}

/** The tables `table` references through foreign keys. */
export function referencedTables(db: SqliteDb, table: string): string[] {
  const rows = db
    .prepare('SELECT DISTINCT "table" AS t FROM pragma_foreign_key_list(?)')
    .all(table) as { t: string }[];
  return rows.map((r) => r.t);
}

/** Whether a table, trigger or index of that name exists. */
export function objectExists(db: SqliteDb, type: string, name: string): boolean {
  return (
    db.prepare('SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?').get(type, name) !==
    undefined
  );
}
