/** Opening SQLite files, with the errors an operator can act on. */
import Database from 'better-sqlite3';
import { ConfigError, UnavailableError } from '../../errors.js';
import type { DbConfig } from '../types.js';

export type SqliteDb = Database.Database;

export function sqliteFilename(config: DbConfig): string {
  const c = config.connection;
  const filename = typeof c === 'string' ? c : c.filename;
  if (typeof filename !== 'string' || filename.length === 0) {
    throw new ConfigError('sqlite connection needs a filename: connection: { filename: "…" }');
  }
  return filename;
}

export function openSqlite(config: DbConfig, readonly: boolean): SqliteDb {
  const filename = sqliteFilename(config);
  try {
    // fileMustExist: a mistyped path must not quietly create an empty database.
    const db = new Database(filename, { readonly, fileMustExist: true, timeout: 10_000 });
    db.defaultSafeIntegers(true);
    return db;
  } catch (err) {
    throw new UnavailableError(
      `cannot open SQLite database ${filename}: ${(err as Error).message}`,
      {
        hint: 'check the path and its permissions',
      },
    );
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
