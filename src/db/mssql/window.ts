/**
 * Exact change-log windows on SQL Server: which change-log rows a delta ships, and the SQL that
 * reads them inside the delta's SNAPSHOT transaction. Pure functions, pinned by
 * `test/unit/mssql-window.test.ts`.
 *
 * The change log's `log_id` is a rowversion. MIN_ACTIVE_ROWVERSION() - 1, read *before* the
 * delta's snapshot is taken, is the **stable** mark: every rowversion at or below it belongs to
 * a transaction that had ended by then, so the snapshot (taken after) shows every committed log
 * row at or below it. The snapshot may also show rows above the mark (transactions that committed
 * between the two statements, or while a long transaction held MIN_ACTIVE_ROWVERSION down): the
 * rows read in the snapshot already carry those changes, so the delta ships their log rows too
 * and the position lists them (**extra**), so that the next delta neither ships them again nor
 * skips a lower rowversion that commits later. A position is thus "every log row at or below
 * `stable`, plus the `extra` ones": the delta is exactly what its snapshot shows, nothing waits,
 * and nothing committed is left behind.
 *
 * Rowversions are shared by the whole database, so the log's ids have no meaningful holes to
 * track (unlike MariaDB's AUTO_INCREMENT, see `../mysql/gaps.ts`). The extra list is short: the
 * log rows committed in the moment between the mark and the snapshot, or, while a transaction
 * stays open for long, those committed since it began (it ends with that transaction).
 *
 * A position is written as `mssql:1200`, or `mssql:1200;1205,1207` with extras; a plain decimal
 * (the form of every cursor before) is still read as a position without extras.
 */
import { ConfigError } from '../../errors.js';
import type { Query, TableName } from './sql.js';
import { quoteIdent, type MssqlColumn } from './types.js';

export interface MssqlPosition {
  /** Every change-log row with log_id <= stable (a rowversion as a decimal) is in. */
  stable: string;
  /** And these above it, in increasing order. */
  extra: string[];
}

const DECIMAL = /^\d+$/;

/** Reads a position: a plain decimal (the old cursors) or `mssql:<stable>;<extra>,<extra>…`. */
export function parsePosition(text: string): MssqlPosition {
  if (DECIMAL.test(text)) return { stable: text, extra: [] };
  const m = /^mssql:(\d+)(?:;(\d+(?:,\d+)*))?$/.exec(text);
  if (!m) {
    throw new ConfigError(
      `the change-log cursor '${text.slice(0, 80)}' was not written by the SQL Server reader`,
      {
        hint: 'restore the extract state file, or set the changelog cursor to a plain rowversion already shipped (at worst a harmless re-ship)',
      },
    );
  }
  return { stable: m[1]!, extra: m[2] === undefined ? [] : m[2].split(',') };
}

export function formatPosition(p: MssqlPosition): string {
  // Always prefixed: a plain decimal is what deltasync wrote before positions existed, and
  // extract takes it to mean the tables were seeded then (extract/modes/changelog.ts).
  return p.extra.length === 0 ? `mssql:${p.stable}` : `mssql:${p.stable};${p.extra.join(',')}`;
}

/** Whether the database lets a transaction run at SNAPSHOT isolation (`ok` = 1). */
export const SNAPSHOT_ALLOWED_SQL =
  'SELECT CASE WHEN snapshot_isolation_state = 1 THEN 1 ELSE 0 END AS ok FROM sys.databases WHERE database_id = DB_ID()';

/** The stable mark (`stable`), read before the snapshot. */
export const STABLE_ROWVERSION_SQL =
  'SELECT CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable';

/** A rowversion as an index-friendly binary(8) literal. */
export function rowversionLiteral(decimal: string): string {
  if (!DECIMAL.test(decimal)) throw new ConfigError(`'${decimal}' is not a rowversion`);
  return `0x${BigInt(decimal).toString(16).padStart(16, '0')}`;
}

function inList(col: string, ids: string[]): string {
  return `${col} IN (${ids.map(rowversionLiteral).join(', ')})`;
}

/** The log rows in position `p` (as a condition on `col`). */
function inPosition(col: string, p: MssqlPosition): string {
  const below = `${col} <= ${rowversionLiteral(p.stable)}`;
  return p.extra.length === 0 ? below : `(${below} OR ${inList(col, p.extra)})`;
}

/** The log rows in `upTo` and not in `after`, as a condition on the log_id column `col`. */
export function windowCondition(col: string, after: MssqlPosition, upTo: MssqlPosition): string {
  const parts = [`${col} > ${rowversionLiteral(after.stable)}`];
  if (after.extra.length > 0) parts.push(`NOT ${inList(col, after.extra)}`);
  parts.push(inPosition(col, upTo));
  return parts.join(' AND ');
}

/**
 * The log rows the snapshot shows above `upTo.stable` that `after` does not hold (the next
 * position's extra), in order; `n` caps the count (the row limit).
 */
export function visibleAboveQuery(
  log: TableName,
  logId: MssqlColumn,
  after: MssqlPosition,
  stable: string,
): Query {
  const col = quoteIdent(logId.name);
  const from = BigInt(after.stable) > BigInt(stable) ? after.stable : stable;
  const conditions = [`${col} > ${rowversionLiteral(from)}`];
  if (after.extra.length > 0) conditions.push(`NOT ${inList(col, after.extra)}`);
  return {
    text:
      `SELECT CONVERT(varchar(20), CONVERT(bigint, ${col})) AS id FROM ${log.quoted}` +
      ` WHERE ${conditions.join(' AND ')} ORDER BY ${col}`,
    params: [],
  };
}

/** The position after `after` once everything up to `stable` and the visible extras ship. */
export function nextPosition(
  after: MssqlPosition,
  stable: string,
  visible: string[],
): MssqlPosition {
  const s = BigInt(stable) > BigInt(after.stable) ? stable : after.stable;
  const keep = after.extra.filter((e) => BigInt(e) > BigInt(s));
  const extra = [...new Set([...keep, ...visible])]
    .filter((e) => BigInt(e) > BigInt(s))
    .sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
  return { stable: s, extra };
}

/** The n-th log row (by log_id) in `upTo` and not in `after`: the row limit's cut. */
export function nthInWindowQuery(
  log: TableName,
  col: string,
  after: MssqlPosition,
  upTo: MssqlPosition,
  n: number,
): Query {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`the row limit must be a positive integer, not ${n}`);
  }
  return {
    text:
      `SELECT CONVERT(varchar(20), CONVERT(bigint, ${col})) AS id FROM ${log.quoted}` +
      ` WHERE ${windowCondition(col, after, upTo)} ORDER BY ${col} OFFSET ${n - 1} ROWS FETCH NEXT 1 ROWS ONLY`,
    params: [],
  };
}

/** The highest log row in `upTo` and not in `after` (`id` NULL when there is none). */
export function maxInWindowQuery(
  log: TableName,
  col: string,
  after: MssqlPosition,
  upTo: MssqlPosition,
): Query {
  return {
    text:
      `SELECT CONVERT(varchar(20), CONVERT(bigint, MAX(${col}))) AS id FROM ${log.quoted}` +
      ` WHERE ${windowCondition(col, after, upTo)}`,
    params: [],
  };
}
