/**
 * Reading rows out of PostgreSQL: the `COPY (SELECT …) TO STDOUT` statements for each kind of
 * read, and the stream that turns their output into wire rows.
 *
 * A plain COPY in text format costs the server no more than a raw export, and its output is
 * decoded in Node (see `copyDecoder`) without going through node-postgres' row parsing. COPY
 * sends rows only as fast as the consumer pulls them, so memory stays flat.
 */
import type { Readable } from 'node:stream';
import { ConfigError } from '../../errors.js';
import type {
  ChangelogRequest,
  ColumnInfo,
  ReadAllRequest,
  ReadChangesRequest,
  ReadKeysetRequest,
  WireRow,
  WireValue,
} from '../types.js';
import type { TableRef } from './catalog.js';
import { cancelQuery, translateError, type PgConnection } from './connection.js';
import { CopyToStream } from './copy-to.js';
import { parseCopyLine, quoteIdent, quoteLiteral, type CopyDecoder } from './types.js';

const NEWLINE = 0x0a;

const list = (names: string[], prefix = '') =>
  names.map((n) => `${prefix}${quoteIdent(n)}`).join(', ');

function columnList(columns: ColumnInfo[], prefix = ''): string {
  if (columns.length === 0) throw new ConfigError('a read needs at least one column');
  return list(
    columns.map((c) => c.name),
    prefix,
  );
}

/** A wire value as a SQL literal the server casts to the column it is compared with. */
export function wireLiteral(value: WireValue, column: ColumnInfo): string {
  if (value === null) return 'NULL';
  if (column.type === 'binary') return `decode(${quoteLiteral(String(value))}, 'base64')`;
  return quoteLiteral(String(value));
}

/** `after < logId <= upTo`, ordered by logId. COPY takes no parameters: bounds are literals. */
export function readChangesSql(req: ReadChangesRequest, table: TableRef): string {
  const log = quoteIdent(req.logIdColumn);
  // Untyped literals take the logId column's own type, so an index on it is used.
  return (
    `COPY (SELECT ${columnList(req.columns)} FROM ${table.sql} ` +
    `WHERE ${log} > ${quoteLiteral(req.after)} AND ${log} <= ${quoteLiteral(req.upTo)} ` +
    `ORDER BY ${log}) TO STDOUT`
  );
}

/** Every row, ordered by key. */
export function readAllSql(req: ReadAllRequest, table: TableRef): string {
  return `COPY (SELECT ${columnList(req.columns)} FROM ${table.sql} ORDER BY ${list(req.key)}) TO STDOUT`;
}

/** Rows after a `(ts, key…)` cursor up to a horizon, ordered by `(ts, key…)`. */
export function readKeysetSql(req: ReadKeysetRequest, table: TableRef): string {
  const ts = quoteIdent(req.tsColumn);
  const tsColumn = req.columns.find((c) => c.name === req.tsColumn);
  const keyColumns = req.key.map((k) => req.columns.find((c) => c.name === k));
  if (!tsColumn || keyColumns.some((c) => !c)) {
    throw new ConfigError(`table '${req.table}': the timestamp and key columns must be read`);
  }
  const where = [`${ts} <= ${wireLiteral(req.upTo, tsColumn)}`];
  if (req.after && req.after.key.length > 0) {
    // A row comparison uses the (ts, key) index and never skips rows sharing one timestamp.
    const values = [req.after.ts, ...req.after.key].map((v, i) =>
      wireLiteral(v, i === 0 ? tsColumn : keyColumns[i - 1]!),
    );
    where.push(`(${ts}, ${list(req.key)}) > (${values.join(', ')})`);
  } else if (req.after) {
    where.push(`${ts} >= ${wireLiteral(req.after.ts, tsColumn)}`);
  }
  const limit = req.limit === undefined ? '' : ` LIMIT ${Math.max(0, Math.floor(req.limit))}`;
  return (
    `COPY (SELECT ${columnList(req.columns)} FROM ${table.sql} WHERE ${where.join(' AND ')} ` +
    `ORDER BY ${ts}, ${list(req.key)}${limit}) TO STDOUT`
  );
}

/**
 * The CTEs every change-log read starts from: `c`, each key the change log names in the rows
 * matching `window` (SQL over the log's columns, see window.ts) once with its last log_id, and
 * `k`, those keys cast from the log's text to the key columns' types (k0, k1, …), so that a
 * deleted row's key reads like any other value; plus the join of `k` to the table as `t`.
 */
function changelogKeys(
  req: ChangelogRequest,
  changelog: TableRef,
  window: string,
): { with: string; join: string } {
  const keyColumns = req.key.map((k) => req.columns.find((c) => c.name === k));
  if (keyColumns.some((c) => !c?.nativeType)) {
    throw new ConfigError(`table '${req.table}': the key columns must be read, with their types`);
  }
  const casts = keyColumns
    .map((c, i) => `(key_values::json ->> ${i})::${c!.nativeType} AS k${i}`)
    .join(', ');
  return {
    with: `WITH c AS (
      SELECT key_values, max(log_id) AS last FROM ${changelog.sql}
       WHERE table_name = ${quoteLiteral(req.table)}
         AND ${window}
       GROUP BY key_values),
    k AS (SELECT last, ${casts} FROM c)`,
    join: req.key.map((k, i) => `t.${quoteIdent(k)} = k.k${i}`).join(' AND '),
  };
}

/**
 * Each key the change log names in the window, once, in the order of its last change: a
 * `found` flag, the key values, then the row as it is now (NULLs if gone).
 */
export function readChangelogSql(
  req: ChangelogRequest,
  changelog: TableRef,
  table: TableRef,
  window: string,
): string {
  const k = changelogKeys(req, changelog, window);
  return `COPY (
    ${k.with}
    SELECT t.${quoteIdent(req.key[0]!)} IS NOT NULL, ${req.key.map((_, i) => `k.k${i}`).join(', ')},
           ${columnList(req.columns, 't.')}
      FROM k LEFT JOIN ${table.sql} t ON ${k.join}
     ORDER BY k.last) TO STDOUT`;
}

/**
 * The window's changes of one kind as plain rows (format 2 writes upserts and deletes to
 * separate parts): `upserts`, the rows of the keys that exist now, all of `req.columns`;
 * `deletes`, the key values (in key order) of the keys that no longer do.
 */
export function copyChangelogSql(
  req: ChangelogRequest,
  changelog: TableRef,
  table: TableRef,
  window: string,
  kind: 'upserts' | 'deletes',
): string {
  const k = changelogKeys(req, changelog, window);
  const select =
    kind === 'upserts'
      ? `SELECT ${columnList(req.columns, 't.')} FROM k JOIN ${table.sql} t ON ${k.join}`
      : `SELECT ${req.key.map((_, i) => `k.k${i}`).join(', ')} FROM k
          WHERE NOT EXISTS (SELECT 1 FROM ${table.sql} t WHERE ${k.join})`;
  return `COPY (
    ${k.with}
    ${select}
     ORDER BY k.last) TO STDOUT`;
}

/**
 * Splits a stream of COPY output chunks into batches of wire rows (one batch per chunk, so the
 * caller pays one async step per chunk rather than per row). A chunk may end in the middle of a
 * row (or of a UTF-8 character), so bytes after the last newline wait for the next chunk; a
 * newline byte never occurs inside a multi-byte UTF-8 character, so splitting on bytes is safe.
 */
export async function* copyRowBatches(
  chunks: AsyncIterable<Buffer>,
  decoders: CopyDecoder[],
): AsyncGenerator<WireRow[]> {
  let pending: Buffer[] = [];
  for await (const chunk of chunks) {
    const end = chunk.lastIndexOf(NEWLINE);
    if (end < 0) {
      pending.push(chunk);
      continue;
    }
    let text: string;
    if (pending.length === 0) {
      text = chunk.toString('utf8', 0, end);
    } else {
      pending.push(chunk.subarray(0, end));
      text = Buffer.concat(pending).toString('utf8');
      pending = [];
    }
    if (end + 1 < chunk.length) pending.push(chunk.subarray(end + 1));
    yield text.split('\n').map((line) => parseCopyLine(line, decoders));
  }
  if (pending.length > 0) throw new Error('COPY output ended in the middle of a row');
}

/** node-postgres keeps the socket on an untyped internal; dropping it is the last resort. */
export function dropConnection(conn: PgConnection): void {
  (
    conn.client as unknown as { connection: { stream: { destroy(): void } } }
  ).connection.stream.destroy();
}

/** Resolves once a COPY TO stream is over, whether it ended or failed. */
function settled(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.errored) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('error', () => resolve());
    stream.once('close', resolve);
  });
}

/**
 * Stops a COPY TO the consumer no longer wants. A running COPY can only be stopped by
 * cancelling it; what the server already sent is drained so that the connection is usable
 * again. Returns false when that failed and the connection had to be dropped.
 */
async function stopCopy(conn: PgConnection, stream: Readable): Promise<boolean> {
  stream.on('error', () => {}); // the cancel's own error is expected
  const over = settled(stream);
  stream.resume();
  try {
    if (!stream.readableEnded && !stream.errored) await cancelQuery(conn);
    await over;
    return true;
  } catch {
    stream.destroy();
    dropConnection(conn);
    return false;
  }
}

/** Outcome of a COPY TO stream, for callers that must clean up after it. */
export interface CopyOutcome {
  /** True once every row was read; false when the read stopped early or failed. */
  complete: boolean;
  /** False when the connection had to be dropped. */
  usable: boolean;
}

/**
 * Runs a `COPY … TO STDOUT` and yields its output as it arrives, as bytes: PostgreSQL's text
 * format, one '\n'-terminated line per row, chunk boundaries anywhere (format 2's canonical
 * text when the session has SESSION_SETTINGS). When the consumer stops early or the read fails,
 * the COPY is stopped (see stopCopy); `outcome` says how it ended.
 */
export async function* copyOutBytes(
  conn: PgConnection,
  sql: string,
  table: string,
  outcome: CopyOutcome = { complete: false, usable: true },
): AsyncGenerator<Buffer> {
  const stream = conn.client.query(new CopyToStream(sql));
  try {
    // destroyOnReturn false: a stream destroyed mid-COPY would stall the connection for good.
    yield* stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
    outcome.complete = true;
  } catch (err) {
    throw translateError(err, conn, table);
  } finally {
    if (!outcome.complete) outcome.usable = await stopCopy(conn, stream);
  }
}

/** Runs a `COPY … TO STDOUT` and yields its rows in batches (see copyOutBytes). */
export function copyOut(
  conn: PgConnection,
  sql: string,
  decoders: CopyDecoder[],
  table: string,
  outcome: CopyOutcome = { complete: false, usable: true },
): AsyncGenerator<WireRow[]> {
  return copyRowBatches(copyOutBytes(conn, sql, table, outcome), decoders);
}
