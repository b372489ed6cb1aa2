/** Applying deltas to SQLite: one IMMEDIATE transaction per delta, upserts by key. */
import { ConfigError, DeltaError } from '../../errors.js';
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
