/**
 * The stable high-water mark on SQL Server: the highest logId such that no transaction still
 * running can later commit a row at or below it (GUIDE, "Capture modes"). A row skipped because
 * its transaction committed after extract read past its logId is lost forever, silently.
 *
 * - rowversion logIds (and the change log, whose log_id is a rowversion): the server knows
 *   exactly. MIN_ACTIVE_ROWVERSION() is the lowest rowversion still held by an uncommitted
 *   transaction in the database, so everything at or below MIN_ACTIVE_ROWVERSION() - 1 is
 *   committed; the mark is min(max, that). No privilege is needed, and no waiting: what is still
 *   in flight ships next run.
 * - any other logId (IDENTITY, a sequence default, ...): (1) read the maxima; (2) list the
 *   transactions that hold a write lock (IX, X, ...) on one of the tables; (3) wait until none
 *   of them is still active, up to maxWaitSeconds, else give up (null: nothing from these tables
 *   this run). A transaction must lock the table for writing before its INSERT takes an
 *   IDENTITY value, so any transaction holding a value at or below the maxima of (1) holds its
 *   lock at (2). Listing the table's writers rather than every open transaction of the server
 *   keeps a long report, or a writer of other tables, from stalling extract. The window that
 *   remains: a logId taken before the row is written (a `NEXT VALUE
 *   FOR` read early, then inserted later) — `capture.settleLagSeconds` covers it. Reading the
 *   locks needs VIEW SERVER STATE (VIEW SERVER PERFORMANCE STATE from SQL Server 2022); without
 *   it the mark falls back to the plain maximum with a warning.
 *
 * The tables of one job are expected to share one counter (one rowversion, or one sequence).
 */
import { logIdKind, literal, type TableName } from './sql.js';
import { quoteIdent, type MssqlColumn } from './types.js';
import { caughtUp } from '../high-water.js';
import type { HighWaterMark } from '../types.js';

/** A table and its logId column, with its cursor when the caller has one (see caughtUp). */
export interface HighWaterColumn {
  table: TableName;
  logId: MssqlColumn;
  after?: string;
}

/** How the algorithm reaches the server and the clock; a fake in unit tests. */
export interface HighWaterDeps {
  /** Runs one statement, returning its rows. */
  query(sql: string): Promise<Record<string, unknown>[]>;
  sleep(ms: number): Promise<void>;
  now(): number;
  /** Reports that the mark is less safe than it should be (once per reader is enough). */
  warn(message: string): void;
}

/** How often to look whether the transactions that may still commit lower logIds are done. */
export const POLL_MS = 50;

/**
 * Server errors that mean "this login may not read the lock DMVs": 300 (VIEW SERVER STATE
 * permission was denied), 297 (the user does not have permission), 262 (permission denied in
 * database: Azure SQL Database's VIEW DATABASE STATE), 229 (SELECT denied).
 */
export const PERMISSION_DENIED = new Set([229, 262, 297, 300]);

/** Lock modes a transaction holds on a table it writes to (intent or full, bulk included). */
const WRITE_LOCK_MODES = ['IX', 'SIX', 'X', 'IU', 'SIU', 'UIX', 'U', 'BU'];

/**
 * (1): each table's maximum as text (`m0`, `m1`, ...), and, when one of them is a rowversion,
 * the last rowversion no open transaction holds (`stable_rv`). One statement, one round trip.
 */
export function maxLogIdsSql(columns: HighWaterColumn[]): string {
  const maxima = columns.map(({ table, logId }, i) => {
    const col = quoteIdent(logId.name);
    const max =
      logIdKind(logId) === 'rowversion'
        ? `CONVERT(varchar(20), CONVERT(bigint, MAX(${col})))`
        : `CONVERT(varchar(40), MAX(${col}))`;
    return `(SELECT ${max} FROM ${table.quoted}) AS m${i}`;
  });
  if (columns.some((c) => c.logId.baseType === 'rowversion')) {
    maxima.push('CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable_rv');
  }
  return `SELECT ${maxima.join(', ')}`;
}

/**
 * (2): the transactions of other sessions holding a write lock on one of the tables
 * (`transaction_id`, as text). Every writer holds an intent lock on the table itself (OBJECT),
 * whatever its row, page or partition locks, until it commits or rolls back.
 */
export function writersSql(tables: TableName[]): string {
  const ids = tables.map((t) => `OBJECT_ID(${literal(t.quoted)})`).join(', ');
  const modes = WRITE_LOCK_MODES.map((m) => `'${m}'`).join(', ');
  return (
    'SELECT DISTINCT CONVERT(varchar(20), l.request_owner_id) AS transaction_id ' +
    'FROM sys.dm_tran_locks AS l ' +
    "WHERE l.resource_database_id = DB_ID() AND l.resource_type = 'OBJECT' " +
    `AND l.resource_associated_entity_id IN (${ids}) ` +
    "AND l.request_owner_type = 'TRANSACTION' AND l.request_session_id <> @@SPID " +
    `AND l.request_mode IN (${modes})`
  );
}

/** (3): how many of these transactions are still active (`running`). */
export function runningSql(transactionIds: string[]): string {
  for (const id of transactionIds) {
    if (!/^\d+$/.test(id)) throw new Error(`not a transaction id: '${id}'`);
  }
  return (
    'SELECT COUNT(*) AS running FROM sys.dm_tran_active_transactions ' +
    `WHERE transaction_id IN (${transactionIds.join(', ')})`
  );
}

const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const bigMax = (a: string | null, b: string | null): string | null =>
  a === null ? b : b === null ? a : BigInt(b) > BigInt(a) ? b : a;
const bigMin = (a: string, b: string): string => (BigInt(b) < BigInt(a) ? b : a);

/** A driver error's server error number, if it has one. */
function errorNumber(err: unknown): number | undefined {
  const e = err as {
    number?: number;
    originalError?: { number?: number; info?: { number?: number } };
  };
  return e?.number ?? e?.originalError?.info?.number ?? e?.originalError?.number;
}

/**
 * Waits until none of `ids` is active; false when maxWaitSeconds passed first. The first look
 * is immediate: most writers are done by the time we ask.
 */
async function waitFor(ids: string[], maxWaitSeconds: number, deps: HighWaterDeps) {
  const deadline = deps.now() + maxWaitSeconds * 1000;
  for (;;) {
    const [row] = await deps.query(runningSql(ids));
    if (Number(row?.running ?? 0) === 0) return true;
    const left = deadline - deps.now();
    if (left <= 0) return false;
    await deps.sleep(Math.min(POLL_MS, left));
  }
}

/**
 * The stable high-water mark over `columns` (see the top of this file): null when they are
 * empty, null with `heldBy` when writers did not finish within maxWaitSeconds.
 */
export async function stableHighWater(
  columns: HighWaterColumn[],
  maxWaitSeconds: number,
  deps: HighWaterDeps,
): Promise<HighWaterMark> {
  if (columns.length === 0) return { high: null };
  const [row = {}] = await deps.query(maxLogIdsSql(columns));
  let high: string | null = null;
  for (let i = 0; i < columns.length; i++) high = bigMax(high, text(row[`m${i}`]));
  if (high === null) return { high: null };
  const stableRv = text(row.stable_rv);
  if (stableRv !== null) high = bigMin(high, stableRv);

  const counted = columns.filter((c) => c.logId.baseType !== 'rowversion');
  // Nothing above the cursors: nothing to ship, so nobody to wait for.
  if (counted.length === 0 || caughtUp(columns, high)) return { high };
  let writers: string[];
  try {
    const rows = await deps.query(writersSql(counted.map((c) => c.table)));
    writers = rows.map((r) => String(r.transaction_id));
  } catch (err) {
    if (!PERMISSION_DENIED.has(errorNumber(err) ?? -1)) throw err;
    deps.warn(
      `cannot read sys.dm_tran_locks (${(err as Error).message.split('\n')[0]}): the high-water ` +
        'mark of ' +
        counted.map((c) => c.table.label).join(', ') +
        ' is their plain maximum, and a transaction that took a lower logId but commits later ' +
        'would be missed; GRANT VIEW SERVER STATE (SQL Server 2022: VIEW SERVER PERFORMANCE ' +
        'STATE) to the extract login, or set capture.settleLagSeconds',
    );
    return { high };
  }
  if (writers.length === 0) return { high };
  if (await waitFor(writers, maxWaitSeconds, deps)) return { high };
  return { high: null, heldBy: `SQL Server transactions ${writers.join(', ')}` };
}
