/**
 * Reading changes from SQLite. All reads of one extract run share one read transaction: a
 * deferred BEGIN in WAL mode pins one snapshot, so the tables of a delta agree with each other.
 */
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
  HighWaterMark,
  HighWaterRequest,
  NthLogIdRequest,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  SourceReader,
  WireRow,
} from '../types.js';
import { changelogWindowByHighWater, logIdWindowByHighWater } from '../high-water.js';
import { captureDdl, triggerNames } from './capture.js';
import { objectExists, referencedTables, sqliteColumns } from './catalog.js';
import { openSqlite, quoteIdent, type SqliteDb } from './connection.js';
import { maxLogId, nthLogId, stableHighWater } from './high-water.js';
import { keyParam, readAllRows, storedTime, wireRows } from './read.js';
import { changelogSql, keysetSql, readChangesSql } from './sql.js';
import { keyTextToWire } from './types.js';

const names = (columns: ColumnInfo[]) => columns.map((c) => c.name);

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
    const exists = (type: string, name: string) => objectExists(this.db, type, name);
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
    return maxLogId(this.db, table, logIdColumn);
  }

  async stableHighWater(req: HighWaterRequest): Promise<HighWaterMark> {
    this.snapshot();
    return stableHighWater(this.db, req);
  }

  async nthLogId(req: NthLogIdRequest): Promise<string | null> {
    this.snapshot();
    return nthLogId(this.db, req);
  }

  async *readChanges(req: ReadChangesRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    yield* wireRows(
      this.db,
      readChangesSql(req.table, names(req.columns), req.logIdColumn),
      [BigInt(req.after), BigInt(req.upTo)],
      req.columns,
      req.table,
      this.open,
    );
  }

  async *readKeyset(req: ReadKeysetRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    const keyTypes = req.key.map((k) => req.columns.find((c) => c.name === k)!);
    const params: unknown[] = [storedTime(req.upTo)];
    const after = !req.after ? 'none' : req.after.key.length > 0 ? 'ts-and-key' : 'ts';
    if (req.after) params.push(storedTime(req.after.ts));
    if (after === 'ts-and-key') {
      params.push(...req.after!.key.map((v, i) => keyParam(v, keyTypes[i]!)));
    }
    const sql = keysetSql({ ...req, columns: names(req.columns), after });
    yield* wireRows(this.db, sql, params, req.columns, req.table, this.open);
  }

  async *readAll(req: ReadAllRequest): AsyncGenerator<WireRow> {
    this.snapshot();
    yield* readAllRows(this.db, req, this.open);
  }

  async *readChangelog(req: ChangelogRequest): AsyncGenerator<ChangelogRow> {
    this.snapshot();
    const keyColumns = req.key.map((k) => req.columns.find((c) => c.name === k)!);
    // Each row: key_values, found, then the table's columns (typed by a leading text pair).
    const columns: ColumnInfo[] = [
      { name: 'key_values', type: 'text' },
      { name: 'found', type: 'bigint' },
      ...req.columns,
    ];
    const sql = changelogSql(req.changelog, req.table, names(req.columns), req.key);
    const params = [req.table, BigInt(req.after), BigInt(req.upTo)];
    for (const r of wireRows(this.db, sql, params, columns, req.table, this.open)) {
      if (r[1] === '1') {
        yield { op: 'upsert', row: r.slice(2) };
      } else {
        const texts = JSON.parse(r[0] as string) as (string | null)[];
        yield { op: 'delete', key: texts.map((t, i) => keyTextToWire(t, keyColumns[i]!.type)) };
      }
    }
  }

  async referencedTables(table: string): Promise<string[]> {
    return referencedTables(this.db, table);
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

export async function openSqliteSource(config: DbConfig): Promise<SourceReader> {
  return new SqliteSource(openSqlite(config, true), config);
}
