/**
 * The MySQL/MariaDB SourceReader.
 *
 * Snapshots: every read of a delta (the change-log window, the rows, the change log joined to its
 * tables) runs inside one read-only transaction started WITH CONSISTENT SNAPSHOT (beginSnapshot,
 * or lazily by the first read), so the delta is one consistent cut of the source.
 *   - changelog mode tracks gaps (`gaps.ts`): the window is what this snapshot shows of the change
 *     log and the previous one did not, whatever order transactions took their ids in. No wait.
 *   - logid mode waits (`high-water.ts`): a logId column has no history to find gaps in (an
 *     update moves a row's logId), so logIdWindow takes the maximum, waits for every read-write
 *     transaction running then, and opens a new snapshot after the wait.
 * The metadata reads (columns, referencedTables) run in whichever state the connection is in.
 */
import type { DbConfig, HighWaterMark, HighWaterRequest } from '../types.js';
import type {
  PruneChangelogRequest,
  CaptureDdl,
  CaptureRequest,
  ChangelogRequest,
  ChangelogRow,
  ChangelogWindow,
  ChangelogWindowRequest,
  ColumnInfo,
  LogIdWindow,
  LogIdWindowRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
  WireValue,
} from '../types.js';
import { ConfigError } from '../../errors.js';
import {
  captureDdl,
  changelogSql,
  keyConverter,
  missingCapture,
  TRIGGERS_SQL,
  type CaptureContext,
  type InstalledTrigger,
} from './capture.js';
import { splitTable } from './catalog.js';
import { closeSession, openSession, run, type Session } from './connection.js';
import { deleteIdsSql, pruneBound, pruneCandidatesSql } from './prune.js';
import {
  advanceGaps,
  compareDecimal,
  formatGapCursor,
  needsRunning,
  openRanges,
  parseGapCursor,
  type GapCursor,
  type IdRange,
} from './gaps.js';
import { freshRunningWriters, stableHighWater, type HighWaterState } from './high-water.js';
import { nativeColumns } from './catalog.js';
import { readPlan, RowStreams, wireRowConverter, type ReadPlan } from './read.js';
import {
  changesSql,
  holesSql,
  keysetSql,
  maxLogIdSql,
  nthAfterSql,
  nthLogIdSql,
  positionWindowSql,
  readAllSql,
  REFERENCED_TABLES_SQL,
  visibleInSql,
} from './sql.js';
import { logicalTypeOf, quoteIdent, quoteTable, writeEncoder } from './types.js';

export interface MysqlSourceOptions {
  /**
   * Where the reader's one warning goes (INNODB_TRX unreadable: see `high-water.ts`). The
   * default is a process warning, which Node prints on stderr.
   */
  warn?: (message: string) => void;
}

/** Privilege errors of DDL, with what to grant. */
const DDL_PRIVILEGE_HINTS: Record<number, string> = {
  // ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR
  1142: 'grant CREATE, DROP, INDEX and INSERT on the change log and TRIGGER on the captured tables',
  1143: 'grant CREATE, DROP, INDEX and INSERT on the change log and TRIGGER on the captured tables',
  // ER_SPECIFIC_ACCESS_DENIED_ERROR
  1227: 'grant the privilege named above to the user that runs deltasync capture',
  // ER_BINLOG_CREATE_ROUTINE_NEED_SUPER: binary logging is on
  1419: 'with binary logging on, creating triggers needs SUPER, or SET GLOBAL log_bin_trust_function_creators = 1',
};

/** Reads one MySQL/MariaDB database; see the module comment for its snapshots. */
export class MysqlSource implements SourceReader {
  readonly engine = 'mysql' as const;
  private readonly streams: RowStreams;
  private inSnapshot = false;
  private readonly highWater: HighWaterState;

  private constructor(
    private readonly session: Session,
    /** MariaDB or MySQL (they replace triggers differently), and the default database. */
    readonly context: CaptureContext,
    warn: (message: string) => void,
  ) {
    this.streams = new RowStreams(session);
    this.highWater = { trxViewDenied: false, warn };
  }

  /** Connects; no transaction is open until the first row read. */
  static async open(config: DbConfig, options: MysqlSourceOptions = {}): Promise<MysqlSource> {
    const session = await openSession(config, false);
    try {
      // WITH CONSISTENT SNAPSHOT only means something under REPEATABLE READ.
      await run(session, 'SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      // Cursor values are sent as literals with backslash escapes (see sqlString).
      await run(
        session,
        "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','))",
      );
      const [server] = await run<{ v: string; db: string | null }[]>(
        session,
        'SELECT VERSION() AS v, DATABASE() AS db',
      );
      const context: CaptureContext = {
        flavor: /mariadb/i.test(server?.v ?? '') ? 'mariadb' : 'mysql',
        database: server?.db ?? null,
      };
      const warn =
        options.warn ??
        ((message: string) =>
          process.emitWarning(message, { code: 'DELTASYNC_MYSQL_NO_TRX_VIEW' }));
      return new MysqlSource(session, context, warn);
    } catch (err) {
      await closeSession(session);
      throw err;
    }
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    this.streams.assertIdle();
    return (await nativeColumns(this.session, table, 'source')).map((c) => ({
      name: c.name,
      type: logicalTypeOf(c, table),
      nativeType: c.columnType,
    }));
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    await this.endSnapshot();
    const rows = await run<{ m: unknown }[]>(
      this.session,
      `SELECT MAX(${quoteIdent(logIdColumn)}) AS m FROM ${quoteTable(table)}`,
      undefined,
      table,
    );
    const max = rows[0]?.m;
    return max === null || max === undefined ? null : String(max);
  }

  /** The delta's snapshot: ends the one in use and opens a new one. */
  async beginSnapshot(): Promise<void> {
    await this.endSnapshot();
    await this.snapshot();
  }

  /**
   * The highest logId no transaction still running can commit below (see high-water.ts); null
   * with `heldBy` when such transactions did not finish within maxWaitSeconds. Outside the
   * delta's snapshot: reads after it need a new one.
   */
  async stableHighWater(request: HighWaterRequest): Promise<HighWaterMark> {
    if (request.tables.length === 0) return { high: null };
    await this.endSnapshot();
    return stableHighWater(this.session, request, this.highWater);
  }

  /**
   * logid mode: waits for the transactions that could still commit a logId at or below the
   * maximum (naming them when they hold the tables back), cuts to the row limit, then opens the
   * snapshot the rows are read in.
   */
  async logIdWindow(request: LogIdWindowRequest): Promise<LogIdWindow> {
    const { tables, limit, maxWaitSeconds } = request;
    if (tables.length === 0) return { upTo: null, limited: false };
    await this.endSnapshot();
    const mark = await stableHighWater(this.session, { tables, maxWaitSeconds }, this.highWater);
    await this.snapshot();
    let upTo = mark.high;
    if (upTo === null) return { upTo: null, limited: false, heldBy: mark.heldBy };
    if (tables.every((t) => compareDecimal(t.after, upTo!) >= 0)) {
      return { upTo: null, limited: false };
    }
    let limited = false;
    if (limit) {
      const nth = await this.nthLogId({ tables, upTo, n: limit });
      if (nth !== null && compareDecimal(nth, upTo) < 0) {
        upTo = nth;
        limited = true;
      }
    }
    return { upTo, limited };
  }

  /**
   * changelog mode: the change-log rows this snapshot shows and `after` does not, with the gaps
   * the next window must look at again (see gaps.ts). Runs in the delta's snapshot.
   */
  async changelogWindow(request: ChangelogWindowRequest): Promise<ChangelogWindow> {
    const { changelog, limit } = request;
    await this.snapshot();
    const one = async (sql: string, column: string) => {
      const [row] = await run<Record<string, unknown>[]>(this.session, sql, undefined, changelog);
      const v = row?.[column];
      return v === null || v === undefined ? null : String(v);
    };
    const max = await one(maxLogIdSql(changelog), 'm');
    if (request.after === null) {
      // Nothing shipped yet: the position is this snapshot, so that tables seeded from it start
      // right after it; its gaps are the transactions it does not see yet.
      const position = await this.gapPosition(
        changelog,
        { high: '0', gaps: [] },
        max ?? '0',
        [],
        request.maxWaitSeconds,
      );
      return { after: position, cursor: position, highLogId: null, limited: false };
    }
    const previous = parseGapCursor(request.after);
    let upTo = max !== null && compareDecimal(max, previous.high) > 0 ? max : previous.high;
    let limited = false;
    if (limit && upTo !== previous.high) {
      const nth = await one(nthAfterSql(changelog, previous.high, limit), 'l');
      if (nth !== null && compareDecimal(nth, upTo) < 0) {
        upTo = nth;
        limited = true;
      }
    }
    const reopened = openRanges(previous);
    const filled =
      reopened.length === 0
        ? []
        : (await run<{ l: string }[]>(this.session, visibleInSql(changelog, reopened))).map(
            (r) => r.l,
          );
    const cursor = await this.gapPosition(
      changelog,
      previous,
      upTo,
      filled,
      request.maxWaitSeconds,
    );
    let highLogId: string | null = compareDecimal(upTo, previous.high) > 0 ? upTo : null;
    for (const id of filled) {
      if (highLogId === null || compareDecimal(id, highLogId) > 0) highLogId = id;
    }
    return { after: request.after, cursor, highLogId, limited };
  }

  /** The position after `previous` once (previous.high, upTo] and the filled gaps are shipped. */
  private async gapPosition(
    changelog: string,
    previous: GapCursor,
    upTo: string,
    filled: string[],
    maxWaitSeconds: number,
  ): Promise<string> {
    const holes =
      compareDecimal(upTo, previous.high) > 0
        ? (
            await run<{ a: string; b: string }[]>(
              this.session,
              holesSql(changelog, previous.high, upTo),
            )
          ).map((r): IdRange => [r.a, r.b])
        : [];
    const running = needsRunning(previous, holes, filled)
      ? await freshRunningWriters(this.session, this.highWater, maxWaitSeconds)
      : null;
    const next = advanceGaps(previous, { high: upTo, holes, filled, running });
    if (next.dropped.length > 0) {
      this.highWater.warn(
        `MariaDB/MySQL ${this.session.where}: gave up change-log ids ${next.dropped.map(([a, b]) => (a === b ? a : `${a}-${b}`)).join(', ')} ` +
          'without knowing whether their transactions rolled back (more open gaps than extract keeps, and no PROCESS privilege to tell); ' +
          'GRANT PROCESS ON *.* to the extract user',
      );
    }
    return formatGapCursor(next.cursor);
  }

  /** Refuses a change log or a captured table whose triggers are missing (78). */
  async checkCapture(request: CaptureRequest): Promise<void> {
    const [schema] = splitTable(request.changelog);
    const found: InstalledTrigger[] = [];
    const schemas = new Set(request.tables.map((t) => splitTable(t.table)[0]));
    for (const where of schemas) {
      found.push(...(await run<InstalledTrigger[]>(this.session, TRIGGERS_SQL, [where])));
    }
    const tables = await run<{ n: number }[]>(
      this.session,
      'SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?',
      [schema, splitTable(request.changelog)[1]],
    );
    const problem = missingCapture(request, found, Number(tables[0]?.n ?? 0) > 0);
    if (problem === null) return;
    if (problem.triggersHidden && !(await this.maySeeTriggers())) {
      // information_schema.TRIGGERS shows only the triggers of tables we hold TRIGGER on.
      this.highWater.warn(
        `MariaDB/MySQL ${this.session.where}: cannot check the change-log triggers (the extract user lacks the TRIGGER privilege, which information_schema.TRIGGERS requires); ` +
          'extract goes on without checking',
      );
      return;
    }
    throw new ConfigError(`${problem.message} in MariaDB/MySQL ${this.session.where}`, {
      hint: 'run deltasync capture --apply',
    });
  }

  /** Whether the current user holds TRIGGER somewhere (information_schema then shows triggers). */
  private async maySeeTriggers(): Promise<boolean> {
    const rows = await run<{ n: number }[]>(
      this.session,
      "SELECT (SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE = 'TRIGGER')" +
        " + (SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE PRIVILEGE_TYPE = 'TRIGGER')" +
        " + (SELECT COUNT(*) FROM information_schema.TABLE_PRIVILEGES WHERE PRIVILEGE_TYPE = 'TRIGGER') AS n",
    );
    return Number(rows[0]?.n ?? 0) > 0;
  }

  async nthLogId(request: NthLogIdRequest): Promise<string | null> {
    this.streams.assertIdle();
    if (request.tables.length === 0) return null;
    const rows = await run<{ l: unknown }[]>(
      this.session,
      nthLogIdSql(request),
      undefined,
      request.tables.map((t) => t.table).join(', '),
    );
    const nth = rows[0]?.l;
    return nth === null || nth === undefined ? null : String(nth);
  }

  async *readChanges(request: ReadChangesRequest): AsyncIterable<WireRow> {
    const { table, logIdColumn, after, upTo } = request;
    const plan = await this.plan(table, request.columns);
    const sql = changesSql(table, plan.selects, logIdColumn, after, upTo);
    yield* this.rows(sql, plan, table);
  }

  async *readKeyset(request: ReadKeysetRequest): AsyncIterable<WireRow> {
    const { table, tsColumn, key, after } = request;
    const plan = await this.plan(table, request.columns);
    const literal = (name: string, value: WireValue) => {
      const native = plan.native.get(name);
      if (!native) {
        throw new ConfigError(`column ${table}.${name} does not exist in the source`, {
          hint: 'fix timestampColumn or key in the job config',
        });
      }
      const column = { name, type: logicalTypeOf(native, table) };
      try {
        return writeEncoder(column, native.dataType).literal(value);
      } catch (err) {
        throw new ConfigError(
          `table ${table}: the timestamp cursor does not fit: ${(err as Error).message}`,
        );
      }
    };
    const sql = keysetSql({
      table,
      selects: plan.selects,
      tsColumn,
      key,
      upTo: literal(tsColumn, request.upTo),
      after: after && {
        ts: literal(tsColumn, after.ts),
        // A cursor of another length is refused by keysetSql, with a hint.
        key: after.key.map((v, i) => (i < key.length ? literal(key[i]!, v) : '')),
      },
      limit: request.limit,
    });
    yield* this.rows(sql, plan, table);
  }

  async *readAll(request: ReadAllRequest): AsyncIterable<WireRow> {
    const plan = await this.plan(request.table, request.columns);
    yield* this.rows(readAllSql(request.table, plan.selects, request.key), plan, request.table);
  }

  async *readChangelog(request: ChangelogRequest): AsyncIterable<ChangelogRow> {
    const { table } = request;
    const plan = await this.plan(table, request.columns, 't.');
    const key = request.key.map((name) => {
      const native = plan.native.get(name);
      if (!native)
        throw new ConfigError(`key column ${table}.${name} does not exist in the source`);
      return native;
    });
    const sql = changelogSql({
      changelog: request.changelog,
      table,
      key,
      selects: plan.selects,
      window: positionWindowSql(
        parseGapCursor(request.after),
        parseGapCursor(request.upTo),
        request.changelog,
      ),
    });
    const keyConverters = key.map((k) => keyConverter(k, logicalTypeOf(k, table)));
    const rowOf = wireRowConverter(plan.converters);
    const width = key.length;
    await this.snapshot();
    yield* this.streams.stream<ChangelogRow>(
      sql,
      (raw) =>
        Number(raw[0]) === 1
          ? { op: 'upsert', row: rowOf(raw.slice(1 + width)) }
          : {
              op: 'delete',
              key: keyConverters.map((convert, i) => {
                const v = raw[1 + i];
                return v === null || v === undefined ? null : convert(v);
              }),
            },
      { table: `${table} (through ${request.changelog})`, hasGeometry: plan.hasGeometry },
    );
  }

  async referencedTables(table: string): Promise<string[]> {
    this.streams.assertIdle();
    const [schema, name] = splitTable(table);
    const rows = await run<{ name: string }[]>(this.session, REFERENCED_TABLES_SQL, [schema, name]);
    // Named the way the config names this table, so extract can match them.
    return rows.map((r) => (schema === null ? r.name : `${schema}.${r.name}`));
  }

  /**
   * timestamptz: UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. timestamp: the wall clock of the server's
   * default time zone (@@GLOBAL.time_zone), the one applications' DATETIME values are written in
   * unless they set their own; our own session is pinned to UTC.
   */
  async serverTime(type: 'timestamp' | 'timestamptz'): Promise<string> {
    this.streams.assertIdle();
    const [row] = await run<{ now: string | null }[]>(
      this.session,
      type === 'timestamptz'
        ? 'SELECT UTC_TIMESTAMP(6) AS now'
        : "SELECT CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', @@GLOBAL.time_zone) AS now",
    );
    const now = row?.now;
    if (!now) {
      throw new ConfigError(
        `MariaDB/MySQL ${this.session.where} cannot convert the time to its time zone @@GLOBAL.time_zone`,
        { hint: 'load the time zone tables (mariadb-tzinfo-to-sql) or set time_zone to an offset' },
      );
    }
    return type === 'timestamptz' ? `${now.replace(' ', 'T')}Z` : now;
  }

  /** The DDL needs no upgrade from older deltasyncs: gap tracking reads the same change log. */
  async captureDdl(request: CaptureRequest): Promise<CaptureDdl> {
    return captureDdl(request, this.context);
  }

  /** Runs each statement in autocommit (DDL commits implicitly in MySQL anyway). */
  /** See prune.ts: batches of ids read without locks, then deleted by key, each autocommitted. */
  async pruneChangelog(req: PruneChangelogRequest): Promise<number> {
    await this.endSnapshot();
    const bound = pruneBound(req.position);
    if (bound === '0') return 0;
    const seconds = Math.floor(req.olderThanSeconds);
    let total = 0;
    for (;;) {
      const rows = await run<{ log_id: number | string }[]>(
        this.session,
        pruneCandidatesSql(req.changelog),
        [bound, seconds, req.batchSize],
        req.changelog,
      );
      if (rows.length === 0) return total;
      const r = await run<{ affectedRows: number }>(
        this.session,
        deleteIdsSql(req.changelog),
        [rows.map((row) => String(row.log_id))],
        req.changelog,
      );
      total += r.affectedRows;
      if (rows.length < req.batchSize) return total;
    }
  }

  async executeDdl(statements: string[]): Promise<void> {
    await this.endSnapshot();
    for (const sql of statements) {
      try {
        await run(this.session, sql);
      } catch (err) {
        // translateError may have wrapped the driver's error: its errno is then on the cause.
        const e = err as { errno?: number; cause?: { errno?: number } };
        const errno = e.errno ?? e.cause?.errno;
        const hint = errno === undefined ? undefined : DDL_PRIVILEGE_HINTS[errno];
        if (!hint) throw err;
        throw new ConfigError(
          `MariaDB/MySQL ${this.session.where} refused: ${(err as Error).message.split('\n')[0]}`,
          { hint, cause: err },
        );
      }
    }
  }

  /** Ends the snapshot transaction (it never wrote anything) and disconnects. */
  async close(): Promise<void> {
    // A COMMIT would queue behind a paused result forever; dropping the connection ends the
    // read-only transaction just as well.
    if (this.streams.abandon()) return;
    if (this.inSnapshot && !this.session.lostWith) {
      await run(this.session, 'COMMIT').catch(() => undefined);
    }
    await closeSession(this.session);
  }

  /** Opens the delta's snapshot unless one is open. */
  private async snapshot(): Promise<void> {
    this.streams.assertIdle();
    if (this.inSnapshot) return;
    await run(this.session, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');
    this.inSnapshot = true;
  }

  /** Ends the snapshot, so that the next read sees what committed until now. */
  private async endSnapshot(): Promise<void> {
    this.streams.assertIdle();
    if (!this.inSnapshot) return;
    this.inSnapshot = false;
    await run(this.session, 'COMMIT');
  }

  private async plan(table: string, columns: ColumnInfo[], qualifier = ''): Promise<ReadPlan> {
    this.streams.assertIdle();
    return readPlan(this.session, table, columns, true, qualifier);
  }

  /** Streams a plain row query inside the snapshot. */
  private async *rows(sql: string, plan: ReadPlan, table: string): AsyncGenerator<WireRow> {
    await this.snapshot();
    yield* this.streams.stream(sql, wireRowConverter(plan.converters), {
      table,
      hasGeometry: plan.hasGeometry,
    });
  }
}
