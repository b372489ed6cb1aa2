/** Opening SQLite files, with the errors an operator can act on. */
import Database from 'better-sqlite3';
import { ConfigError, UnavailableError } from '../../errors.js';
import type { DbConfig } from '../types.js';

export type SqliteDb = Database.Database;

/** How long a statement waits for a lock when the config says nothing (`lockTimeoutSeconds`). */
export const DEFAULT_LOCK_TIMEOUT_SECONDS = 60;

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
    // timeout: how long a statement waits for another process's write lock (SQLITE_BUSY).
    const timeout = Math.ceil((config.lockTimeoutSeconds ?? DEFAULT_LOCK_TIMEOUT_SECONDS) * 1000);
    const db = new Database(filename, { readonly, fileMustExist: true, timeout });
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
