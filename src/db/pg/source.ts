/**
 * Reading changes from PostgreSQL. Never writes: every read runs in a READ ONLY transaction.
 *
 * Snapshots. The reads (readChanges, readKeyset, readAll, readChangelog) and serverTime share one
 * `REPEATABLE READ READ ONLY` snapshot, opened by the first of them and kept until close(), so
 * every table of a delta sees the same committed state (parent and child rows agree).
 * stableHighWater ends that snapshot: it takes the mark, waits for the transactions that were
 * still running when it did, and only then does the next read open a new snapshot, which so
 * sees every row at or below the mark. Other calls (columns, maxLogId, nthLogId,
 * referencedTables) use the open snapshot if there is one and open none. Keep a reader
 * short-lived: an open snapshot holds back vacuum on the source.
 *
 * Each read runs under a savepoint, so a read stopped half-way (a row limit, a failed part file)
 * is cancelled and rolled back without losing the snapshot. Calls must not overlap.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../../errors.js';
import type {
  CaptureDdl,
  CaptureRequest,
  ChangelogRequest,
  ChangelogRow,
  ColumnInfo,
  DbConfig,
  HighWaterRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
} from '../types.js';
import { captureDdl } from './capture.js';
import { reflectColumns, referencedTables, tableRef } from './catalog.js';
import { connect, disconnect, run, type PgConnection } from './connection.js';
import {
  copyOut,
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
/** txid values carry an epoch above the 32-bit xid that pg_stat_activity shows. */
const XID_MODULUS = '4294967296';

class PgSource implements SourceReader {
  readonly engine = 'pg' as const;
  private inSnapshot = false;
  /** Set when a read could not be stopped cleanly and the connection had to be dropped. */
  private broken = false;

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

  /**
   * The mark and the transactions running when it was taken come from one statement, so from
   * one snapshot: any logId at or below the mark not yet visible belongs to one of them (logIds
   * from a sequence only grow, so later transactions take higher ones). Waiting for them to end
   * before the reads open their snapshot is what SQL Server's MIN_ACTIVE_ROWVERSION() gives for
   * free. Transactions of other databases are not waited for.
   */
  async stableHighWater(req: HighWaterRequest): Promise<string | null> {
    await this.endSnapshot();
    const maxes = req.tables.map(
      (t) => `(SELECT max(${quoteIdent(t.logIdColumn)}) FROM ${this.ref(t.table).sql})::numeric`,
    );
    const { rows } = await run<{ high: string | null; running: string[] }>(
      this.conn,
      `SELECT greatest(${maxes.join(', ')})::text AS high,
              ARRAY(SELECT txid_snapshot_xip(txid_current_snapshot()))::text[] AS running`,
      [],
      req.tables.map((t) => t.table).join(', '),
    );
    const high = rows[0]?.high ?? null;
    let running = rows[0]?.running ?? [];
    const deadline = Date.now() + req.maxWaitSeconds * 1000;
    while (high !== null && running.length > 0) {
      const { rows: still } = await run<{ xid: string }>(
        this.conn,
        `SELECT x::text AS xid FROM unnest($1::bigint[]) AS x
          WHERE txid_status(x) = 'in progress'
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                             WHERE a.datname <> current_database()
                               AND a.backend_xid::text::bigint = x % ${XID_MODULUS})`,
        [running],
      );
      running = still.map((r) => r.xid);
      if (running.length === 0) break;
      if (Date.now() >= deadline) return null;
      await sleep(HIGH_WATER_POLL_MS);
    }
    return high;
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
    try {
      yield* copyOut(
        this.conn,
        sql,
        columns.map((c) => copyDecoder(c.type)),
        table,
        outcome,
      );
    } finally {
      const end = outcome.complete ? 'RELEASE' : 'ROLLBACK TO';
      if (!outcome.usable) this.broken = true;
      else await run(this.conn, `${end} SAVEPOINT ${READ_SAVEPOINT}`).catch(() => this.drop());
    }
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
    const sql = readChangelogSql(req, this.ref(req.changelog), this.ref(req.table));
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

  captureDdl(req: CaptureRequest): CaptureDdl {
    return captureDdl(req, this.config.schema);
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

  async close(): Promise<void> {
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
