/**
 * The MySQL/MariaDB TargetWriter. One connection; each `transaction` is one InnoDB transaction
 * holding the rows and the `deltasync_applied` record together, so a load is applied exactly
 * once or not at all.
 */
import type { ResultSetHeader } from 'mysql2';
import { ConfigError, DeltaError, DeltasyncError } from '../../errors.js';
import {
  APPLIED_TABLE,
  type AddedColumnTypes,
  type AppliedRecord,
  type ApplyRowsRequest,
  type ColumnInfo,
  type CopyRowsRequest,
  type DbConfig,
  type DeleteRowsRequest,
  type ReadAllRequest,
  type TargetTransaction,
  type TargetColumn,
  type TargetWriter,
  type WireRow,
} from '../types.js';
import {
  closeSession,
  openSession,
  reflectColumns,
  run,
  splitTable,
  translateError,
  type Session,
} from './connection.js';
import { copyLoadSql, loadCopyText } from './copy.js';
import {
  applyStaged,
  applyStagedWith,
  onDuplicateClause,
  STAGE,
  type ApplyPlan,
  type LoadStrategy,
} from './load.js';
import { readPlan, RowStreams, wireRowConverter } from './read.js';
import { stageColumn } from './stage.js';
import { deleteSql, readAllSql } from './sql.js';
import { logicalTypeOf, quoteIdent, quoteTable, writeEncoder } from './types.js';

/** Deletes go out in batches of this many keys… */
const DELETE_BATCH_KEYS = 1000;
/** …or fewer, when their literals reach this many characters. */
const DELETE_BATCH_CHARS = 1024 * 1024;

export interface MysqlTargetOptions {
  /**
   * How applyRows sends rows. `auto` (the default) uses LOAD DATA LOCAL INFILE when the server
   * allows it (`@@local_infile`) and multi-row INSERTs otherwise.
   */
  loadStrategy?: LoadStrategy | 'auto';
}

const APPLIED = quoteIdent(APPLIED_TABLE);

/** Column types for `load.missingColumns: 'add'` (see AddedColumnTypes). */
const ADDED_COLUMN_TYPES: AddedColumnTypes = {
  int: 'BIGINT',
  bigint: 'BIGINT',
  decimal: 'DECIMAL(65,30)',
  float: 'DOUBLE',
  bool: 'BOOLEAN',
  text: 'LONGTEXT',
  binary: 'LONGBLOB',
  date: 'DATE',
  time: 'TIME(6)',
  timestamp: 'DATETIME(6)',
  timestamptz: 'TIMESTAMP(6) NULL',
  json: 'JSON',
  uuid: 'CHAR(36)',
};

/** Writes one MySQL/MariaDB replica. */
export class MysqlTarget implements TargetWriter {
  readonly engine = 'mysql' as const;
  private inTransaction = false;
  private readonly streams: RowStreams;

  private constructor(
    private readonly session: Session,
    /** The strategy applyRows uses, decided once at open. */
    readonly loadStrategy: LoadStrategy,
  ) {
    this.streams = new RowStreams(session);
  }

  /** Connects and makes the session strict, so a value that does not fit is an error. */
  static async open(config: DbConfig, options: MysqlTargetOptions = {}): Promise<MysqlTarget> {
    const session = await openSession(config, true);
    try {
      const [settings] = await run<{ sqlMode: string; localInfile: number | string }[]>(
        session,
        'SELECT @@SESSION.sql_mode AS sqlMode, @@GLOBAL.local_infile AS localInfile',
      );
      // Our string literals use backslash escapes; strictness turns truncation into an error.
      const modes = settings!.sqlMode
        .split(',')
        .filter((m) => m !== '' && m !== 'NO_BACKSLASH_ESCAPES');
      if (!modes.includes('STRICT_ALL_TABLES')) modes.push('STRICT_ALL_TABLES');
      await run(session, 'SET SESSION sql_mode = ?', [modes.join(',')]);
      const wanted = options.loadStrategy ?? 'auto';
      const infileAllowed = Number(settings!.localInfile) === 1;
      if (wanted === 'infile' && !infileAllowed) {
        throw new ConfigError(
          `MariaDB/MySQL ${session.where} does not allow LOAD DATA LOCAL INFILE (local_infile is off)`,
          { hint: 'SET GLOBAL local_infile = 1 on the server, or use the insert strategy' },
        );
      }
      const strategy: LoadStrategy =
        wanted === 'auto' ? (infileAllowed ? 'infile' : 'insert') : wanted;
      return new MysqlTarget(session, strategy);
    } catch (err) {
      await closeSession(session);
      throw err;
    }
  }

  /** DDL commits the open transaction in MySQL: load adds columns before the delta's. */
  readonly ddlInTransaction = false;

  addColumnSql(table: string, column: ColumnInfo): string {
    return `ALTER TABLE ${quoteTable(table)} ADD COLUMN ${quoteIdent(column.name)} ${ADDED_COLUMN_TYPES[column.type]}`;
  }

  async columns(table: string): Promise<TargetColumn[] | null> {
    const native = await reflectColumns(this.session, table);
    if (native.length === 0) return null;
    return native.map((c) => ({
      name: c.name,
      type: logicalTypeOf(c, table),
      nativeType: c.columnType,
      ...(c.generated ? { generated: true } : {}),
    }));
  }

  async prepare(): Promise<void> {
    // DDL commits implicitly in MySQL: never inside a load's transaction.
    if (this.inTransaction) throw new DeltasyncError('prepare() called inside a transaction');
    await run(
      this.session,
      `CREATE TABLE IF NOT EXISTS ${APPLIED} (
         job VARCHAR(200) NOT NULL PRIMARY KEY,
         log_id VARCHAR(40) NOT NULL,
         delta VARCHAR(255),
         applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
    );
  }

  async appliedLogId(job: string): Promise<string | null> {
    return this.readApplied(job, false);
  }

  async transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T> {
    if (this.inTransaction) throw new DeltasyncError('MySQL target: transactions do not nest');
    this.inTransaction = true;
    try {
      await run(this.session, 'START TRANSACTION');
      let result: T;
      try {
        result = await fn({
          appliedLogId: (job) => this.readApplied(job, true),
          // As replication appliers do: rows of one delta may reference each other in any order
          // (a manager and their report, store and staff), and InnoDB checks a multi-row DELETE
          // row by row. ON DELETE/UPDATE actions do not fire either: the source shipped their
          // effects. Set back in `finally`, whatever happens.
          relaxForeignKeys: async () =>
            void (await run(this.session, 'SET SESSION foreign_key_checks = 0')),
          applyRows: (request) => this.applyRows(request),
          // Without local_infile (the insert strategy) load decodes the lines for applyRows.
          copyRows:
            this.loadStrategy === 'infile' ? (request) => this.copyRows(request) : undefined,
          executeDdl: () => {
            throw new DeltasyncError('MySQL target: DDL would commit the delta half-way');
          },
          recordApplied: (record) => this.recordApplied(record),
          deleteRows: (request) => this.deleteRows(request),
          deleteRowsNotIn: (request) => this.deleteRowsNotIn(request),
        });
      } catch (err) {
        if (!this.session.lostWith) {
          await run(this.session, 'ROLLBACK').catch(() => undefined);
        }
        // The rows' own error (a bad checksum, say) says more than a connection lost after it.
        const cause = err instanceof DeltasyncError ? err : (this.session.lostWith ?? err);
        throw translateError(cause, this.session.where);
      }
      await run(this.session, 'COMMIT');
      return result;
    } finally {
      this.inTransaction = false;
      if (!this.session.lostWith) {
        await run(this.session, 'SET SESSION foreign_key_checks = 1').catch(() => undefined);
      }
    }
  }

  /**
   * Every row ordered by key, for `verify`. Values are read back the way load wrote the delta's
   * types into the replica's columns, so they compare with the source's wire values.
   */
  async *readAll(request: ReadAllRequest): AsyncIterable<WireRow> {
    this.streams.assertIdle();
    const plan = await readPlan(this.session, request.table, request.columns, false);
    yield* this.streams.stream(
      readAllSql(request.table, plan.selects, request.key),
      wireRowConverter(plan.converters),
      { table: request.table, hasGeometry: plan.hasGeometry },
    );
  }

  /** Runs one statement in autocommit: the after-load hook, once its deltas are committed. */
  async execute(sql: string): Promise<void> {
    if (this.inTransaction) throw new DeltasyncError('execute() called inside a transaction');
    this.streams.assertIdle();
    await run(this.session, sql);
  }

  async close(): Promise<void> {
    if (this.streams.abandon()) return;
    await closeSession(this.session);
  }

  /**
   * Inside a transaction the row is locked (FOR UPDATE), so two loads of one job that somehow
   * run at once serialise here instead of both applying the same delta.
   */
  private async readApplied(job: string, lock: boolean): Promise<string | null> {
    try {
      const rows = await run<{ log_id: string }[]>(
        this.session,
        `SELECT log_id FROM ${APPLIED} WHERE job = ?${lock ? ' FOR UPDATE' : ''}`,
        [job],
        APPLIED_TABLE,
      );
      return rows[0]?.log_id ?? null;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // Before the first prepare() nothing was ever applied; but a load needs the table.
      if (!lock) return null;
      throw new ConfigError(
        `table ${APPLIED_TABLE} is missing in MariaDB/MySQL ${this.session.where}`,
        {
          hint: 'call prepare() before the first load',
        },
      );
    }
  }

  private async recordApplied(record: AppliedRecord): Promise<void> {
    await run(
      this.session,
      `INSERT INTO ${APPLIED} (job, log_id, delta, applied_at) VALUES (?, ?, ?, CURRENT_TIMESTAMP(6))
       ON DUPLICATE KEY UPDATE log_id = VALUES(log_id), delta = VALUES(delta), applied_at = VALUES(applied_at)`,
      [record.job, record.logId, record.delta],
      APPLIED_TABLE,
    );
  }

  /**
   * A base table: stages its keys in a temporary table (batched INSERTs, so memory stays flat),
   * then deletes every row whose key was not staged, in one statement.
   */
  private async deleteRowsNotIn(request: DeleteRowsRequest): Promise<number> {
    const { table, key } = request;
    const native = await reflectColumns(this.session, table);
    const byName = new Map(native.map((c) => [c.name, c]));
    const targets = key.map((k) => byName.get(k.name));
    if (native.length === 0 || targets.some((t) => !t)) {
      throw new ConfigError(
        `table ${table} or its key (${key.map((k) => k.name).join(', ')}) does not exist in MariaDB/MySQL ${this.session.where}`,
        { hint: 'create it on the replica before loading' },
      );
    }
    const encoders = key.map((k, i) => writeEncoder(k, targets[i]!.dataType));
    const names = key.map((k) => quoteIdent(k.name));
    const keys = quoteIdent('deltasync_base_keys');
    await run(this.session, `DROP TEMPORARY TABLE IF EXISTS ${keys}`);
    await run(
      this.session,
      `CREATE TEMPORARY TABLE ${keys} (${names.map((n, i) => `${n} ${targets[i]!.columnType} NOT NULL`).join(', ')}, PRIMARY KEY (${names.join(', ')})) ENGINE=InnoDB`,
    );
    try {
      let values: string[] = [];
      let chars = 0;
      const flush = async () => {
        await run(
          this.session,
          `INSERT IGNORE INTO ${keys} (${names.join(', ')}) VALUES ${values.join(',')}`,
          undefined,
          table,
        );
        values = [];
        chars = 0;
      };
      for await (const row of request.rows) {
        const tuple = `(${encoders.map((e, i) => e.literal(row[i]!)).join(',')})`;
        values.push(tuple);
        chars += tuple.length;
        if (values.length >= DELETE_BATCH_KEYS || chars >= DELETE_BATCH_CHARS) await flush();
      }
      if (values.length > 0) await flush();
      const on = names.map((n) => `k.${n} = t.${n}`).join(' AND ');
      const header = await run<ResultSetHeader>(
        this.session,
        `DELETE t FROM ${quoteTable(table)} AS t LEFT JOIN ${keys} AS k ON ${on} WHERE k.${names[0]} IS NULL`,
        undefined,
        table,
      );
      return header.affectedRows;
    } finally {
      if (!this.session.lostWith) {
        await run(this.session, `DROP TEMPORARY TABLE IF EXISTS ${keys}`).catch(() => undefined);
      }
    }
  }

  /** Deletes by key in batches of `k IN (…)`; keys that are not there are no error. */
  private async deleteRows(request: DeleteRowsRequest): Promise<number> {
    const { table, key } = request;
    const native = await reflectColumns(this.session, table);
    if (native.length === 0) {
      throw new ConfigError(
        `table ${table} does not exist in MariaDB/MySQL ${this.session.where}`,
        { hint: 'create it on the replica before loading' },
      );
    }
    const byName = new Map(native.map((c) => [c.name, c]));
    const encoders = key.map((column) => {
      const target = byName.get(column.name);
      if (!target) {
        throw new ConfigError(
          `key column ${table}.${column.name} does not exist in MariaDB/MySQL ${this.session.where}`,
        );
      }
      return writeEncoder(column, target.dataType);
    });
    const names = key.map((c) => c.name);
    let deleted = 0;
    let batch: string[][] = [];
    let chars = 0;
    const flush = async () => {
      const header = await run<ResultSetHeader>(
        this.session,
        deleteSql(table, names, batch),
        undefined,
        table,
      );
      deleted += header.affectedRows;
      batch = [];
      chars = 0;
    };
    let index = 0;
    for await (const row of request.rows) {
      if (!Array.isArray(row) || row.length !== key.length) {
        throw new DeltaError(
          `table ${table}: delete ${index + 1} has ${Array.isArray(row) ? row.length : 'no'} key values, expected ${key.length}`,
        );
      }
      const tuple = encoders.map((e, i) => e.literal(row[i]!));
      batch.push(tuple);
      chars += tuple.reduce((n, t) => n + t.length + 2, 2);
      index++;
      if (batch.length >= DELETE_BATCH_KEYS || chars >= DELETE_BATCH_CHARS) await flush();
    }
    if (batch.length > 0) await flush();
    return deleted;
  }

  private async applyRows(request: ApplyRowsRequest): Promise<number> {
    const plan = await this.plan(request);
    return applyStaged(this.session, plan, request.rows, this.loadStrategy);
  }

  /**
   * Format 2: COPY text through LOAD DATA LOCAL INFILE (copy.ts). Straight into the table,
   * checked in the statement, when it is empty and has no unique index besides the key (which
   * REPLACE would resolve by deleting a row); through the stage and its checks otherwise, like
   * applyRows.
   */
  private async copyRows(request: CopyRowsRequest): Promise<number> {
    const { table, key, columns, keep, data } = request;
    const plan = await this.plan({ table, key, columns: keep.map((i) => columns[i]!) });
    const direct =
      plan.otherUniques.length === 0 &&
      (await run<unknown[]>(this.session, `SELECT 1 FROM ${plan.table} LIMIT 1`, [], table))
        .length === 0;
    if (direct) {
      return loadCopyText(
        this.session,
        plan,
        copyLoadSql(plan.table, columns, keep, plan, true),
        data,
        keep,
      );
    }
    return applyStagedWith(this.session, plan, () =>
      loadCopyText(this.session, plan, copyLoadSql(STAGE, columns, keep, plan, false), data),
    );
  }

  /** The table's unique indexes (the primary key too) and its NOT NULL columns. */
  private async constraints(
    table: string,
  ): Promise<{ uniques: { name: string; columns: string[] }[]; notNull: Set<string> }> {
    const [schema, name] = splitTable(table);
    const indexes = await run<{ name: string; col: string }[]>(
      this.session,
      `SELECT INDEX_NAME AS name, COLUMN_NAME AS col FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0
        ORDER BY INDEX_NAME, SEQ_IN_INDEX`,
      [schema, name],
      table,
    );
    const uniques = new Map<string, string[]>();
    for (const r of indexes) uniques.set(r.name, [...(uniques.get(r.name) ?? []), r.col]);
    const notNull = await run<{ col: string }[]>(
      this.session,
      `SELECT COLUMN_NAME AS col FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND IS_NULLABLE = 'NO'`,
      [schema, name],
      table,
    );
    return {
      uniques: [...uniques].map(([n, columns]) => ({ name: n, columns })),
      notNull: new Set(notNull.map((r) => r.col)),
    };
  }

  /** Checks the request against the target table and prepares the encoders. */
  private async plan(
    request: Pick<ApplyRowsRequest, 'table' | 'key' | 'columns'>,
  ): Promise<ApplyPlan> {
    const { table, key, columns } = request;
    const native = await reflectColumns(this.session, table);
    if (native.length === 0) {
      throw new ConfigError(
        `table ${table} does not exist in MariaDB/MySQL ${this.session.where}`,
        {
          hint: 'create it on the replica before loading',
        },
      );
    }
    const byName = new Map(native.map((c) => [c.name, c]));
    const names = new Set(columns.map((c) => c.name));
    for (const k of key) {
      if (!names.has(k)) {
        throw new ConfigError(`key column ${table}.${k} is not among the delta's columns`);
      }
    }
    const { uniques, notNull } = await this.constraints(table);
    const keySet = [...key].sort().join('\0');
    if (!uniques.some((u) => [...u.columns].sort().join('\0') === keySet)) {
      throw new ConfigError(
        `target table '${table}' has no primary key or unique index on (${key.join(', ')})`,
        {
          hint: 'add one on the replica (without it MariaDB/MySQL would take duplicate rows), or fix the key in the job configuration',
        },
      );
    }
    const stageTypes: string[] = [];
    const targetTypes: string[] = [];
    const misfits: (string | null)[] = [];
    const quiet: (string | null)[] = [];
    const encoders = columns.map((column) => {
      const target = byName.get(column.name);
      if (!target) {
        throw new ConfigError(
          `column ${table}.${column.name} does not exist in MariaDB/MySQL ${this.session.where}`,
          { hint: 'add it to the replica table or leave it out of the job' },
        );
      }
      const staged = stageColumn(column, target);
      stageTypes.push(staged.stageType);
      misfits.push(staged.misfit);
      quiet.push(staged.quiet);
      targetTypes.push(target.columnType);
      return writeEncoder(column, target.dataType);
    });
    return {
      table: quoteTable(table),
      tableName: table,
      columns,
      stageTypes,
      targetTypes,
      misfits,
      quiet,
      notNull: columns.map((c) => notNull.has(c.name)),
      key,
      otherUniques: uniques.filter((u) => [...u.columns].sort().join('\0') !== keySet),
      encoders,
      onDuplicate: onDuplicateClause(
        columns.map((c) => c.name),
        key,
      ),
    };
  }
}
