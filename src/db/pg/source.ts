/**
 * Reading changes from PostgreSQL. Never writes: every read runs in a READ ONLY transaction.
 *
 * Snapshots. Every read (windows, rows, serverTime) runs in one `REPEATABLE READ READ ONLY`
 * transaction, opened by beginSnapshot (or the first read) and kept until the next
 * beginSnapshot or close(), so every table of a delta sees the same committed state: the delta
 * is one consistent cut. changelogWindow needs no wait (see window.ts); logIdWindow ends the
 * snapshot, waits for the transactions open at its mark, and opens the next one. Metadata calls
 * (columns, referencedTables, checkCapture) use the open snapshot if there is one. Keep a reader
 * short-lived: an open snapshot holds back vacuum on the source.
 *
 * Each read runs under a savepoint, so a read stopped half-way (a row limit, a failed part file)
 * is cancelled and rolled back without losing the snapshot. Calls must not overlap.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../../errors.js';
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
  LogIdWindow,
  LogIdWindowRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
  CopyText,
} from '../types.js';
import { caughtUp } from '../high-water.js';
import { captureDdl, triggerName } from './capture.js';
import {
  columnDefault,
  descendants,
  inheritedAmong,
  reflectColumns,
  referencedTables,
  tableExists,
  tableRef,
  triggerState,
} from './catalog.js';
import {
  formatPosition,
  parsePosition,
  TXID_COLUMN,
  windowCondition,
  type Position,
} from './window.js';
import { connect, disconnect, run, type PgConnection } from './connection.js';
import { pruneChangelogSql } from './prune.js';
import {
  copyChangelogSql,
  copyOut,
  copyOutBytes,
  dropConnection,
  readAllSql,
  readChangelogSql,
  readChangesSql,
  readKeysetSql,
  type CopyOutcome,
} from './read.js';
import {
  copyDecoder,
  quoteIdent,
  quoteLiteral,
  timestamptzToWire,
  timestampToWire,
} from './types.js';

const READ_SAVEPOINT = 'deltasync_read';
/** How often stableHighWater looks again at the transactions it waits for. */
const HIGH_WATER_POLL_MS = 100;
/**
 * The virtual transaction ids of every other transaction of this database open now: every
 * transaction holds its own vxid lock from start to end, xid or not. Autovacuum never takes a
 * logId: it is not waited for.
 */
const OPEN_TRANSACTIONS_SQL = `SELECT l.virtualxid FROM pg_catalog.pg_locks l
  JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'virtualxid' AND l.granted AND l.mode = 'ExclusiveLock'
   AND a.datname = current_database() AND l.pid <> pg_backend_pid()
   AND a.backend_type <> 'autovacuum worker'`;

class PgSource implements SourceReader {
  readonly engine = 'pg' as const;
  private inSnapshot = false;
  /** Set when a read could not be stopped cleanly and the connection had to be dropped. */
  private broken = false;
  /**
   * COPYs started and not yet over: a caller that stops iterating without returning the
   * generator (a failure elsewhere) leaves one paused, and close() must not queue behind it.
   */
  private readsOpen = 0;

  constructor(
    private readonly conn: PgConnection,
    private readonly config: DbConfig,
  ) {}

  private ref(table: string) {
    return tableRef(table, this.config.schema);
  }

  private usable(): void {
    if (this.broken) {
      throw new Error('the PostgreSQL source connection was dropped after a failed read');
    }
  }

  private async snapshot(): Promise<void> {
    this.usable();
    if (this.inSnapshot) return;
    await run(this.conn, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    this.inSnapshot = true;
  }

  private async endSnapshot(): Promise<void> {
    this.usable();
    if (!this.inSnapshot) return;
    this.inSnapshot = false;
    await run(this.conn, 'COMMIT');
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    this.usable();
    const columns = await reflectColumns(this.conn, this.ref(table));
    if (!columns) {
      throw new ConfigError(
        `source table '${table}' does not exist in PostgreSQL ${this.conn.label}`,
        { hint: 'check the table name (and schema) in the job configuration' },
      );
    }
    return columns.map(({ name, type, nativeType }) => ({ name, type, nativeType }));
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    this.usable();
    const { rows } = await run<{ max: string | null }>(
      this.conn,
      `SELECT max(${quoteIdent(logIdColumn)})::text AS max FROM ${this.ref(table).sql}`,
      [],
      table,
    );
    return rows[0]?.max ?? null;
  }

  async beginSnapshot(): Promise<void> {
    await this.endSnapshot();
    await this.snapshot();
  }

  /**
   * logid mode has no transaction stamp on the rows, so the mark must wait: the highest logId
   * visible, and every transaction of this database open when it was taken (from one
   * statement). A logId at or below the mark that is not visible yet was handed out (nextval is
   * not transactional) to one of them, with or without an xid yet; a transaction that starts
   * later gets a higher one. Each is followed by its virtual transaction id lock, which every
   * transaction holds until it ends and pg_locks shows to any role (what CREATE INDEX
   * CONCURRENTLY waits on). Once they have ended, a snapshot opened then sees every row at or
   * below the mark. A transaction still open after maxWaitSeconds holds the logid tables back
   * (heldBy says which); nothing is skipped. Assumes a logId is taken inside the transaction
   * that writes it.
   */
  async logIdWindow(req: LogIdWindowRequest): Promise<LogIdWindow> {
    if (req.tables.length === 0) return { upTo: null, limited: false };
    await this.endSnapshot();
    const maxes = req.tables.map(
      (t) => `(SELECT max(${quoteIdent(t.logIdColumn)}) FROM ${this.ref(t.table).sql})::numeric`,
    );
    const { rows } = await run<{ high: string | null; running: string[]; prepared: string[] }>(
      this.conn,
      `SELECT greatest(${maxes.join(', ')})::text AS high,
              ARRAY(${OPEN_TRANSACTIONS_SQL}) AS running,
              ARRAY(SELECT gid FROM pg_catalog.pg_prepared_xacts
                     WHERE database = current_database()) AS prepared`,
      [],
      req.tables.map((t) => t.table).join(', '),
    );
    const high = rows[0]?.high ?? null;
    if (high === null || caughtUp(req.tables, high)) {
      // Nothing above the cursors is visible: this run ships nothing whoever is still running,
      // so it neither waits for them nor calls the tables held back (a quiet cron run stays quick
      // while a long unrelated transaction is open).
      await this.snapshot();
      return { upTo: null, limited: false };
    }
    const heldBy = await this.waitForTransactions(
      rows[0]?.running ?? [],
      rows[0]?.prepared ?? [],
      req.maxWaitSeconds,
    );
    await this.snapshot();
    if (heldBy !== null) return { upTo: null, limited: false, heldBy };
    if (req.limit) {
      const nth = await this.nthLogId({ tables: req.tables, upTo: high, n: req.limit });
      if (nth !== null && BigInt(nth) < BigInt(high)) return { upTo: nth, limited: true };
    }
    return { upTo: high, limited: false };
  }

  /** Waits until none of the transactions is open; null then, else the one still open. */
  private async waitForTransactions(
    running: string[],
    prepared: string[],
    maxWaitSeconds: number,
  ): Promise<string | null> {
    if (running.length === 0 && prepared.length === 0) return null;
    const deadline = Date.now() + maxWaitSeconds * 1000;
    for (;;) {
      const { rows } = await run<{ who: string }>(
        this.conn,
        `SELECT 'session pid ' || l.pid || coalesce(' (' || a.usename || ', ' || a.state ||
                ', transaction open since ' || a.xact_start || ')', '') AS who
           FROM pg_catalog.pg_locks l
           LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'virtualxid' AND l.granted AND l.virtualxid = ANY ($1::text[])
         UNION ALL
         SELECT 'prepared transaction ' || quote_literal(gid) FROM pg_catalog.pg_prepared_xacts
          WHERE gid = ANY ($2::text[])`,
        [running, prepared],
      );
      if (rows.length === 0) return null;
      if (Date.now() >= deadline) return rows[0]!.who;
      await sleep(HIGH_WATER_POLL_MS);
    }
  }

  /** See window.ts: the rows visible in this snapshot and not in `after`, no waiting. */
  async changelogWindow(req: ChangelogWindowRequest): Promise<ChangelogWindow> {
    await this.snapshot();
    const { rows: snap } = await run<{ s: string }>(
      this.conn,
      'SELECT pg_current_snapshot()::text AS s',
    );
    if (req.after === null) {
      const at = formatPosition({ base: { snapshot: snap[0]!.s } });
      return { after: at, cursor: at, highLogId: null, limited: false };
    }
    const after = this.position(req.after, req.changelog);
    // A window cut short is finished first, as of the snapshot it was cut in.
    const targetSnapshot = after.pending?.snapshot ?? snap[0]!.s;
    const target: Position = { base: { snapshot: targetSnapshot } };
    const log = this.ref(req.changelog);
    const where = windowCondition(after, target);
    const nth = async (offset: number) => {
      const { rows } = await run<{ l: string }>(
        this.conn,
        `SELECT log_id::text AS l FROM ${log.sql} WHERE ${where} ORDER BY log_id OFFSET $1 LIMIT 1`,
        [offset],
        req.changelog,
      );
      return rows[0]?.l ?? null;
    };
    if (req.limit && (await nth(req.limit)) !== null) {
      const upTo = (await nth(req.limit - 1))!;
      const pending = { snapshot: targetSnapshot, upTo };
      const cursor = formatPosition({ base: after.base, pending });
      return { after: req.after, cursor, highLogId: upTo, limited: true };
    }
    const { rows } = await run<{ high: string | null }>(
      this.conn,
      `SELECT max(log_id)::text AS high FROM ${log.sql} WHERE ${where}`,
      [],
      req.changelog,
    );
    const high = rows[0]?.high ?? null;
    // After finishing a cut window, the rows committed since wait for the next delta.
    const limited = after.pending !== undefined;
    const cursor = high === null && !limited ? req.after : formatPosition(target);
    return { after: req.after, cursor, highLogId: high, limited };
  }

  private position(text: string, changelog: string): Position {
    const p = parsePosition(text);
    if (!p) {
      throw new ConfigError(
        `the extract state's cursor for change log '${changelog}' ('${text}') was not made by PostgreSQL`,
        { hint: 'the source changed engine; start a new job (or remove the cursor to reseed)' },
      );
    }
    return p;
  }

  async checkCapture(req: CaptureRequest): Promise<void> {
    this.usable();
    const log = this.ref(req.changelog);
    const apply = 'run deltasync capture --apply';
    if (!(await tableExists(this.conn, log))) {
      throw new ConfigError(`change log '${req.changelog}' does not exist: ${apply}`);
    }
    const txid = await columnDefault(this.conn, log, TXID_COLUMN);
    if (!txid.exists || !txid.default?.includes('pg_current_xact_id')) {
      throw new ConfigError(
        `change log '${req.changelog}' was made by an older deltasync (no ${TXID_COLUMN} stamp): ${apply} to upgrade it in place`,
      );
    }
    for (const t of req.tables) {
      const trigger = triggerName(req.changelog, t.table);
      const ref = this.ref(t.table);
      const relations = [ref.sql, ...(await descendants(this.conn, ref)).map((d) => d.sql)];
      for (const rel of relations) {
        const state = await triggerState(this.conn, rel, trigger);
        if (state !== 'enabled') {
          const where =
            rel === ref.sql ? `table '${t.table}'` : `${rel} (writes into '${t.table}')`;
          throw new ConfigError(
            `${where}: the change-capture trigger ${trigger} is ${state}, so its changes would never ship: ${apply}`,
          );
        }
      }
    }
  }

  /** An inheritance parent's reads include its children's rows (`SELECT … FROM parent`). */
  async checkTablesDistinct(tables: string[]): Promise<void> {
    this.usable();
    const pairs = await inheritedAmong(
      this.conn,
      tables.map((t) => this.ref(t)),
    );
    if (pairs.length === 0) return;
    const { parent, child } = pairs[0]!;
    throw new ConfigError(
      `tables '${parent}' and '${child}' overlap: '${child}' inherits from '${parent}', and reading '${parent}' returns its rows too, so the replica would get them twice: list only one of them in tables`,
    );
  }

  async nthLogId(req: NthLogIdRequest): Promise<string | null> {
    this.usable();
    // Untyped literals take each table's own logId type (one parameter shared by tables of
    // different types would not), so each branch is an index range scan, merged in order.
    // ORDER BY u.l orders numbers: a bare `l` would be the text output column.
    const parts = req.tables.map((t) => {
      const log = quoteIdent(t.logIdColumn);
      return (
        `SELECT ${log} AS l FROM ${this.ref(t.table).sql} ` +
        `WHERE ${log} > ${quoteLiteral(t.after)} AND ${log} <= ${quoteLiteral(req.upTo)}`
      );
    });
    const { rows } = await run<{ l: string }>(
      this.conn,
      `SELECT l::text AS l FROM (${parts.join(' UNION ALL ')}) u ORDER BY u.l OFFSET $1 LIMIT 1`,
      [req.n - 1],
      req.tables.map((t) => t.table).join(', '),
    );
    return rows[0]?.l ?? null;
  }

  /** Streams rows of one COPY inside the snapshot, under a savepoint (see the module comment). */
  private async *read(
    sql: string,
    columns: ColumnInfo[],
    table: string,
  ): AsyncGenerator<WireRow[]> {
    await this.snapshot();
    await run(this.conn, `SAVEPOINT ${READ_SAVEPOINT}`);
    const outcome: CopyOutcome = { complete: false, usable: true };
    this.readsOpen++;
    try {
      yield* copyOut(
        this.conn,
        sql,
        columns.map((c) => copyDecoder(c.type)),
        table,
        outcome,
      );
    } finally {
      this.readsOpen--;
      const end = outcome.complete ? 'RELEASE' : 'ROLLBACK TO';
      if (!outcome.usable) this.broken = true;
      else await run(this.conn, `${end} SAVEPOINT ${READ_SAVEPOINT}`).catch(() => this.drop());
    }
  }

  /** Streams the bytes of one COPY inside the snapshot, under a savepoint (as `read`). */
  private async *readBytes(sql: string, table: string): AsyncGenerator<Buffer> {
    await this.snapshot();
    await run(this.conn, `SAVEPOINT ${READ_SAVEPOINT}`);
    const outcome: CopyOutcome = { complete: false, usable: true };
    this.readsOpen++;
    try {
      yield* copyOutBytes(this.conn, sql, table, outcome);
    } finally {
      this.readsOpen--;
      const end = outcome.complete ? 'RELEASE' : 'ROLLBACK TO';
      if (!outcome.usable) this.broken = true;
      else await run(this.conn, `${end} SAVEPOINT ${READ_SAVEPOINT}`).catch(() => this.drop());
    }
  }

  copyChanges(req: ReadChangesRequest): CopyText {
    return this.readBytes(readChangesSql(req, this.ref(req.table)), req.table);
  }

  copyKeyset(req: ReadKeysetRequest): CopyText {
    return this.readBytes(readKeysetSql(req, this.ref(req.table)), req.table);
  }

  copyAll(req: ReadAllRequest): CopyText {
    return this.readBytes(readAllSql(req, this.ref(req.table)), req.table);
  }

  copyChangelog(req: ChangelogRequest, kind: 'upserts' | 'deletes'): CopyText {
    const window = windowCondition(
      this.position(req.after, req.changelog),
      this.position(req.upTo, req.changelog),
    );
    const sql = copyChangelogSql(req, this.ref(req.changelog), this.ref(req.table), window, kind);
    return this.readBytes(sql, req.table);
  }

  private drop(): void {
    this.broken = true;
    dropConnection(this.conn);
  }

  async *readChanges(req: ReadChangesRequest): AsyncGenerator<WireRow> {
    for await (const rows of this.read(
      readChangesSql(req, this.ref(req.table)),
      req.columns,
      req.table,
    )) {
      for (const row of rows) yield row;
    }
  }

  async *readKeyset(req: ReadKeysetRequest): AsyncGenerator<WireRow> {
    for await (const rows of this.read(
      readKeysetSql(req, this.ref(req.table)),
      req.columns,
      req.table,
    )) {
      for (const row of rows) yield row;
    }
  }

  async *readAll(req: ReadAllRequest): AsyncGenerator<WireRow> {
    for await (const rows of this.read(
      readAllSql(req, this.ref(req.table)),
      req.columns,
      req.table,
    )) {
      for (const row of rows) yield row;
    }
  }

  async *readChangelog(req: ChangelogRequest): AsyncGenerator<ChangelogRow> {
    const keys = req.key.map((k) => req.columns.find((c) => c.name === k)!);
    const window = windowCondition(
      this.position(req.after, req.changelog),
      this.position(req.upTo, req.changelog),
    );
    const sql = readChangelogSql(req, this.ref(req.changelog), this.ref(req.table), window);
    const decoded: ColumnInfo[] = [{ name: 'found', type: 'bool' }, ...keys, ...req.columns];
    for await (const rows of this.read(sql, decoded, req.table)) {
      for (const r of rows) {
        yield r[0] === true
          ? { op: 'upsert', row: r.slice(1 + keys.length) }
          : { op: 'delete', key: r.slice(1, 1 + keys.length) };
      }
    }
  }

  async referencedTables(table: string): Promise<string[]> {
    this.usable();
    return referencedTables(this.conn, this.ref(table), table.includes('.'));
  }

  /**
   * now() inside the read snapshot: the horizon then never runs ahead of what the reads see.
   * A timestamp (no zone) column holds wall-clock time in the database's own time zone (what
   * `DEFAULT now()` writes), not in the UTC this session runs with.
   */
  async serverTime(type: 'timestamp' | 'timestamptz'): Promise<string> {
    await this.snapshot();
    const expr =
      type === 'timestamptz'
        ? 'now()'
        : `now() AT TIME ZONE (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone')`;
    const { rows } = await run<{ now: string }>(this.conn, `SELECT (${expr})::text AS now`);
    const now = rows[0]!.now;
    return type === 'timestamptz' ? timestamptzToWire(now) : timestampToWire(now);
  }

  /** Inheritance children get the trigger too; partitions get PostgreSQL's clone of it. */
  async captureDdl(req: CaptureRequest): Promise<CaptureDdl> {
    this.usable();
    const children = new Map<string, string[]>();
    for (const t of req.tables) {
      const found = await descendants(this.conn, this.ref(t.table));
      children.set(
        t.table,
        found.filter((d) => !d.partition).map((d) => d.sql),
      );
    }
    return captureDdl(req, this.config.schema, children);
  }

  /**
   * Runs DDL on a connection of its own, in one transaction: all of it or none. The read
   * snapshot ends first: its locks would make DDL on the tables it read wait for this reader.
   */
  async executeDdl(statements: string[]): Promise<void> {
    await this.endSnapshot();
    const conn = await connect(this.config);
    try {
      await run(conn, 'BEGIN');
      for (const s of statements) await run(conn, s);
      await run(conn, 'COMMIT');
    } finally {
      await disconnect(conn);
    }
  }

  /** See prune.ts: batches of DELETE, each autocommitted, outside any snapshot. */
  async pruneChangelog(req: PruneChangelogRequest): Promise<number> {
    await this.endSnapshot();
    const log = this.ref(req.changelog);
    const sql = pruneChangelogSql(log.sql, req.position);
    let total = 0;
    for (;;) {
      const r = await run(this.conn, sql, [req.olderThanSeconds, req.batchSize], req.changelog);
      total += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < req.batchSize) return total;
    }
  }

  async close(): Promise<void> {
    // A paused COPY never ends by itself, and anything sent now would wait behind it: drop the
    // connection (the transaction only read, so the server loses nothing).
    if (this.readsOpen > 0 && !this.broken) this.drop();
    if (this.inSnapshot && !this.broken) {
      // The transaction only read; COMMIT and ROLLBACK are the same, COMMIT reads better in logs.
      await this.conn.client.query('COMMIT').catch(() => {});
    }
    await disconnect(this.conn);
  }
}

/** Opens a read-only reader; throws UnavailableError when PostgreSQL cannot be reached. */
export async function openPgSource(config: DbConfig): Promise<SourceReader> {
  return new PgSource(await connect(config), config);
}
