/**
 * Writing to a SQL Server replica: bulk load each delta into a session-local staging table in
 * batches, then one MERGE into the target, all inside the caller's transaction.
 *
 * Bulk load (TDS BULK LOAD through tedious) is the SQL Server counterpart of PostgreSQL's COPY:
 * rows are not statements, and the server writes them in one stream. Batches keep the client's
 * memory flat; the staging table lives in tempdb, and a rollback drops it with everything else.
 */
import { randomBytes } from 'node:crypto';
import sql from 'mssql';
import { ConfigError, DeltaError } from '../../errors.js';
import type {
  AddedColumnTypes,
  AppliedRecord,
  ApplyRowsRequest,
  ColumnInfo,
  DbConfig,
  DeleteRowsRequest,
  ReadAllRequest,
  TargetTransaction,
  TargetColumn,
  TargetWriter,
  WireRow,
} from '../types.js';
import { connect, translateError, type MssqlConnection } from './connection.js';
import { reflectColumns } from './catalog.js';
import { driverType } from './driver.js';
import {
  planApply,
  planDelete,
  relaxForeignKeysSql,
  restoreForeignKeysSql,
  uniqueKeySql,
  SEQ_COLUMN,
  stagingTableName,
  type StagingColumn,
} from './load.js';
import {
  appliedLogIdSql,
  prepareSql,
  readAllQuery,
  recordAppliedSql,
  tableName,
  type TableName,
} from './sql.js';
import { fitCheckError, fitCheckSql, refusedRowError } from './stage.js';
import { streamRows, toWireRows } from './read.js';
import { publicColumn, quoteIdent, wireRead, type MssqlColumn } from './types.js';

export { driverType };

/** Column types for `load.missingColumns: 'add'` (see AddedColumnTypes). */
const ADDED_COLUMN_TYPES: AddedColumnTypes = {
  int: 'bigint',
  bigint: 'bigint',
  decimal: 'decimal(38,10)',
  float: 'float',
  bool: 'bit',
  text: 'nvarchar(max)',
  binary: 'varbinary(max)',
  date: 'date',
  time: 'time(6)',
  timestamp: 'datetime2(6)',
  timestamptz: 'datetimeoffset(6)',
  json: 'nvarchar(max)',
  uuid: 'uniqueidentifier',
};

/** `ALTER TABLE … ADD …` for a column load adds (SQL Server has no COLUMN keyword there). */
export function addColumnSql(table: TableName, column: ColumnInfo): string {
  return `ALTER TABLE ${table.quoted} ADD ${quoteIdent(column.name)} ${ADDED_COLUMN_TYPES[column.type]} NULL`;
}

/** Rows per bulk load: big enough that round trips do not matter, small enough to stay flat. */
export const BATCH_ROWS = 10_000;

/**
 * Reads wire rows into driver rows, hands them to `flush` BATCH_ROWS at a time (the last batch
 * may be shorter, and there is none for no rows), and returns the row count. Each driver row
 * ends with its position in the delta (the staging table's seq column). If `rows` throws, the
 * error propagates and nothing after it is flushed.
 */
export async function stageInBatches(
  rows: AsyncIterable<WireRow>,
  columns: StagingColumn[],
  flush: (batch: unknown[][]) => Promise<void>,
  batchRows = BATCH_ROWS,
): Promise<number> {
  let batch: unknown[][] = [];
  let count = 0;
  for await (const row of rows) {
    if (row.length !== columns.length) {
      throw new DeltaError(
        `row ${count + 1} has ${row.length} values; the delta declares ${columns.length} columns`,
      );
    }
    const driverRow: unknown[] = new Array(columns.length + 1);
    for (let i = 0; i < columns.length; i++) driverRow[i] = columns[i]!.write(row[i]!);
    driverRow[columns.length] = count;
    batch.push(driverRow);
    count++;
    if (batch.length >= batchRows) {
      await flush(batch);
      batch = [];
    }
  }
  if (batch.length > 0) await flush(batch);
  return count;
}

/** An mssql Table for one batch, its columns exactly as `createStagingSql` declares them. */
export function bulkTable(staging: string, columns: StagingColumn[], rows: unknown[][]): sql.Table {
  const table = new sql.Table(staging);
  table.create = false;
  for (const c of columns) table.columns.add(c.name, driverType(c), { nullable: true });
  table.columns.add(SEQ_COLUMN, sql.BigInt, { nullable: false });
  // mssql's row type predates bigint values; tedious takes them (and exactly).
  for (const row of rows) table.rows.push(row as (typeof table.rows)[number]);
  return table;
}

class Transaction implements TargetTransaction {
  /** Whether foreign keys were switched off, to be checked and switched on before commit. */
  relaxed = false;

  constructor(
    private readonly conn: MssqlConnection,
    private readonly tx: sql.Transaction,
  ) {}

  private request(): sql.Request {
    return new sql.Request(this.tx);
  }

  appliedLogId(job: string): Promise<string | null> {
    return readAppliedLogId(this.request(), this.conn, job, true);
  }

  async executeDdl(statement: string): Promise<void> {
    await this.request()
      .batch(statement)
      .catch((err) => {
        throw translateError(err, this.conn.label);
      });
  }

  async relaxForeignKeys(tables: string[]): Promise<void> {
    const names = tables.map((t) => tableName(t, this.conn.schema));
    await this.request()
      .batch(relaxForeignKeysSql(names))
      .catch((err) => {
        throw translateError(err, this.conn.label);
      });
    this.relaxed = true;
  }

  /** Switches relaxed foreign keys back on, checking every row (see restoreForeignKeysSql). */
  async restoreForeignKeys(): Promise<void> {
    if (!this.relaxed) return;
    await this.request()
      .batch(restoreForeignKeysSql())
      .catch((err) => {
        // 547: a row the delta left without its parent (the table is in the message).
        throw refusedRowError(err) ?? translateError(err, this.conn.label);
      });
    this.relaxed = false;
  }

  /** The target table's columns, read inside the transaction; ConfigError when it is missing. */
  private async reflect(table: TableName): Promise<MssqlColumn[]> {
    const target = await reflectColumns(this.request(), table).catch((err) => {
      throw translateError(err, this.conn.label, table.label);
    });
    if (target.length === 0) {
      throw new ConfigError(
        `target table ${table.label} does not exist in SQL Server ${this.conn.label}`,
        {
          hint: 'create the table on the replica first',
        },
      );
    }
    return target;
  }

  /**
   * Bulk loads the rows into the staging table, created on the first batch (none for no rows),
   * and returns the row count. batch(), not query(): query() runs through sp_executesql, and a
   * #table created inside that call is dropped when the call returns.
   */
  private async stage(
    rows: AsyncIterable<WireRow>,
    staging: string,
    plan: { staging: StagingColumn[]; createStaging: string },
  ): Promise<number> {
    let created = false;
    return stageInBatches(rows, plan.staging, async (batch) => {
      if (!created) {
        await this.request().batch(plan.createStaging);
        created = true;
      }
      await this.request().bulk(bulkTable(staging, plan.staging, batch));
    });
  }

  async applyRows(request: ApplyRowsRequest): Promise<number> {
    const table = tableName(request.table, this.conn.schema);
    const target = await this.reflect(table);
    const unique = await this.request()
      .query<{ found: number }>(uniqueKeySql(table, request.key))
      .catch((err) => {
        throw translateError(err, this.conn.label, table.label);
      });
    if (Number(unique.recordset?.[0]?.found ?? 0) === 0) {
      // MERGE would match one delta row to every replica row with its key.
      throw new ConfigError(
        `target table '${table.label}' has no primary key or unique index on (${request.key.join(', ')})`,
        { hint: 'add one on the replica, or fix the key in the job configuration' },
      );
    }
    const staging = stagingTableName(table, randomBytes(4).toString('hex'));
    const plan = planApply(table, request.key, request.columns, target, staging);
    try {
      const count = await this.stage(request.rows, staging, plan);
      if (count > 0) {
        await this.checkFit(table, staging, plan.staging);
        await this.request().batch(plan.merge);
        await this.request().batch(plan.dropStaging);
      }
      return count;
    } catch (err) {
      // The caller rolls back, which also drops the staging table.
      throw refusedRowError(err, table.label) ?? translateError(err, this.conn.label, table.label);
    }
  }

  /**
   * Proves in one query over the staging table that every value fits its replica column
   * unchanged (see stage.ts); throws a DeltaError naming the first row that does not.
   */
  private async checkFit(table: TableName, staging: string, columns: StagingColumn[]) {
    const check = fitCheckSql(staging, columns, SEQ_COLUMN);
    if (check === null) return;
    const result = await this.request().batch<Record<string, unknown>>(check);
    const found = result.recordset?.[0];
    if (found) throw fitCheckError(table, columns, found);
  }

  /**
   * Stages the keys as applyRows stages rows (bulk loads of BATCH_ROWS into a #table), then
   * deletes every row whose key was staged in one statement. Memory stays flat whatever the
   * number of keys; a rollback undoes the deletes and drops the staging table.
   */
  deleteRows(request: DeleteRowsRequest): Promise<number> {
    return this.deleteStaged(request, false);
  }

  deleteRowsNotIn(request: DeleteRowsRequest): Promise<number> {
    return this.deleteStaged(request, true);
  }

  private async deleteStaged(request: DeleteRowsRequest, notIn: boolean): Promise<number> {
    const table = tableName(request.table, this.conn.schema);
    const target = await this.reflect(table);
    const staging = stagingTableName(table, randomBytes(4).toString('hex'));
    const plan = planDelete(table, request.key, target, staging, notIn);
    try {
      // An empty base empties the table (the staging table is made with the first batch only).
      const count = await this.stage(request.rows, staging, plan);
      if (count === 0 && notIn) {
        const all = await this.request().batch<{ deleted: number }>(
          `DELETE FROM ${table.quoted};\nSELECT @@ROWCOUNT AS deleted;`,
        );
        return Number(all.recordset?.[0]?.deleted ?? 0);
      }
      if (count === 0) return 0;
      const result = await this.request().batch<{ deleted: number }>(plan.delete);
      await this.request().batch(plan.dropStaging);
      return Number(result.recordset?.[0]?.deleted ?? 0);
    } catch (err) {
      throw refusedRowError(err, table.label) ?? translateError(err, this.conn.label, table.label);
    }
  }

  async recordApplied(record: AppliedRecord): Promise<void> {
    const req = this.request()
      .input('job', sql.NVarChar(200), record.job)
      .input('logId', sql.VarChar(40), record.logId)
      .input('delta', sql.NVarChar(255), record.delta);
    await req.query(recordAppliedSql(this.conn.schema)).catch((err) => {
      throw translateError(err, this.conn.label);
    });
  }
}

async function readAppliedLogId(
  request: sql.Request,
  conn: MssqlConnection,
  job: string,
  lock: boolean,
): Promise<string | null> {
  try {
    const result = await request
      .input('job', sql.NVarChar(200), job)
      .query(appliedLogIdSql(conn.schema, lock));
    const row = (result.recordset as { log_id: string }[] | undefined)?.[0];
    return row?.log_id ?? null;
  } catch (err) {
    throw translateError(err, conn.label);
  }
}

/** A TargetWriter over one mssql connection pool. */
export class MssqlTarget implements TargetWriter {
  readonly engine = 'mssql' as const;

  readonly ddlInTransaction = true;

  private constructor(private readonly conn: MssqlConnection) {}

  addColumnSql(table: string, column: ColumnInfo): string {
    return addColumnSql(tableName(table, this.conn.schema), column);
  }

  static async open(config: DbConfig): Promise<MssqlTarget> {
    return new MssqlTarget(await connect(config));
  }

  async columns(table: string): Promise<TargetColumn[] | null> {
    const name = tableName(table, this.conn.schema);
    const columns = await reflectColumns(this.conn.pool.request(), name).catch((err) => {
      throw translateError(err, this.conn.label, name.label);
    });
    if (columns.length === 0) return null;
    // The replica's own columns of types we cannot carry are none of our business until a
    // delta maps one, and then applyRows says so.
    return columns
      .filter((c) => c.type !== undefined)
      .map((c) => ({ ...publicColumn(c), ...(c.computed ? { generated: true } : {}) }));
  }

  async prepare(): Promise<void> {
    await this.conn.pool
      .request()
      .batch(prepareSql(this.conn.schema))
      .catch((err) => {
        throw translateError(err, this.conn.label);
      });
  }

  appliedLogId(job: string): Promise<string | null> {
    return readAppliedLogId(this.conn.pool.request(), this.conn, job, false);
  }

  async transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T> {
    const tx = new sql.Transaction(this.conn.pool);
    let aborted = false;
    // With XACT_ABORT the server may roll back on its own; rolling back again would fail.
    tx.on('rollback', (byServer: boolean) => {
      aborted = aborted || byServer;
    });
    try {
      await tx.begin(sql.ISOLATION_LEVEL.READ_COMMITTED);
    } catch (err) {
      throw translateError(err, this.conn.label);
    }
    let result: T;
    try {
      const work = new Transaction(this.conn, tx);
      result = await fn(work);
      await work.restoreForeignKeys();
    } catch (err) {
      if (!aborted) await tx.rollback().catch(() => {});
      throw err;
    }
    try {
      await tx.commit();
    } catch (err) {
      if (!aborted) await tx.rollback().catch(() => {});
      throw translateError(err, this.conn.label);
    }
    return result;
  }

  /**
   * Every row of the replica table in key order (verify), in the delta's types: a column may
   * hold another type than the source's when load wrote it so (see wireRead).
   */
  async *readAll(request: ReadAllRequest): AsyncGenerator<WireRow> {
    const table = tableName(request.table, this.conn.schema);
    const columns = await reflectColumns(this.conn.pool.request(), table).catch((err) => {
      throw translateError(err, this.conn.label, table.label);
    });
    if (columns.length === 0) {
      throw new ConfigError(
        `target table ${table.label} does not exist in SQL Server ${this.conn.label}`,
      );
    }
    const find = (name: string) => {
      const found =
        columns.find((c) => c.name === name) ??
        columns.find((c) => c.name.toLowerCase() === name.toLowerCase());
      if (!found) throw new ConfigError(`target table ${table.label} has no column ${name}`);
      return found;
    };
    const reads = request.columns.map((w) => {
      const column = find(w.name);
      const read = wireRead(column, w.type, { lenient: true });
      if (!read) {
        throw new ConfigError(
          `target table ${table.label}: column ${column.name} is ${column.nativeType}, which cannot be read as ${w.type}`,
        );
      }
      return read;
    });
    const query = readAllQuery(
      table,
      reads.map((r) => r.sql),
      request.key.map(find),
    );
    try {
      yield* toWireRows(
        streamRows(this.conn.pool.request(), query),
        reads.map((r) => r.read),
      );
    } catch (err) {
      throw translateError(err, this.conn.label, table.label);
    }
  }

  /** Runs the after-load hook's SQL as one batch in autocommit (it may hold several statements). */
  async execute(statement: string): Promise<void> {
    await this.conn.pool
      .request()
      .batch(statement)
      .catch((err) => {
        throw translateError(err, this.conn.label);
      });
  }

  async close(): Promise<void> {
    await this.conn.pool.close();
  }
}
