/** Applying deltas to SQLite: one IMMEDIATE transaction per delta, upserts by key. */
import { DeltaError } from '../../errors.js';
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
  type TargetColumn,
  type TargetWriter,
} from '../types.js';
import { openSqlite, quoteIdent, type SqliteDb } from './connection.js';
import { sqliteTargetColumns } from './catalog.js';
import { readAllRows } from './read.js';
import { applyRows, deleteRows, deleteRowsNotIn } from './load.js';

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
    return applyRows(this.db, req);
  }

  async deleteRows(req: DeleteRowsRequest): Promise<number> {
    return deleteRows(this.db, req);
  }

  async deleteRowsNotIn(req: DeleteRowsRequest): Promise<number> {
    return deleteRowsNotIn(this.db, req);
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

  async columns(table: string): Promise<TargetColumn[] | null> {
    return sqliteTargetColumns(this.db, table);
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
      try {
        this.db.exec('COMMIT');
      } catch (err) {
        // Deferred foreign keys are checked here: the delta left a row without its parent.
        if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_FOREIGNKEY') throw err;
        throw new DeltaError(
          `the delta leaves a row whose parent is missing: ${(err as Error).message}`,
          {
            hint: 'the replica has a foreign key the source does not keep, or a parent was not shipped; nothing was applied',
            cause: err,
          },
        );
      }
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
