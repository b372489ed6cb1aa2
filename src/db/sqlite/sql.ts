/**
 * The SQL text the SQLite reader and writer send, built by pure functions (pinned by
 * `test/unit/sqlite-types.test.ts` where it matters). Values always travel as parameters.
 */
import type { ApplyRowsRequest, NthLogIdRequest, ReadAllRequest } from '../types.js';
import { quoteIdent } from './connection.js';

export const list = (names: string[]) => names.map(quoteIdent).join(', ');

export function maxLogIdSql(table: string, logIdColumn: string): string {
  return `SELECT MAX(${quoteIdent(logIdColumn)}) AS m FROM ${quoteIdent(table)}`;
}

/** Parameters: each table's (after, upTo), then the offset n - 1. */
export function nthLogIdSql(req: NthLogIdRequest): string {
  const parts = req.tables.map((t) => {
    const log = quoteIdent(t.logIdColumn);
    return `SELECT ${log} AS l FROM ${quoteIdent(t.table)} WHERE ${log} > ? AND ${log} <= ?`;
  });
  return `SELECT l FROM (${parts.join(' UNION ALL ')}) ORDER BY l LIMIT 1 OFFSET ?`;
}

/** Parameters: after, upTo. */
export function readChangesSql(table: string, columns: string[], logIdColumn: string): string {
  const log = quoteIdent(logIdColumn);
  return `SELECT ${list(columns)} FROM ${quoteIdent(table)}
       WHERE ${log} > ? AND ${log} <= ? ORDER BY ${log}`;
}

export function readAllSql(req: ReadAllRequest): string {
  return `SELECT ${list(req.columns.map((c) => c.name))} FROM ${quoteIdent(req.table)} ORDER BY ${list(req.key)}`;
}

/** Parameters: upTo, then (ts, key...) when `afterKeys` > 0, or ts alone when `after`. */
export function keysetSql(req: {
  table: string;
  columns: string[];
  tsColumn: string;
  key: string[];
  after: 'none' | 'ts' | 'ts-and-key';
  limit?: number;
}): string {
  const ts = quoteIdent(req.tsColumn);
  const conditions = [`${ts} <= ?`];
  if (req.after === 'ts-and-key') {
    conditions.push(`(${ts}, ${list(req.key)}) > (?${', ?'.repeat(req.key.length)})`);
  } else if (req.after === 'ts') {
    conditions.push(`${ts} >= ?`);
  }
  const limit = req.limit === undefined ? '' : ` LIMIT ${Number(req.limit)}`;
  return `SELECT ${list(req.columns)} FROM ${quoteIdent(req.table)}
       WHERE ${conditions.join(' AND ')} ORDER BY ${ts}, ${list(req.key)}${limit}`;
}

/**
 * Each key whose change-log rows are in (after, upTo], with its current row (`found` = 0 when it
 * is gone: a delete). Parameters: table name, after, upTo. Integer/numeric key columns compare
 * with the change log's text by SQLite's affinity rules.
 */
export function changelogSql(
  changelog: string,
  table: string,
  columns: string[],
  key: string[],
): string {
  const join = key
    .map((k, i) => `t.${quoteIdent(k)} = json_extract(c.key_values, '$[${i}]')`)
    .join(' AND ');
  return `WITH c AS (
        SELECT key_values, MAX(log_id) AS last FROM ${quoteIdent(changelog)}
        WHERE table_name = ? AND log_id > ? AND log_id <= ? GROUP BY key_values)
      SELECT c.key_values, t.${quoteIdent(key[0]!)} IS NOT NULL AS found,
        ${columns.map((col) => `t.${quoteIdent(col)}`).join(', ')}
      FROM c LEFT JOIN ${quoteIdent(table)} t ON ${join} ORDER BY c.last`;
}

/** `INSERT … ON CONFLICT (key) DO UPDATE` writing only the delta's columns. */
export function upsertSql(req: Pick<ApplyRowsRequest, 'table' | 'key' | 'columns'>): string {
  const cols = req.columns.map((c) => quoteIdent(c.name));
  const keys = new Set(req.key);
  const updates = req.columns
    .filter((c) => !keys.has(c.name))
    .map((c) => `${quoteIdent(c.name)} = excluded.${quoteIdent(c.name)}`);
  const onConflict = updates.length > 0 ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING';
  return `INSERT INTO ${quoteIdent(req.table)} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
    ON CONFLICT (${req.key.map(quoteIdent).join(', ')}) ${onConflict}`;
}
