/** Reading changes from SQLite. All reads of one extract run share one read transaction. */
import { ConfigError } from '../../errors.js';
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
  DbConfig,
  HighWaterRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
  WireValue,
} from '../types.js';
import { changelogWindowByHighWater, logIdWindowByHighWater } from '../window.js';
import { captureDdl, triggerNames } from './capture.js';
import { openSqlite, quoteIdent, type SqliteDb } from './connection.js';
import { keyTextToWire, logicalTypeOf, toWire } from './types.js';

export function sqliteColumns(db: SqliteDb, table: string): ColumnInfo[] | null {
  const rows = db.prepare(`SELECT name, type FROM pragma_table_info(?)`).all(table) as {
    name: string;
    type: string;
  }[];
  if (rows.length === 0) return null;
  return rows.map((r) => ({ name: r.name, type: logicalTypeOf(r.type), nativeType: r.type }));
}

/**
 * A missing table or column is the operator's to fix (the config names it): a ConfigError, like
 * every other engine's; anything else is passed on.
 */
export function translateError(err: unknown, table: string): unknown {
  const message = (err as Error)?.message ?? '';
  if (/^no such (table|column)/.test(message)) {
    return new ConfigError(`SQLite table '${table}': ${message}`, {
      hint: 'check the table and column names in the config against the database',
    });
  }
  return err;
}

/**
 * Streams a statement's rows as wire rows (better-sqlite3 iterates lazily). An iteration stays
 * in `open` while it runs: the connection can do nothing else until it ends, so close() ends
 * the abandoned ones first.
 */
export function* wireRows(
  db: SqliteDb,
  sql: string,
  params: unknown[],
  columns: ColumnInfo[],
  table: string,
  open?: Set<Iterator<unknown>>,
): Generator<WireRow> {
  let rows: IterableIterator<unknown[]>;
  try {
    rows = db
      .prepare(sql)
      .raw(true)
      .iterate(...params) as IterableIterator<unknown[]>;
  } catch (err) {
    throw translateError(err, table);
  }
  const types = columns.map((c) => c.type);
  open?.add(rows);
  try {
    for (const row of rows) yield row.map((v, i) => toWire(v as never, types[i]!));
  } finally {
    open?.delete(rows);
    rows.return?.();
  }
}

const list = (names: string[]) => names.map(quoteIdent).join(', ');

/**
 * SQLite keeps times as text; a cursor's wire timestamp is compared with the stored text, so it
 * goes back to the common stored form `YYYY-MM-DD HH:MM:SS[.fff]` (see the README: SQLite
 * timestamp mode needs the column written in that form, UTC for timestamptz).
 */
function storedTime(value: WireValue): WireValue {
  return typeof value === 'string' ? value.replace('T', ' ').replace(/Z$/, '') : value;
}

class SqliteSource implements SourceReader {
  readonly engine = 'sqlite' as const;
  private inSnapshot = false;
  /** Reads in progress (see wireRows). */
  private readonly open = new Set<Iterator<unknown>>();

  constructor(
    private readonly db: SqliteDb,
    private readonly config: DbConfig,
  ) {}

  async columns(table: string): Promise<ColumnInfo[]> {
    const columns = sqliteColumns(this.db, table);
    if (!columns) throw new ConfigError(`source table '${table}' does not exist`);
    return columns;
  }

  private snapshot(): void {
    // A deferred transaction pins one snapshot for every read that follows (in WAL mode), so
    // the tables of one delta agree with each other.
    if (!this.inSnapshot) {
      this.db.exec('BEGIN');
      this.inSnapshot = true;
    }
  }

  async beginSnapshot(): Promise<void> {
    if (this.inSnapshot) this.db.exec('COMMIT');
    this.inSnapshot = false;
    this.snapshot();
    // A deferred BEGIN takes its snapshot at the first read: take it now.
    this.db.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get();
  }

  /**
   * Exact without waiting: SQLite has one writer at a time, and a logId (or a change log's
   * AUTOINCREMENT id) is taken inside the writing transaction, under the write lock. A snapshot
   * sees a prefix of the commits, so every id at or below the highest one it sees was taken by a
   * transaction it sees, or by one that rolled back: none can still commit below the mark.
   */
  logIdWindow(req: LogIdWindowRequest): Promise<LogIdWindow> {
    return logIdWindowByHighWater(this, req);
  }

  changelogWindow(req: ChangelogWindowRequest): Promise<ChangelogWindow> {
    return changelogWindowByHighWater(this, req);
  }

  /** SQLite triggers cannot be disabled: each must exist, with the change log. */
  async checkCapture(req: CaptureRequest): Promise<void> {
    const exists = (type: string, name: string) =>
      this.db.prepare('SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?').get(type, name) !==
      undefined;
    const apply = 'run deltasync capture --apply';
    if (!exists('table', req.changelog)) {
      throw new ConfigError(`change log '${req.changelog}' does not exist: ${apply}`);
    }
    for (const t of req.tables) {
      for (const name of triggerNames(req.changelog, t.table)) {
        if (!exists('trigger', name)) {
          throw new ConfigError(
            `table '${t.table}': the change-capture trigger ${name} is missing, so its changes would never ship: ${apply}`,
          );
        }
      }
    }
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    this.snapshot();
    let row: { m: bigint | number | null };
    try {
      row = this.db
        .prepare(`SELECT MAX(${quoteIdent(logIdColumn)}) AS m FROM ${quoteIdent(table)}`)
        .get() as typeof row;
    } catch (err) {
      throw translateError(err, table);
    }
    return row.m === null ? null : String(row.m);
  }

  async stableHighWater(req: HighWaterRequest): Promise<string | null> {
    let high: bigint | null = null;
    for (const t of req.tables) {
      const m = await this.maxLogId(t.table, t.logIdColumn);
      if (m !== null && (high === null || BigInt(m) > high)) high = BigInt(m);
    }
    return high === null ? null : high.toString();
  }

  async nthLogId(req: NthLogIdRequest): Promise<string | null> {
    this.snapshot();
    const parts = req.tables.map(
      (t) =>
        `SELECT ${quoteIdent(t.logIdColumn)} AS l FROM ${quoteIdent(t.table)} WHERE ${quoteIdent(t.logIdColumn)} > ? AND ${quoteIdent(t.logIdColumn)} <= ?`,
    );
    const params = req.tables.flatMap((t) => [BigInt(t.after), BigInt(req.upTo)]);
    const row = this.db
      .prepare(`SELECT l FROM (${parts.join(' UNION ALL ')}) ORDER BY l LIMIT 1 OFFSET ?`)
      .get(...params, req.n - 1) as { l: bigint } | undefined;
    return row ? String(row.l) : null;
  }

  async *readChanges(req: ReadChangesRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    const log = quoteIdent(req.logIdColumn);
    yield* wireRows(
      this.db,
      `SELECT ${list(req.columns.map((c) => c.name))} FROM ${quoteIdent(req.table)}
       WHERE ${log} > ? AND ${log} <= ? ORDER BY ${log}`,
      [BigInt(req.after), BigInt(req.upTo)],
      req.columns,
      req.table,
      this.open,
    );
  }

  async *readKeyset(req: ReadKeysetRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    const ts = quoteIdent(req.tsColumn);
    const keyTypes = req.key.map((k) => req.columns.find((c) => c.name === k)!);
    const conditions = [`${ts} <= ?`];
    const params: unknown[] = [storedTime(req.upTo)];
    if (req.after && req.after.key.length > 0) {
      conditions.push(`(${ts}, ${list(req.key)}) > (?${', ?'.repeat(req.key.length)})`);
      params.push(
        storedTime(req.after.ts),
        ...req.after.key.map((v, i) => keyParam(v, keyTypes[i]!)),
      );
    } else if (req.after) {
      conditions.push(`${ts} >= ?`);
      params.push(storedTime(req.after.ts));
    }
    const limit = req.limit === undefined ? '' : ` LIMIT ${Number(req.limit)}`;
    yield* wireRows(
      this.db,
      `SELECT ${list(req.columns.map((c) => c.name))} FROM ${quoteIdent(req.table)}
       WHERE ${conditions.join(' AND ')} ORDER BY ${ts}, ${list(req.key)}${limit}`,
      params,
      req.columns,
      req.table,
      this.open,
    );
  }

  async *readAll(req: ReadAllRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    yield* readAllRows(this.db, req, this.open);
  }

  async *readChangelog(req: ChangelogRequest): AsyncGenerator<ChangelogRow> {
    this.snapshot();
    const keyColumns = req.key.map((k) => req.columns.find((c) => c.name === k)!);
    // Integer/numeric key columns compare with the change log's text by SQLite's affinity rules.
    const join = req.key
      .map((k, i) => `t.${quoteIdent(k)} = json_extract(c.key_values, '$[${i}]')`)
      .join(' AND ');
    const sql = `WITH c AS (
        SELECT key_values, MAX(log_id) AS last FROM ${quoteIdent(req.changelog)}
        WHERE table_name = ? AND log_id > ? AND log_id <= ? GROUP BY key_values)
      SELECT c.key_values, t.${quoteIdent(req.key[0]!)} IS NOT NULL AS found,
        ${req.columns.map((col) => `t.${quoteIdent(col.name)}`).join(', ')}
      FROM c LEFT JOIN ${quoteIdent(req.table)} t ON ${join} ORDER BY c.last`;
    const stmt = this.db.prepare(sql).raw(true);
    const types = req.columns.map((c) => c.type);
    for (const r of stmt.iterate(
      req.table,
      BigInt(req.after),
      BigInt(req.upTo),
    ) as IterableIterator<unknown[]>) {
      if (Number(r[1]) === 1) {
        yield { op: 'upsert', row: r.slice(2).map((v, i) => toWire(v as never, types[i]!)) };
      } else {
        const texts = JSON.parse(r[0] as string) as (string | null)[];
        yield { op: 'delete', key: texts.map((t, i) => keyTextToWire(t, keyColumns[i]!.type)) };
      }
    }
  }

  async referencedTables(table: string): Promise<string[]> {
    const rows = this.db
      .prepare('SELECT DISTINCT "table" AS t FROM pragma_foreign_key_list(?)')
      .all(table) as {
      t: string;
    }[];
    return rows.map((r) => r.t);
  }

  async serverTime(type: 'timestamp' | 'timestamptz'): Promise<string> {
    const row = this.db.prepare(`SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now`).get() as {
      now: string;
    };
    // strftime gives milliseconds; the wire's fractions have six digits (docs/format.md).
    const now = `${row.now}000`;
    return type === 'timestamptz' ? `${now.replace(' ', 'T')}Z` : now;
  }

  async captureDdl(req: CaptureRequest): Promise<CaptureDdl> {
    return captureDdl(req);
  }

  /**
   * High-water positions (a plain logId): rows at or below it have shipped. The reader is
   * read-only; the deletes take a connection of their own, a short transaction per batch.
   */
  async pruneChangelog(req: PruneChangelogRequest): Promise<number> {
    if (!/^(0|[1-9][0-9]*)$/.test(req.position)) {
      throw new ConfigError(
        `the change-log cursor '${req.position.slice(0, 80)}' was not written by the SQLite reader`,
        { hint: 'check the extract state file of this job' },
      );
    }
    const log = quoteIdent(req.changelog);
    const writable = openSqlite(this.config, false);
    try {
      const batch = writable.prepare(
        `DELETE FROM ${log} WHERE log_id IN (SELECT log_id FROM ${log} WHERE log_id <= ?` +
          ` AND changed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', ?) ORDER BY log_id LIMIT ?)`,
      );
      let total = 0;
      for (;;) {
        const { changes } = batch.run(
          BigInt(req.position),
          `-${Math.floor(req.olderThanSeconds)} seconds`,
          req.batchSize,
        );
        total += changes;
        if (changes < req.batchSize) return total;
      }
    } finally {
      writable.close();
    }
  }

  async executeDdl(statements: string[]): Promise<void> {
    // The reader is read-only; DDL needs a connection of its own.
    const writable = openSqlite(this.config, false);
    try {
      for (const s of statements) writable.exec(s);
    } finally {
      writable.close();
    }
  }

  async close(): Promise<void> {
    for (const rows of this.open) rows.return?.();
    this.open.clear();
    if (this.inSnapshot) this.db.exec('COMMIT');
    this.db.close();
  }
}

function keyParam(value: WireValue, column: ColumnInfo): unknown {
  if (value === null) return null;
  return column.type === 'bigint' ? BigInt(value as string) : value;
}

/** Every row of a table ordered by key: shared by the source (snapshot) and the target (verify). */
export function* readAllRows(
  db: SqliteDb,
  req: ReadAllRequest,
  open?: Set<Iterator<unknown>>,
): Generator<WireRow> {
  yield* wireRows(
    db,
    `SELECT ${list(req.columns.map((c) => c.name))} FROM ${quoteIdent(req.table)} ORDER BY ${list(req.key)}`,
    [],
    req.columns,
    req.table,
    open,
  );
}

export async function openSqliteSource(config: DbConfig): Promise<SourceReader> {
  return new SqliteSource(openSqlite(config, true), config);
}
