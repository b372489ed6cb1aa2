/** Applying deltas to SQLite: one IMMEDIATE transaction per delta, upserts by key. */
import { ConfigError } from '../../errors.js';
import {
  APPLIED_TABLE,
  type AddedColumnTypes,
  type AppliedRecord,
  type ApplyRowsRequest,
  type ColumnInfo,
  type DbConfig,
  type DeleteRowsRequest,
  type ReadAllRequest,
  type WireRow,
  type TargetTransaction,
  type TargetWriter,
} from '../types.js';
import { openSqlite, quoteIdent, type SqliteDb } from './connection.js';
import { readAllRows, sqliteColumns } from './source.js';
import { fromWire } from './types.js';

/**
 * Column types for `load.missingColumns: 'add'`, named so that reflecting them gives back the
 * logical type; decimals are TEXT because NUMERIC affinity would turn '12.30' into a float.
 */
const ADDED_COLUMN_TYPES: AddedColumnTypes = {
  int: 'INTEGER',
  bigint: 'INTEGER',
  decimal: 'TEXT',
  float: 'REAL',
  bool: 'BOOLEAN',
  text: 'TEXT',
  binary: 'BLOB',
  date: 'DATE',
  time: 'TIME',
  timestamp: 'DATETIME',
  timestamptz: 'TIMESTAMPTZ',
  json: 'JSON',
  uuid: 'UUID',
};

/** `INSERT … ON CONFLICT (key) DO UPDATE` writing only the delta's columns. */
export function upsertSql(req: Pick<ApplyRowsRequest, 'table' | 'key' | 'columns'>): string {
  const cols = req.columns.map((c) => quoteIdent(c.name));
  const keys = new Set(req.key);
  const updates = req.columns
    .filter((c) => !keys.has(c.name))
    .map((c) => `${quoteIdent(c.name)} = excluded.${quoteIdent(c.name)}`);
  const onConflict = updates.length > 0 ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING';
  return `INSERT INTO ${quoteIdent(req.table)} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
    ON CONFLICT (${req.key.map(quoteIdent).join(', ')}) ${onConflict}`;
}

class SqliteTransaction implements TargetTransaction {
  constructor(private readonly db: SqliteDb) {}

  async appliedLogId(job: string): Promise<string | null> {
    return readApplied(this.db, job);
  }

  /**
   * Foreign keys are checked at COMMIT, not row by row, so rows of one delta may reference each
   * other in any order; SQLite resets this when the transaction ends. ON DELETE actions still
   * fire (only on rows the source deleted too).
   */
  async executeDdl(sql: string): Promise<void> {
    this.db.exec(sql);
  }

  async relaxForeignKeys(): Promise<void> {
    this.db.pragma('defer_foreign_keys = ON');
  }

  async applyRows(req: ApplyRowsRequest): Promise<number> {
    let stmt;
    try {
      stmt = this.db.prepare(upsertSql(req));
    } catch (err) {
      throw new ConfigError(`target table '${req.table}': ${(err as Error).message}`, {
        hint: `the key (${req.key.join(', ')}) needs a PRIMARY KEY or UNIQUE index`,
      });
    }
    const types = req.columns.map((c) => c.type);
    let count = 0;
    for await (const row of req.rows) {
      stmt.run(row.map((v, i) => fromWire(v, types[i]!)));
      count++;
    }
    return count;
  }

  async deleteRows(req: DeleteRowsRequest): Promise<number> {
    const where = req.key.map((k) => `${quoteIdent(k.name)} = ?`).join(' AND ');
    const stmt = this.db.prepare(`DELETE FROM ${quoteIdent(req.table)} WHERE ${where}`);
    const types = req.key.map((k) => k.type);
    let deleted = 0;
    for await (const key of req.rows) {
      deleted += stmt.run(key.map((v, i) => fromWire(v, types[i]!))).changes;
    }
    return deleted;
  }

  async deleteRowsNotIn(req: DeleteRowsRequest): Promise<number> {
    const keys = quoteIdent('deltasync_base_keys');
    const names = req.key.map((k) => quoteIdent(k.name));
    this.db.exec(`DROP TABLE IF EXISTS temp.${keys}`);
    this.db.exec(
      `CREATE TEMP TABLE ${keys} (${names.join(', ')}, PRIMARY KEY (${names.join(', ')}))`,
    );
    const insert = this.db.prepare(
      `INSERT OR IGNORE INTO temp.${keys} VALUES (${names.map(() => '?').join(', ')})`,
    );
    const types = req.key.map((k) => k.type);
    for await (const key of req.rows) insert.run(key.map((v, i) => fromWire(v, types[i]!)));
    const table = quoteIdent(req.table);
    const match = names.map((n) => `k.${n} = ${table}.${n}`).join(' AND ');
    const deleted = this.db
      .prepare(
        `DELETE FROM ${table} WHERE NOT EXISTS (SELECT 1 FROM temp.${keys} AS k WHERE ${match})`,
      )
      .run().changes;
    this.db.exec(`DROP TABLE temp.${keys}`);
    return deleted;
  }

  async recordApplied(record: AppliedRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO ${APPLIED_TABLE} (job, log_id, delta, applied_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (job) DO UPDATE SET log_id = excluded.log_id, delta = excluded.delta, applied_at = excluded.applied_at`,
      )
      .run(record.job, record.logId, record.delta, new Date().toISOString());
  }
}

function readApplied(db: SqliteDb, job: string): string | null {
  const row = db.prepare(`SELECT log_id FROM ${APPLIED_TABLE} WHERE job = ?`).get(job) as
    { log_id: string } | undefined;
  return row?.log_id ?? null;
}

class SqliteTarget implements TargetWriter {
  readonly engine = 'sqlite' as const;

  readonly ddlInTransaction = true;

  constructor(private readonly db: SqliteDb) {}

  addColumnSql(table: string, column: ColumnInfo): string {
    return `ALTER TABLE ${quoteIdent(table)} ADD COLUMN ${quoteIdent(column.name)} ${ADDED_COLUMN_TYPES[column.type]}`;
  }

  async columns(table: string): Promise<ColumnInfo[] | null> {
    return sqliteColumns(this.db, table);
  }

  async prepare(): Promise<void> {
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS ${APPLIED_TABLE} (job TEXT PRIMARY KEY, log_id TEXT NOT NULL, delta TEXT, applied_at TEXT)`,
    );
  }

  async appliedLogId(job: string): Promise<string | null> {
    return readApplied(this.db, job);
  }

  async transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T> {
    // IMMEDIATE takes the write lock now rather than failing with SQLITE_BUSY half-way through.
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = await fn(new SqliteTransaction(this.db));
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async *readAll(req: ReadAllRequest): AsyncGenerator<WireRow> {
    yield* readAllRows(this.db, req);
  }

  async execute(sql: string): Promise<void> {
    this.db.exec(sql);
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

export async function openSqliteTarget(config: DbConfig): Promise<TargetWriter> {
  return new SqliteTarget(openSqlite(config, false));
}
