/**
 * The SQL text the MySQL/MariaDB reader and writer send, built by pure functions so that unit
 * tests (`test/unit/mysql-sql.test.ts`) pin it exactly. Values arrive here already rendered as
 * SQL literals (see `writeEncoder` in `types.ts`); identifiers are quoted here.
 */
import { ConfigError } from '../../errors.js';
import type { NthLogIdRequest } from '../types.js';
import { openRanges, type GapCursor, type IdRange } from './gaps.js';
import { quoteIdent, quoteTable } from './types.js';

/** logId bounds are inlined as numeric literals: a string bound would compare as a double. */
const LOG_ID_RE = /^-?\d+(\.\d+)?$/;

/** A logId bound as a numeric literal; anything else is refused (it comes from state files). */
export function logIdLiteral(value: string, table: string): string {
  if (!LOG_ID_RE.test(value)) {
    throw new ConfigError(`logId bound '${value}' for table ${table} is not a decimal number`);
  }
  return value;
}

/** `SELECT … WHERE after < col <= upTo ORDER BY col`: the logid mode read. */
export function changesSql(
  table: string,
  selects: string[],
  logIdColumn: string,
  after: string,
  upTo: string,
): string {
  const log = quoteIdent(logIdColumn);
  return (
    `SELECT ${selects.join(', ')} FROM ${quoteTable(table)}` +
    ` WHERE ${log} > ${logIdLiteral(after, table)} AND ${log} <= ${logIdLiteral(upTo, table)}` +
    ` ORDER BY ${log}`
  );
}

/** The largest value of each logId column, and the largest of them all, in one statement. */
export function maxAcrossSql(tables: { table: string; logIdColumn: string }[]): string {
  const parts = tables.map(
    (t) => `SELECT MAX(${quoteIdent(t.logIdColumn)}) AS m FROM ${quoteTable(t.table)}`,
  );
  return `SELECT MAX(m) AS m FROM (${parts.join(' UNION ALL ')}) u`;
}

/**
 * The n-th logId across several tables. Each table gives at most n candidates through its
 * index (`ORDER BY … LIMIT n`), so a backlog of millions is never sorted as a whole.
 */
export function nthLogIdSql(request: NthLogIdRequest): string {
  const { n } = request;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`the row limit must be a positive integer, not ${n}`);
  }
  const parts = request.tables.map((t) => {
    const col = quoteIdent(t.logIdColumn);
    return (
      `(SELECT ${col} AS l FROM ${quoteTable(t.table)}` +
      ` WHERE ${col} > ${logIdLiteral(t.after, t.table)} AND ${col} <= ${logIdLiteral(request.upTo, t.table)}` +
      ` ORDER BY ${col} LIMIT ${n})`
    );
  });
  return `SELECT l FROM (${parts.join(' UNION ALL ')}) u ORDER BY l LIMIT 1 OFFSET ${n - 1}`;
}

/** A keyset read: the columns to select, the cursor columns, and the bounds as SQL literals. */
export interface KeysetSqlRequest {
  table: string;
  selects: string[];
  tsColumn: string;
  key: string[];
  /** The horizon: rows with tsColumn <= this literal. */
  upTo: string;
  /** The cursor as literals; `key` empty means every row with tsColumn >= ts. */
  after: { ts: string; key: string[] } | null;
  limit?: number;
}

/** `(k1, k2, …) > (v1, v2, …)` spelled out, because MariaDB uses no index for a row comparison. */
export function rowAfter(columns: string[], values: string[]): string {
  const [first, ...rest] = columns.map(quoteIdent);
  const [value, ...others] = values;
  if (rest.length === 0) return `${first} > ${value}`;
  return `(${first} > ${value} OR (${first} = ${value} AND ${rowAfter(columns.slice(1), others)}))`;
}

/**
 * Rows after a (ts, key) cursor up to the horizon, ordered by (ts, key). The redundant
 * `ts >= cursor` in front is what the range optimizer turns into an index range; the OR after it
 * only filters the rows that share the cursor's timestamp.
 */
export function keysetSql(request: KeysetSqlRequest): string {
  const { after, limit } = request;
  const ts = quoteIdent(request.tsColumn);
  const conditions = [`${ts} <= ${request.upTo}`];
  if (after) {
    conditions.push(`${ts} >= ${after.ts}`);
    if (after.key.length > 0) {
      if (after.key.length !== request.key.length) {
        throw new ConfigError(
          `table ${request.table}: the timestamp cursor has ${after.key.length} key values, the key has ${request.key.length} columns`,
          {
            hint: 'the key changed since the last run: reset the table cursor in the extract state',
          },
        );
      }
      conditions.push(rowAfter([request.tsColumn, ...request.key], [after.ts, ...after.key]));
    }
  }
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
    throw new ConfigError(`the row limit must be a positive integer, not ${limit}`);
  }
  return (
    `SELECT ${request.selects.join(', ')} FROM ${quoteTable(request.table)}` +
    ` WHERE ${conditions.join(' AND ')}` +
    ` ORDER BY ${[request.tsColumn, ...request.key].map(quoteIdent).join(', ')}` +
    (limit === undefined ? '' : ` LIMIT ${limit}`)
  );
}

/** Every row ordered by key (snapshot mode and `verify`). */
export function readAllSql(table: string, selects: string[], key: string[]): string {
  return `SELECT ${selects.join(', ')} FROM ${quoteTable(table)} ORDER BY ${key.map(quoteIdent).join(', ')}`;
}

/** One batch of deletes by key: `k IN (…)`, or `(k1, k2) IN ((…), …)` for a composite key. */
export function deleteSql(table: string, key: string[], tuples: string[][]): string {
  const single = key.length === 1;
  const target = single ? quoteIdent(key[0]!) : `(${key.map(quoteIdent).join(', ')})`;
  const values = tuples.map((t) => (single ? t[0]! : `(${t.join(', ')})`));
  return `DELETE FROM ${quoteTable(table)} WHERE ${target} IN (${values.join(', ')})`;
}

/** The tables a table references by foreign keys, in its own schema. */
export const REFERENCED_TABLES_SQL =
  'SELECT DISTINCT REFERENCED_TABLE_NAME AS name FROM information_schema.KEY_COLUMN_USAGE' +
  ' WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?' +
  ' AND REFERENCED_TABLE_SCHEMA = TABLE_SCHEMA AND REFERENCED_TABLE_NAME <> TABLE_NAME' +
  ' ORDER BY REFERENCED_TABLE_NAME';

// ---------------------------------------------------------------- change-log windows (gaps.ts)

/** `log_id BETWEEN a AND b OR …` for id ranges (`FALSE` for none). */
export function inRangesSql(ranges: IdRange[], table: string): string {
  if (ranges.length === 0) return 'FALSE';
  return ranges
    .map(([a, b]) =>
      a === b
        ? `log_id = ${logIdLiteral(a, table)}`
        : `log_id BETWEEN ${logIdLiteral(a, table)} AND ${logIdLiteral(b, table)}`,
    )
    .join(' OR ');
}

/**
 * The change-log rows in position `upTo` and not in `after` (see gaps.ts): above after's high
 * or in one of its gaps, at most upTo's high, and in none of upTo's gaps.
 */
export function positionWindowSql(after: GapCursor, upTo: GapCursor, table: string): string {
  const newer = `log_id > ${logIdLiteral(after.high, table)}`;
  const reopened = openRanges(after);
  const from = reopened.length === 0 ? newer : `(${newer} OR ${inRangesSql(reopened, table)})`;
  const open = openRanges(upTo);
  return (
    `${from} AND log_id <= ${logIdLiteral(upTo.high, table)}` +
    (open.length === 0 ? '' : ` AND NOT (${inRangesSql(open, table)})`)
  );
}

/** The highest log_id the snapshot shows, as text. */
export function maxLogIdSql(changelog: string): string {
  return `SELECT CAST(MAX(log_id) AS CHAR) AS m FROM ${quoteTable(changelog)}`;
}

/** The n-th log_id above `after` (the row limit's cut). */
export function nthAfterSql(changelog: string, after: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(`the row limit must be a positive integer, not ${n}`);
  }
  return (
    `SELECT CAST(log_id AS CHAR) AS l FROM ${quoteTable(changelog)}` +
    ` WHERE log_id > ${logIdLiteral(after, changelog)} ORDER BY log_id LIMIT 1 OFFSET ${n - 1}`
  );
}

/**
 * The ids in (after, upTo] the snapshot does not show, as ranges `a`..`b`: each visible id's
 * distance to the one before it (upTo itself is visible, so there is no hole above the last).
 */
export function holesSql(changelog: string, after: string, upTo: string): string {
  const a = logIdLiteral(after, changelog);
  return (
    'SELECT CAST(prev + 1 AS CHAR) AS a, CAST(log_id - 1 AS CHAR) AS b FROM (' +
    `SELECT log_id, COALESCE(LAG(log_id) OVER (ORDER BY log_id), ${a}) AS prev` +
    ` FROM ${quoteTable(changelog)} WHERE log_id > ${a} AND log_id <= ${logIdLiteral(upTo, changelog)}` +
    ') x WHERE log_id > prev + 1 ORDER BY log_id'
  );
}

/** The ids of these ranges that the snapshot shows. */
export function visibleInSql(changelog: string, ranges: IdRange[]): string {
  return (
    `SELECT CAST(log_id AS CHAR) AS l FROM ${quoteTable(changelog)}` +
    ` WHERE ${inRangesSql(ranges, changelog)} ORDER BY log_id`
  );
}
