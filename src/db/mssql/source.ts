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
import { changelogWindowByHighWater, logIdWindowByHighWater } from '../high-water.js';
import type {
  PruneChangelogRequest,
  CaptureDdl,
  CaptureRequest,
  ChangelogRequest,
  ChangelogRow,
  ColumnInfo,
  DbConfig,
  ChangelogWindow,
  ChangelogWindowRequest,
  HighWaterMark,
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
import sql from 'mssql';
import {
  captureDdl,
  captureStateSql,
  missingCapture,
  readChangelogQuery,
  toChangelogRow,
} from './capture.js';
import {
  formatPosition,
  maxInWindowQuery,
  nextPosition,
  nthInWindowQuery,
  parsePosition,
  SNAPSHOT_ALLOWED_SQL,
  STABLE_ROWVERSION_SQL,
  visibleAboveQuery,
} from './window.js';
import { reflectColumns } from './catalog.js';
import { connect, translateError, type MssqlConnection } from './connection.js';
import { bind } from './driver.js';
import { pruneChangelogQuery } from './prune.js';
import { stableHighWater } from './high-water.js';
import { readKeysetQuery, timestampColumn } from './keyset.js';
import {
  logIdKind,
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
import { streamRows, toWireRows } from './read.js';
import { publicColumn, quoteIdent, wireRead, type MssqlColumn, type WireReader } from './types.js';

export { bind };
export { toWireRows } from './read.js';

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
  /** The delta's SNAPSHOT transaction, when one is open. */
  private tx: sql.Transaction | null = null;
  /** Whether the database allows SNAPSHOT isolation (read once). */
  private snapshotAllowed: boolean | undefined;
  /** The stable rowversion mark read just before the snapshot opened (see window.ts). */
  private markBeforeSnapshot: string | null = null;
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
      yield* streamRows(this.request(), query);
    } catch (err) {
      throw translateError(err, this.conn.label, table.label);
    }
  }

  /** Runs one statement with its typed parameters and returns its rows, errors translated. */
  private async rows<T>(query: Query, table?: TableName): Promise<T[]> {
    try {
      const result = await bind(this.request(), query).query<T>(query.text);
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

  /**
   * The delta's snapshot: ends the one in use, reads the stable rowversion mark, then opens a
   * SNAPSHOT transaction that every read until the next call runs in (see window.ts for why the
   * mark comes first). A database without ALLOW_SNAPSHOT_ISOLATION reads each statement at
   * READ COMMITTED instead, as before: nothing is lost, but a delta is then no consistent cut
   * (said once, with what to run).
   */
  async beginSnapshot(): Promise<void> {
    await this.endSnapshot();
    if (this.snapshotAllowed === undefined) {
      const [row] = await this.rows<{ ok: number }>({ text: SNAPSHOT_ALLOWED_SQL, params: [] });
      this.snapshotAllowed = Number(row?.ok) === 1;
      if (!this.snapshotAllowed) {
        this.warnOnce(
          `SQL Server ${this.conn.label}: snapshot isolation is off, so the tables of a delta are read one statement at a time ` +
            'and a delta may not be one consistent cut of the source (a child row may travel before its new parent); ' +
            'ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON',
        );
      }
    }
    const [mark] = await this.rows<{ stable: string | null }>({
      text: STABLE_ROWVERSION_SQL,
      params: [],
    });
    this.markBeforeSnapshot = mark?.stable ?? '0';
    if (this.snapshotAllowed) {
      const tx = new sql.Transaction(this.conn.pool);
      try {
        await tx.begin(sql.ISOLATION_LEVEL.SNAPSHOT);
      } catch (err) {
        throw translateError(err, this.conn.label);
      }
      this.tx = tx;
    }
  }

  /** Ends the snapshot transaction (it only read). */
  private async endSnapshot(): Promise<void> {
    const tx = this.tx;
    this.tx = null;
    this.markBeforeSnapshot = null;
    if (tx) await tx.commit().catch(() => undefined);
  }

  /** A request in the delta's snapshot when one is open, else on the pool. */
  private request(): sql.Request {
    return this.tx ? new sql.Request(this.tx) : this.conn.pool.request();
  }

  private warnOnce(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.onWarning(message);
  }

  /**
   * logid mode: the stable high-water mark (exact for rowversion without waiting; IDENTITY and
   * sequences wait for the tables' writers), outside any snapshot, then a new snapshot after it.
   */
  async logIdWindow(request: LogIdWindowRequest): Promise<LogIdWindow> {
    await this.endSnapshot();
    const window = await logIdWindowByHighWater(this, request);
    await this.beginSnapshot();
    return window;
  }

  /**
   * changelog mode: the log rows at or below the stable mark read before the snapshot, plus
   * those above it the snapshot shows (see window.ts), cut to `limit` rows. No wait.
   */
  async changelogWindow(request: ChangelogWindowRequest): Promise<ChangelogWindow> {
    const log = this.table(request.changelog);
    const logId = await this.column(log, CHANGELOG_LOGID_COLUMN);
    // A change log of another kind (made by hand) keeps the waiting mark.
    if (logIdKind(logId) !== 'rowversion') return changelogWindowByHighWater(this, request);
    if (this.markBeforeSnapshot === null) await this.beginSnapshot();
    const stable = this.markBeforeSnapshot!;
    const after =
      request.after === null ? { stable: '0', extra: [] } : parsePosition(request.after);
    const visible = (
      await this.rows<{ id: string }>(visibleAboveQuery(log, logId, after, stable), log)
    ).map((r) => r.id);
    let next = nextPosition(after, stable, visible);
    if (request.after === null) {
      // Never read: the tables are seeded from this snapshot, which holds all of `next`.
      const at = formatPosition(next);
      return { after: at, cursor: at, highLogId: null, limited: false };
    }
    const col = quoteIdent(logId.name);
    let limited = false;
    if (request.limit) {
      const [nth] = await this.rows<{ id: string | null }>(
        nthInWindowQuery(log, col, after, next, request.limit),
        log,
      );
      if (nth?.id) {
        const [last] = await this.rows<{ id: string | null }>(
          maxInWindowQuery(log, col, after, next),
          log,
        );
        if (last?.id && BigInt(nth.id) < BigInt(last.id)) {
          next = nextPosition(
            after,
            BigInt(nth.id) < BigInt(stable) ? nth.id : stable,
            visible.filter((v) => BigInt(v) <= BigInt(nth.id!)),
          );
          limited = true;
        }
      }
    }
    const [high] = await this.rows<{ id: string | null }>(
      maxInWindowQuery(log, col, after, next),
      log,
    );
    if (!high?.id)
      return { after: request.after, cursor: request.after, highLogId: null, limited: false };
    return { after: request.after, cursor: formatPosition(next), highLogId: high.id, limited };
  }

  /** Refuses (78) a change log or a table trigger that is missing or disabled. */
  async checkCapture(request: CaptureRequest): Promise<void> {
    const [state] = await this.rows<Record<string, unknown>>({
      text: captureStateSql(request, this.conn.schema),
      params: [],
    });
    const problem = missingCapture(request, state ?? {});
    if (problem !== null) {
      throw new ConfigError(`${problem} in SQL Server ${this.conn.label}`, {
        hint: 'run deltasync capture --apply',
      });
    }
  }

  async stableHighWater(request: HighWaterRequest): Promise<HighWaterMark> {
    const columns = [];
    for (const t of request.tables) {
      const table = this.table(t.table);
      columns.push({ table, logId: await this.column(table, t.logIdColumn), after: t.after });
    }
    return stableHighWater(columns, request.maxWaitSeconds, {
      query: (text) => this.rows<Record<string, unknown>>({ text, params: [] }),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      now: () => Date.now(),
      warn: (message) => this.warnOnce(message),
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

  /** The DDL needs no upgrade from older deltasyncs: positions read the same change log. */
  async captureDdl(request: CaptureRequest): Promise<CaptureDdl> {
    return captureDdl(request, this.conn.schema);
  }

  /**
   * Runs each statement as a batch of its own, in order, in autocommit: CREATE TRIGGER must be
   * the first statement of its batch, and batch() (unlike query(), which wraps the text in
   * sp_executesql) sends the text as it is.
   */
  /** See prune.ts: batches of DELETE TOP (n), each autocommitted, outside any snapshot. */
  async pruneChangelog(req: PruneChangelogRequest): Promise<number> {
    await this.endSnapshot();
    const log = this.table(req.changelog);
    const logId = await this.column(log, CHANGELOG_LOGID_COLUMN);
    const query = pruneChangelogQuery(
      log,
      logId.name,
      logIdKind(logId) === 'rowversion',
      req.position,
      req.olderThanSeconds,
      req.batchSize,
    );
    let total = 0;
    for (;;) {
      let deleted: number;
      try {
        const result = await bind(this.request(), query).query(query.text);
        deleted = result.rowsAffected.reduce((n, c) => n + c, 0);
      } catch (err) {
        throw translateError(err, this.conn.label, log.label);
      }
      total += deleted;
      if (deleted < req.batchSize) return total;
    }
  }

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
    await this.endSnapshot();
    await this.conn.pool.close();
  }
}
