/** Reading changes from SQLite. All tables of one extract are read inside one read transaction. */
import { ConfigError } from '../../errors.js';
import type { ColumnInfo, DbConfig, ReadChangesRequest, SourceReader, WireRow } from '../types.js';
import { openSqlite, quoteIdent, type SqliteDb } from './connection.js';
import { logicalTypeOf, toWire } from './types.js';

export function sqliteColumns(db: SqliteDb, table: string): ColumnInfo[] | null {
  const rows = db.prepare(`SELECT name, type FROM pragma_table_info(?)`).all(table) as {
    name: string;
    type: string;
  }[];
  if (rows.length === 0) return null;
  return rows.map((r) => ({ name: r.name, type: logicalTypeOf(r.type), nativeType: r.type }));
}

class SqliteSource implements SourceReader {
  readonly engine = 'sqlite' as const;
  private inSnapshot = false;

  constructor(private readonly db: SqliteDb) {}

  async columns(table: string): Promise<ColumnInfo[]> {
    const columns = sqliteColumns(this.db, table);
    if (!columns) throw new ConfigError(`source table '${table}' does not exist`);
    return columns;
  }

  private snapshot(): void {
    // A deferred transaction pins one snapshot for every read that follows (in WAL mode), so
    // the tables of one delta agree with each other. Read-only connections may do this.
    if (!this.inSnapshot) {
      this.db.exec('BEGIN');
      this.inSnapshot = true;
    }
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    this.snapshot();
    const row = this.db
      .prepare(`SELECT MAX(${quoteIdent(logIdColumn)}) AS m FROM ${quoteIdent(table)}`)
      .get() as { m: bigint | number | null };
    return row.m === null ? null : String(row.m);
  }

  async *readChanges(req: ReadChangesRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    const log = quoteIdent(req.logIdColumn);
    const stmt = this.db.prepare(
      `SELECT ${req.columns.map((c) => quoteIdent(c.name)).join(', ')} FROM ${quoteIdent(req.table)}
       WHERE ${log} > ? AND ${log} <= ? ORDER BY ${log}`,
    );
    stmt.raw(true);
    const types = req.columns.map((c) => c.type);
    for (const row of stmt.iterate(BigInt(req.after), BigInt(req.upTo)) as IterableIterator<
      unknown[]
    >) {
      yield row.map((v, i) => toWire(v as never, types[i]!));
    }
  }

  async close(): Promise<void> {
    if (this.inSnapshot) this.db.exec('COMMIT');
    this.db.close();
  }
}

export async function openSqliteSource(config: DbConfig): Promise<SourceReader> {
  return new SqliteSource(openSqlite(config, true));
}
