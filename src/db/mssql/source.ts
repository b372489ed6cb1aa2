/**
 * Reading a SQL Server source: reflection, high-water marks, and streamed reads for every
 * capture mode (logId ranges, timestamp keysets, whole tables, the change log).
 *
 * Read-only except `executeDdl` (only `deltasync capture --apply` calls it): extract works with
 * a db_datareader login (plus VIEW SERVER STATE for the high-water mark of non-rowversion
 * logIds; see high-water.ts). Reads run at READ COMMITTED (tedious sets it on every
 * connection), one statement each, so a read never sees a row that is later rolled back.
 */
import { ConfigError } from '../../errors.js';
import { CHANGELOG_LOGID_COLUMN } from '../types.js';
import { changelogWindowByHighWater, logIdWindowByHighWater } from '../window.js';
import type {
  CaptureDdl,
  CaptureRequest,
  ChangelogRequest,
  ChangelogRow,
  ColumnInfo,
  DbConfig,
  ChangelogWindow,
  ChangelogWindowRequest,
  HighWaterRequest,
  LogIdWindow,
  LogIdWindowRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
} from '../types.js';
import { captureDdl, readChangelogQuery, toChangelogRow } from './capture.js';
import { reflectColumns } from './catalog.js';
import { connect, translateError, type MssqlConnection } from './connection.js';
import { bind } from './driver.js';
import { stableHighWater } from './high-water.js';
import { readKeysetQuery, timestampColumn } from './keyset.js';
import {
  maxLogIdQuery,
  nthLogIdQuery,
  readAllQuery,
  readChangesQuery,
  REFERENCED_TABLES_SQL,
  referencedNames,
  serverTimeSql,
  serverTimeWire,
  tableName,
  type Query,
  type TableName,
} from './sql.js';
import { streamRows, toWireRows } from './stream.js';
import { publicColumn, quoteIdent, wireRead, type MssqlColumn, type WireReader } from './types.js';

export { bind };
export { toWireRows } from './stream.js';

/** A column to read: the SQL that renders it and the reader that makes it a wire value. */
interface ColumnRead {
  sql: string;
  read: WireReader;
}

/** A SourceReader over one mssql connection pool. */
export class MssqlSource implements SourceReader {
  readonly engine = 'mssql' as const;
  private readonly reflected = new Map<string, MssqlColumn[]>();
  private readonly warned = new Set<string>();
  /**
   * Where warnings go (a high-water mark less safe than it should be). The engine contract gives
   * adapters no logger, so by default they go to Node's process warnings (stderr), once each.
   */
  onWarning: (message: string) => void = (message) =>
    process.emitWarning(message, { code: 'DELTASYNC_MSSQL' });

  private constructor(private readonly conn: MssqlConnection) {}

  static async open(config: DbConfig): Promise<MssqlSource> {
    return new MssqlSource(await connect(config));
  }

  private table(table: string): TableName {
    return tableName(table, this.conn.schema);
  }

  /** The table's columns, cached for the life of the reader; ConfigError when it is missing. */
  private async reflect(table: TableName): Promise<MssqlColumn[]> {
    const cached = this.reflected.get(table.quoted);
    if (cached) return cached;
    let columns: MssqlColumn[];
    try {
      columns = await reflectColumns(this.conn.pool.request(), table);
    } catch (err) {
      throw translateError(err, this.conn.label, table.label);
    }
    if (columns.length === 0) {
      throw new ConfigError(
        `table ${table.label} does not exist in SQL Server ${this.conn.label}`,
        {
          hint: 'check the table name and schema, and that the login may see it',
        },
      );
    }
    this.reflected.set(table.quoted, columns);
    return columns;
  }

  private async column(table: TableName, name: string): Promise<MssqlColumn> {
    const columns = await this.reflect(table);
    const found =
      columns.find((c) => c.name === name) ??
      columns.find((c) => c.name.toLowerCase() === name.toLowerCase());
    if (!found) throw new ConfigError(`table ${table.label} has no column ${name}`);
    return found;
  }

  /**
   * How to read the wanted columns (over `prefix`, e.g. `t.` in a join). A text column may be
   * declared json (its content is a JSON document); nothing else is read as another type.
   */
  private async reads(
    table: TableName,
    wanted: ColumnInfo[],
    prefix = '',
  ): Promise<{ columns: MssqlColumn[]; reads: ColumnRead[] }> {
    const columns: MssqlColumn[] = [];
    const reads: ColumnRead[] = [];
    for (const w of wanted) {
      const column = await this.column(table, w.name);
      const read = wireRead(column, w.type, { expr: `${prefix}${quoteIdent(column.name)}` });
      if (!read) {
        throw new ConfigError(
          `table ${table.label}: column ${column.name} is ${column.nativeType} (${column.type ?? 'unsupported'}), not ${w.type}`,
        );
      }
      columns.push(column);
      reads.push(read);
    }
    return { columns, reads };
  }

  /** Streams a query's rows, errors translated to name the table. */
  private async *stream(table: TableName, query: Query): AsyncGenerator<unknown[]> {
    try {
      yield* streamRows(this.conn.pool.request(), query);
    } catch (err) {
      throw translateError(err, this.conn.label, table.label);
    }
  }

  /** Runs one statement with its typed parameters and returns its rows, errors translated. */
  private async rows<T>(query: Query, table?: TableName): Promise<T[]> {
    try {
      const result = await bind(this.conn.pool.request(), query).query<T>(query.text);
      return result.recordset ?? [];
    } catch (err) {
      throw translateError(err, this.conn.label, table?.label);
    }
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    const name = this.table(table);
    const columns = await this.reflect(name);
    const unsupported = columns.filter((c) => !c.type);
    if (unsupported.length > 0) {
      const list = unsupported.map((c) => `${c.name} (${c.nativeType})`).join(', ');
      throw new ConfigError(`table ${name.label}: deltasync cannot carry column ${list}`, {
        hint: 'read the table through a view that leaves the column out or converts it',
      });
    }
    return columns.map(publicColumn);
  }

  /**
   * For rowversion, the highest value that no open transaction can still undercut (see
   * maxLogIdQuery), which may be below MAX(col): extract uses this as its high-water mark, and a
   * row committed later with a lower rowversion would otherwise be skipped forever.
   */
  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    const name = this.table(table);
    const logId = await this.column(name, logIdColumn);
    const [row] = await this.rows<{ max_log_id: string | null; stable_log_id: string | null }>(
      { text: maxLogIdQuery(name, logId), params: [] },
      name,
    );
    const max = row?.max_log_id ?? null;
    const stable = row?.stable_log_id ?? null;
    if (max === null || stable === null) return max;
    return BigInt(stable) < BigInt(max) ? stable : max;
  }

  async *readChanges(request: ReadChangesRequest): AsyncGenerator<WireRow> {
    const name = this.table(request.table);
    const { columns, reads } = await this.reads(name, request.columns);
    const logId = await this.column(name, request.logIdColumn);
    const query = readChangesQuery(name, columns, logId, request.after, request.upTo);
    yield* toWireRows(
      this.stream(name, query),
      reads.map((r) => r.read),
    );
  }

  // TEMP until capture-mysql: the high-water windows of before exact capture, unchanged.
  async beginSnapshot(): Promise<void> {}

  // TEMP until capture-mysql
  logIdWindow(request: LogIdWindowRequest): Promise<LogIdWindow> {
    return logIdWindowByHighWater(this, request);
  }

  // TEMP until capture-mysql
  changelogWindow(request: ChangelogWindowRequest): Promise<ChangelogWindow> {
    return changelogWindowByHighWater(this, request);
  }

  // TEMP until capture-mysql: no check yet.
  async checkCapture(): Promise<void> {}

  async stableHighWater(request: HighWaterRequest): Promise<string | null> {
    const columns = [];
    for (const t of request.tables) {
      const table = this.table(t.table);
      columns.push({ table, logId: await this.column(table, t.logIdColumn) });
    }
    return stableHighWater(columns, request.maxWaitSeconds, {
      query: (text) => this.rows<Record<string, unknown>>({ text, params: [] }),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      now: () => Date.now(),
      warn: (message) => {
        if (this.warned.has(message)) return;
        this.warned.add(message);
        this.onWarning(message);
      },
    });
  }

  async nthLogId(request: NthLogIdRequest): Promise<string | null> {
    const tables = [];
    for (const t of request.tables) {
      const table = this.table(t.table);
      tables.push({ table, logId: await this.column(table, t.logIdColumn), after: t.after });
    }
    const query = nthLogIdQuery(tables, request.upTo, request.n);
    const [row] = await this.rows<{ nth_log_id: string }>(query, tables[0]?.table);
    return row?.nth_log_id ?? null;
  }

  async *readKeyset(request: ReadKeysetRequest): AsyncGenerator<WireRow> {
    const name = this.table(request.table);
    const { reads } = await this.reads(name, request.columns);
    const ts = timestampColumn(await this.column(name, request.tsColumn));
    const key = [];
    for (const k of request.key) {
      const column = await this.column(name, k);
      const type = request.columns.find((c) => c.name === k)?.type ?? column.type;
      if (!type) throw new ConfigError(`table ${name.label}: key column ${k} has no type`);
      key.push({ column, type });
    }
    const query = readKeysetQuery({
      table: name,
      select: reads.map((r) => r.sql),
      ts,
      key,
      after: request.after,
      upTo: request.upTo,
      limit: request.limit,
    });
    yield* toWireRows(
      this.stream(name, query),
      reads.map((r) => r.read),
    );
  }

  async *readAll(request: ReadAllRequest): AsyncGenerator<WireRow> {
    const name = this.table(request.table);
    const { reads } = await this.reads(name, request.columns);
    const key = [];
    for (const k of request.key) key.push(await this.column(name, k));
    const query = readAllQuery(
      name,
      reads.map((r) => r.sql),
      key,
    );
    yield* toWireRows(
      this.stream(name, query),
      reads.map((r) => r.read),
    );
  }

  async *readChangelog(request: ChangelogRequest): AsyncGenerator<ChangelogRow> {
    const log = this.table(request.changelog);
    const logId = await this.column(log, CHANGELOG_LOGID_COLUMN);
    const name = this.table(request.table);
    const { reads } = await this.reads(name, request.columns, 't.');
    const key: MssqlColumn[] = [];
    const keyReads: ColumnRead[] = [];
    for (const [i, k] of request.key.entries()) {
      const column = await this.column(name, k);
      const type = request.columns.find((c) => c.name === k)?.type ?? column.type;
      const read = type && wireRead(column, type, { expr: `k.k${i}` });
      if (!read) throw new ConfigError(`table ${name.label}: key column ${k} cannot be read`);
      key.push(column);
      keyReads.push(read);
    }
    const query = readChangelogQuery({
      changelog: log,
      logId,
      configured: request.table,
      table: name,
      key,
      keySelect: keyReads.map((r) => r.sql),
      rowSelect: reads.map((r) => r.sql),
      after: request.after,
      upTo: request.upTo,
    });
    const keyReaders = keyReads.map((r) => r.read);
    const rowReaders = reads.map((r) => r.read);
    for await (const row of this.stream(name, query)) {
      yield toChangelogRow(row, keyReaders, rowReaders);
    }
  }

  async referencedTables(table: string): Promise<string[]> {
    const name = this.table(table);
    await this.reflect(name);
    const rows = await this.rows<{ schema_name: string; table_name: string }>(
      {
        text: REFERENCED_TABLES_SQL,
        params: [{ name: 'table', type: 'NVarChar', length: 600, value: name.quoted }],
      },
      name,
    );
    return referencedNames(rows, this.conn.schema);
  }

  async serverTime(type: 'timestamp' | 'timestamptz'): Promise<string> {
    const [row] = await this.rows<{ now: string }>({ text: serverTimeSql(type), params: [] });
    return serverTimeWire(type, row!.now);
  }

  // TEMP until capture-mysql: async now, same DDL.
  async captureDdl(request: CaptureRequest): Promise<CaptureDdl> {
    return captureDdl(request, this.conn.schema);
  }

  /**
   * Runs each statement as a batch of its own, in order, in autocommit: CREATE TRIGGER must be
   * the first statement of its batch, and batch() (unlike query(), which wraps the text in
   * sp_executesql) sends the text as it is.
   */
  async executeDdl(statements: string[]): Promise<void> {
    for (const statement of statements) {
      try {
        await this.conn.pool.request().batch(statement);
      } catch (err) {
        throw translateError(err, this.conn.label);
      }
    }
  }

  async close(): Promise<void> {
    await this.conn.pool.close();
  }
}
