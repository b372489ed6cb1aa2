/**
 * The contract between the steps and the database engines.
 *
 * An engine folder (`src/db/<engine>/`) holds the same files for the same concepts, so adding an
 * engine is copying a shape (the contract below is checked for every engine by
 * test/integration/engine-conformance/):
 *   - `index.ts`       the EngineModule that `src/db/index.ts` loads lazily
 *   - `connection.ts`  opening a connection; driver errors -> ConfigError / UnavailableError
 *   - `types.ts`       native type name -> LogicalType, wire value <-> driver value conversions
 *   - `catalog.ts`     reflecting a table's columns (and keys, references) from the catalog
 *   - `sql.ts`         the statement text, built by pure functions that unit tests pin
 *   - `read.ts`        streaming rows out as wire rows, with flat memory
 *   - `load.ts`        getting rows into a table: the upsert by key, deletes
 *   - `high-water.ts`  the stable high-water mark of logid mode
 *   - `capture.ts`     change-log and trigger DDL (`deltasync capture`)
 *   - `source.ts`      the SourceReader, composing the above
 *   - `target.ts`      the TargetWriter and TargetTransaction, composing the above
 * plus what only some engines need (`window.ts`: exact change-log windows where the change log
 * carries a transaction stamp, PostgreSQL and SQL Server; `stage.ts`, `prune.ts`, ...).
 * Not yet everywhere: PostgreSQL's high-water code lives in its source.ts and its statement text
 * in read.ts and load.ts (no `high-water.ts` or `sql.ts` yet). Engines whose windows come from a
 * high-water mark (SQLite, SQL Server's logid mode) share `src/db/high-water.ts`.
 *
 * Engines know nothing about files: they only see wire rows (arrays of JSON-safe values, see
 * WireValue, defined by the format in src/format/wire.ts), COPY text bytes (copyRows) and column
 * lists. The delta format knows nothing about databases. The steps in `src/steps/` compose the
 * two.
 */

export {
  LOGICAL_TYPES,
  type ColumnInfo,
  type LogicalType,
  type WireRow,
  type WireValue,
} from '../format/wire.js';
import type { ColumnInfo, LogicalType, WireRow, WireValue } from '../format/wire.js';

/** Engines we know. Config `client` names (knex-style) are normalised to one of these. */
export type EngineName = 'sqlite' | 'pg' | 'mysql' | 'mssql';

/** Connection settings, knex-style: `{ client, connection }`; `connection` is engine-specific. */
export interface DbConfig {
  client: string;
  connection: string | Record<string, unknown>;
  /** Schema (PostgreSQL, SQL Server) that unqualified table names live in. */
  schema?: string;
  /** How long a statement waits for a lock before giving up (the job's `lockTimeoutSeconds`). */
  lockTimeoutSeconds?: number;
  /**
   * PostgreSQL replica: how many batches one load transaction may stage on a second session
   * (the job's `load.sharedStageBatches`; 0: one session only).
   */
  sharedStageBatches?: number;
}

export interface ReadChangesRequest {
  table: string;
  /** The columns to read, in the order the wire rows must have. */
  columns: ColumnInfo[];
  logIdColumn: string;
  /** Rows with logIdColumn strictly greater than this (decimal string) ... */
  after: string;
  /** ... and less than or equal to this (decimal string). */
  upTo: string;
}

/** The logId columns extract takes a high-water mark over (logid mode: the tables; changelog: the log). */
/** Engine-internal since exact capture (see LogIdWindowRequest); kept for the shared helper. */
/**
 * A stable high-water mark. `high` is null both when the tables hold no logId yet and when
 * transactions still running kept the mark from being taken: `heldBy` tells the second apart
 * (which transactions, for the log), so an empty table is not reported as held back.
 */
export interface HighWaterMark {
  high: string | null;
  heldBy?: string;
}

export interface HighWaterRequest {
  /**
   * `after`: the table's cursor, when the caller has one. When no table shows a logId above its
   * cursor, nothing is to be shipped whoever is still running: the mark comes back at once,
   * without waiting (a quiet cron run stays quick while a long unrelated transaction is open).
   */
  tables: { table: string; logIdColumn: string; after?: string }[];
  /** How long to wait for transactions still running before giving up (then return null). */
  maxWaitSeconds: number;
}

/**
 * The change-log table's columns, the same on every engine (`deltasync capture` creates it):
 * `log_id` (increasing), `table_name`, `op` ('I', 'U' or 'D'), `key_values` (a JSON array of the
 * row's key values, each as text, in key order), `changed_at` (when).
 */
export const CHANGELOG_LOGID_COLUMN = 'log_id';

export interface NthLogIdRequest {
  /** Each table with its own cursor: only rows with logIdColumn > after count. */
  tables: { table: string; logIdColumn: string; after: string }[];
  /** Rows with logIdColumn <= this only. */
  upTo: string;
  /** Which row, counting from 1, in logId order across all the tables. */
  n: number;
}

/** A row's place in a timestamp-mode table: its last-modified value and its key values. */
export interface KeysetCursor {
  ts: WireValue;
  key: WireValue[];
}

export interface ReadKeysetRequest {
  table: string;
  columns: ColumnInfo[];
  tsColumn: string;
  /** Key column names; with tsColumn they order the rows and make the cursor unique. */
  key: string[];
  /**
   * Rows after this cursor, by (ts, key...); from the beginning when null. A cursor with an empty
   * `key` means every row with tsColumn >= ts (a configured start).
   */
  after: KeysetCursor | null;
  /** Rows with tsColumn <= this wire value only (the settle lag's horizon). */
  upTo: WireValue;
  /** At most this many rows (the batch limit), when given. */
  limit?: number;
}

export interface ReadAllRequest {
  table: string;
  columns: ColumnInfo[];
  /** Key column names: rows come ordered by them. */
  key: string[];
}

/** Where a change-log table is and what it holds (see `changelog` mode in the README). */
export interface ChangelogRequest {
  /** The change log table, as configured (`capture.changelogTable`). */
  changelog: string;
  table: string;
  columns: ColumnInfo[];
  key: string[];
  /**
   * Two capture positions of the change log (see CapturePosition): the keys of the log rows in
   * `upTo` and not in `after` are read. extract passes a ChangelogWindow's `after` and `cursor`;
   * verify passes plain logIds.
   */
  after: CapturePosition;
  upTo: CapturePosition;
}

/**
 * Where capture stands in a change log: opaque to the steps, made by the engine's
 * `changelogWindow` and stored by extract as it is (state and manifest `cursors`). It names a set
 * of change-log rows: the ones already shipped. A plain decimal logId N (what every engine stored
 * before exact capture, and what engines without snapshots still make) means "every row with
 * log_id <= N". Engines must accept a plain logId as `after` (an upgraded install: at worst a
 * harmless re-ship) and compare nothing else about it.
 */
export type CapturePosition = string;

export interface ChangelogWindowRequest {
  changelog: string;
  /** The position after the last delta, or null when the change log was never read. */
  after: CapturePosition | null;
  /** At most this many change-log rows in the window (delta.maxRowsPerDelta), when given. */
  limit?: number;
  /** Engines that must wait for running transactions wait at most this long. */
  maxWaitSeconds: number;
}

/**
 * Change-log retention: deletes, in batches of `batchSize` rows each committed on its own (never a
 * long lock), the log rows that `position` (extract's change-log cursor) and so every position
 * before it has shipped, logged at least `olderThanSeconds` ago.
 */
export interface PruneChangelogRequest {
  changelog: string;
  position: CapturePosition;
  /** 0: any age. */
  olderThanSeconds: number;
  batchSize: number;
}

/** The change-log rows the next delta ships: those in `cursor` and not in `after`. */
export interface ChangelogWindow {
  /** As requested (a null `after` becomes the engine's "nothing shipped" position). */
  after: CapturePosition;
  /** The position once this window is shipped; equal to `after` when nothing new is there. */
  cursor: CapturePosition;
  /** The highest log_id in the window (the delta's logId is at least this), or null if empty. */
  highLogId: string | null;
  /** True when `limit` cut the window short: there is more to read now. */
  limited: boolean;
}

export interface LogIdWindowRequest {
  /** The logid-mode tables, each with its own cursor (a plain logId; '0' when never read). */
  tables: { table: string; logIdColumn: string; after: string }[];
  /** At most this many rows over all the tables (delta.maxRowsPerDelta), when given. */
  limit?: number;
  /** How long to wait for transactions still running before giving up (then return null). */
  maxWaitSeconds: number;
}

/** The logIds the next delta ships: each table's rows with `after < logId <= upTo`. */
export interface LogIdWindow {
  /** Null when there is nothing to ship now (caught up, or held back: see heldBy). */
  upTo: string | null;
  /** True when `limit` cut the window short. */
  limited: boolean;
  /** When a transaction still running kept the mark from moving: which one, for the log. */
  heldBy?: string;
}

/** One change read through the change log: the row as it is now, or the key of a deleted row. */
export type ChangelogRow = { op: 'upsert'; row: WireRow } | { op: 'delete'; key: WireRow };

/** DDL that installs or removes change capture for some tables. */
export interface CaptureDdl {
  install: string[];
  remove: string[];
}

export interface CaptureRequest {
  changelog: string;
  tables: { table: string; key: ColumnInfo[] }[];
}

/** Reads a source database. Never writes to it: extract must work with a read-only account. */
export interface SourceReader {
  readonly engine: EngineName;
  /** The table's columns with their logical types; throws ConfigError when the table is missing. */
  columns(table: string): Promise<ColumnInfo[]>;
  /** The highest value of logIdColumn in the table as a decimal string, or null when empty. */
  maxLogId(table: string, logIdColumn: string): Promise<string | null>;
  /**
   * Streams the rows with `after < logIdColumn <= upTo`, ordered by logIdColumn, as wire rows.
   * Must not buffer the result: use a server-side cursor or a streaming query.
   */
  readChanges(request: ReadChangesRequest): AsyncIterable<WireRow>;
  /**
   * Ends the read snapshot in use, if any, and opens a new one: every read until the next call
   * (windows, rows, server time) sees the source as of that one moment, so a delta is one
   * consistent cut. extract calls it once per delta, first.
   */
  beginSnapshot(): Promise<void>;
  /**
   * logid mode: the highest logId below which no transaction still running can commit a row
   * (GUIDE: "the high-water mark must be stable"), cut to `limit` rows. Engines that must wait
   * for transactions to get there may end the current snapshot and open a new one after the
   * wait (so call this before changelogWindow and the reads). `upTo` is null when the tables
   * hold nothing after their cursors, or the wait did not end within maxWaitSeconds.
   */
  logIdWindow(request: LogIdWindowRequest): Promise<LogIdWindow>;
  /**
   * changelog mode: the change-log rows committed as of the current snapshot and not shipped
   * yet (not in `after`), cut to `limit` rows. Read them with readChangelog(after, cursor).
   * With a null `after` the window is empty and `cursor` is the current snapshot's position:
   * the caller seeds every changelog table from this same snapshot (base tables).
   */
  changelogWindow(request: ChangelogWindowRequest): Promise<ChangelogWindow>;
  /**
   * Refuses (ConfigError, "run deltasync capture --apply") a change log or a table whose capture
   * is missing, disabled or from an older deltasync. Called by extract before any read.
   */
  checkCapture(request: CaptureRequest): Promise<void>;
  /**
   * Refuses (ConfigError) tables of which one reads another's rows, as a PostgreSQL inheritance
   * parent reads its children's: the replica would get those rows twice. Called by extract and
   * by `capture` before they read or install anything. Optional: engines without table
   * inheritance have nothing to check.
   */
  checkTablesDistinct?(tables: string[]): Promise<void>;
  /** Timestamp mode: rows after a (ts, key) cursor, ordered by (ts, key). */
  readKeyset(request: ReadKeysetRequest): AsyncIterable<WireRow>;
  /** Every row, ordered by key (snapshot mode, verify). */
  readAll(request: ReadAllRequest): AsyncIterable<WireRow>;
  /** Changelog mode: each key whose log rows are in `upTo` and not in `after`, as its current row or a delete. */
  readChangelog(request: ChangelogRequest): AsyncIterable<ChangelogRow>;
  /**
   * Format 2 fast path (engines whose own export is the canonical COPY text: PostgreSQL). The
   * same reads as readChanges, readKeyset and readAll, in the same snapshot and order, as
   * canonical COPY text (docs/format.md) of `columns`, with no per-row work in Node. Optional:
   * extract falls back to the wire-row reads and encodes them itself.
   */
  copyChanges?(request: ReadChangesRequest): CopyText;
  copyKeyset?(request: ReadKeysetRequest): CopyText;
  copyAll?(request: ReadAllRequest): CopyText;
  /**
   * Format 2 fast path of readChangelog, one kind at a time (they go to separate parts):
   * `upserts`, each changed key's row as it is now (`columns`); `deletes`, the key values (in
   * `key` order) of the changed keys whose row is gone. Both calls see the same snapshot.
   */
  copyChangelog?(request: ChangelogRequest, kind: 'upserts' | 'deletes'): CopyText;
  /** The tables `table` references through foreign keys (to order parents first). */
  referencedTables(table: string): Promise<string[]>;
  /** The database server's current time as a wire value of the given type (timestamp mode). */
  serverTime(type: 'timestamp' | 'timestamptz'): Promise<string>;
  /**
   * DDL for the change log and its triggers (`deltasync capture`), including what upgrades a
   * change log or triggers made by an older deltasync in place, and triggers on the tables that
   * write into a captured table (PostgreSQL inheritance children).
   */
  captureDdl(request: CaptureRequest): Promise<CaptureDdl>;
  /** Runs DDL (only `deltasync capture --apply` does; extract never writes to the source). */
  executeDdl(statements: string[]): Promise<void>;
  /**
   * Deletes shipped change-log rows (see PruneChangelogRequest); returns how many. Needs DELETE on
   * the change log only; run by `deltasync capture --prune`, or by extract with
   * `retention.changelog`. A position this engine did not write is a ConfigError.
   */
  pruneChangelog(request: PruneChangelogRequest): Promise<number>;
  close(): Promise<void>;
}

export interface ApplyRowsRequest {
  table: string;
  /** Key columns; rows are upserted by these. */
  key: string[];
  /** The columns the wire rows carry, in order. Only these target columns are written. */
  columns: ColumnInfo[];
  rows: AsyncIterable<WireRow>; /**
   * Rows equal to the replica's must stay as they are, not be written again (a base table:
   * mostly rows the replica already has). Without it an engine may rewrite them when that is
   * cheaper (PostgreSQL's replacing load).
   */
  keepUnchanged?: boolean;
  /**
   * How many rows the request carries (the manifest's count), when known: an engine may pick
   * a way worth its setup (PostgreSQL's second session only pays for bigger tables).
   */
  expectedRows?: number;
}

/** What is recorded inside the target, in the same transaction as the data. */
export interface AppliedRecord {
  job: string;
  logId: string;
  /** The manifest file name, for humans. */
  delta: string;
}

/** Work done inside one target transaction. */
export interface TargetTransaction {
  /** The logId last applied for this job, read inside the transaction, or null if never. */
  appliedLogId(job: string): Promise<string | null>;
  /**
   * Relaxes the replica's foreign-key checks on these tables until the transaction ends, as
   * replication appliers do, so that rows of one delta that reference each other apply in any
   * order (PostgreSQL: `session_replication_role = replica`; MariaDB/MySQL: `foreign_key_checks
   * = 0`; SQLite: `defer_foreign_keys`; SQL Server: NOCHECK, re-checked before commit). An engine
   * that may not relax them says so when a row needs it (ConfigError naming the grant).
   */
  relaxForeignKeys(tables: string[]): Promise<void>;
  /**
   * Upserts every row by key. Consumes `rows` to the end; if the iterable throws (a checksum or
   * row count failed), the error propagates and the caller rolls back. Returns the row count.
   */
  applyRows(request: ApplyRowsRequest): Promise<number>;
  /**
   * Format 2 fast path (engines that can take COPY text as bytes: PostgreSQL COPY, MariaDB LOAD
   * DATA): the same upsert as applyRows, from canonical COPY text, without per-row JavaScript.
   * Optional: load falls back to decoding lines into wire rows for applyRows.
   */
  copyRows?(request: CopyRowsRequest): Promise<number>;
  /** Runs one DDL statement inside the transaction (only where the writer's ddlInTransaction). */
  executeDdl(sql: string): Promise<void>;
  /** Records the applied logId for the job (creates or updates the bookkeeping row). */
  recordApplied(record: AppliedRecord): Promise<void>;
  /** Deletes the rows whose key values (in `key` order, typed by `columns`) are given. Returns the count deleted. */
  deleteRows(request: DeleteRowsRequest): Promise<number>;
  /**
   * Deletes every row whose key is NOT among the given ones (a base table: the delta holds the
   * table's whole content). Stages the keys on the server, so memory stays flat. Returns the
   * count deleted.
   */
  deleteRowsNotIn(request: DeleteRowsRequest): Promise<number>;
}

/**
 * Format 2 (docs/format.md): rows as canonical COPY text, one '\n'-terminated line per row, with
 * chunk boundaries anywhere. The iterable throws at its end when a part's checksum or row count
 * does not match its manifest; the caller then rolls the transaction back.
 */
export type CopyText = AsyncIterable<Buffer>;

export interface CopyRowsRequest {
  table: string;
  /** Key columns; rows are upserted by these. */
  key: string[];
  /** The columns of every line, in line order (the delta's columns, as the manifest lists them). */
  columns: ColumnInfo[];
  /** Indexes into `columns` of the ones the target has and load writes; the others are skipped. */
  keep: number[];
  data: CopyText; /**
   * Rows equal to the replica's must stay as they are, not be written again (a base table:
   * mostly rows the replica already has). Without it an engine may rewrite them when that is
   * cheaper (PostgreSQL's replacing load).
   */
  keepUnchanged?: boolean;
  /**
   * How many rows the request carries (the manifest's count), when known: an engine may pick
   * a way worth its setup (PostgreSQL's second session only pays for bigger tables).
   */
  expectedRows?: number;
}

export interface DeleteRowsRequest {
  table: string;
  /** The key columns, in the order of the values in each row. */
  key: ColumnInfo[];
  rows: AsyncIterable<WireRow>;
}

/** A replica table's column, as load plans a delta table against it. */
export interface TargetColumn extends ColumnInfo {
  /**
   * The replica computes it itself (`GENERATED ALWAYS AS …`, a computed column): nothing may be
   * written into it, so load leaves the delta's values of it out.
   */
  generated?: boolean;
}

/** Writes to a replica database. */
export interface TargetWriter {
  readonly engine: EngineName;
  /** The table's columns, or null when it does not exist. */
  columns(table: string): Promise<TargetColumn[] | null>;
  /** Whether DDL may run inside a load's transaction (MariaDB/MySQL commit it implicitly). */
  readonly ddlInTransaction: boolean;
  /**
   * The statement adding `column` to `table` as a nullable column of a native type that holds
   * every value of its logical type (`load.missingColumns`; also printed for the operator).
   */
  addColumnSql(table: string, column: ColumnInfo): string;
  /** Creates the bookkeeping table `deltasync_applied` if it is missing (idempotent). */
  prepare(): Promise<void>;
  /** The logId last applied for the job, outside any transaction (for status). */
  appliedLogId(job: string): Promise<string | null>;
  /** Runs fn in one transaction: commits when it resolves, rolls back and rethrows when it throws. */
  transaction<T>(fn: (tx: TargetTransaction) => Promise<T>): Promise<T>;
  /** Every row, ordered by key (verify). */
  readAll(request: ReadAllRequest): AsyncIterable<WireRow>;
  /** Runs one SQL statement on its own, after a delta committed (the after-load hook). */
  execute(sql: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * The native type each engine gives a column that load adds (`load.missingColumns: 'add'`): one
 * that holds every value of the logical type exactly (an `int` column becomes a 64-bit one, a
 * `decimal` the engine's widest). The operator may prefer a narrower type and add it by hand.
 */
export type AddedColumnTypes = Record<LogicalType, string>;

/** What each engine folder's index.ts exports as default. */
export interface EngineModule {
  openSource(config: DbConfig): Promise<SourceReader>;
  openTarget(config: DbConfig): Promise<TargetWriter>;
}

/** The name of the bookkeeping table every target gets (see TargetWriter.prepare). */
export const APPLIED_TABLE = 'deltasync_applied';
