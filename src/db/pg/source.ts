/**
 * Reading changes from PostgreSQL.
 *
 * One snapshot per reader: the first statement opens a `REPEATABLE READ READ ONLY` transaction
 * that lasts until close(), so maxLogId and every table read by one extract see the same
 * committed state (parent and child rows agree) and nothing is ever written. Keep a reader
 * short-lived: an open snapshot holds back vacuum on the source.
 *
 * Rows stream out of a plain `COPY (SELECT cols …) TO STDOUT` in text format, decoded to wire
 * values in Node (see `copyDecoder`): the server does no more than for a raw COPY, and nothing
 * goes through node-postgres' row parsing. COPY sends rows only as fast as the consumer pulls
 * them, so memory stays flat. Calls must not overlap: a query waits behind an unfinished COPY.
 */
import type { Readable } from 'node:stream';
import { to as copyTo } from 'pg-copy-streams';
import { ConfigError } from '../../errors.js';
import type { ColumnInfo, DbConfig, ReadChangesRequest, SourceReader, WireRow } from '../types.js';
import { reflectColumns, tableRef, type TableRef } from './catalog.js';
import {
  cancelQuery,
  connect,
  disconnect,
  run,
  translateError,
  type PgConnection,
} from './connection.js';
import { copyDecoder, parseCopyLine, quoteIdent, quoteLiteral, type CopyDecoder } from './types.js';

const NEWLINE = 0x0a;

/** Each read runs under this savepoint, so that a read stopped half-way keeps the snapshot. */
const READ_SAVEPOINT = 'deltasync_read';

/** node-postgres keeps the socket on an untyped internal; dropping it is the last resort. */
function socketOf(conn: PgConnection): { destroy(): void } {
  return (conn.client as unknown as { connection: { stream: { destroy(): void } } }).connection
    .stream;
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

/** The `COPY … TO STDOUT` statement for a ReadChangesRequest (pure; exported for tests). */
export function readChangesSql(request: ReadChangesRequest, table: TableRef): string {
  if (request.columns.length === 0) {
    throw new ConfigError(`no columns to read from table '${request.table}'`);
  }
  const cols = request.columns.map((c) => quoteIdent(c.name)).join(', ');
  const log = quoteIdent(request.logIdColumn);
  // COPY takes no parameters; the bounds are quoted literals, which PostgreSQL casts to the
  // logId column's own type (so an index on it is used).
  return (
    `COPY (SELECT ${cols} FROM ${table.sql} ` +
    `WHERE ${log} > ${quoteLiteral(request.after)} AND ${log} <= ${quoteLiteral(request.upTo)} ` +
    `ORDER BY ${log}) TO STDOUT`
  );
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

class PgSource implements SourceReader {
  readonly engine = 'pg' as const;
  private inSnapshot = false;
  /** Set when a read could not be stopped cleanly and the connection had to be dropped. */
  private broken = false;

  constructor(
    private readonly conn: PgConnection,
    private readonly schema: string | undefined,
  ) {}

  private async snapshot(): Promise<void> {
    if (this.broken) {
      throw new Error(
        'PostgreSQL source connection was dropped after a failed read; open a new reader',
      );
    }
    if (this.inSnapshot) return;
    await run(this.conn, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    this.inSnapshot = true;
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    await this.snapshot();
    const columns = await reflectColumns(this.conn, tableRef(table, this.schema));
    if (!columns) {
      throw new ConfigError(
        `source table '${table}' does not exist in PostgreSQL ${this.conn.label}`,
        {
          hint: 'check the table name (and schema) in the job configuration',
        },
      );
    }
    return columns.map(({ name, type, nativeType }) => ({ name, type, nativeType }));
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    await this.snapshot();
    const ref = tableRef(table, this.schema);
    const { rows } = await run<{ max: string | null }>(
      this.conn,
      `SELECT max(${quoteIdent(logIdColumn)})::text AS max FROM ${ref.sql}`,
      [],
      table,
    );
    return rows[0]?.max ?? null;
  }

  async *readChanges(request: ReadChangesRequest): AsyncGenerator<WireRow> {
    await this.snapshot();
    const sql = readChangesSql(request, tableRef(request.table, this.schema));
    await run(this.conn, `SAVEPOINT ${READ_SAVEPOINT}`);
    const stream = this.conn.client.query(copyTo(sql));
    let finished = false;
    try {
      const decoders = request.columns.map((c) => copyDecoder(c.type));
      // destroyOnReturn false: a stream destroyed mid-COPY would stall the connection for good.
      const chunks = stream.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>;
      for await (const rows of copyRowBatches(chunks, decoders)) {
        for (const row of rows) yield row;
      }
      finished = true;
    } catch (err) {
      throw translateError(err, this.conn, request.table);
    } finally {
      await (finished ? run(this.conn, `RELEASE SAVEPOINT ${READ_SAVEPOINT}`) : this.stop(stream));
    }
  }

  /**
   * The consumer stopped early, or the COPY failed. A running COPY TO can only be stopped by
   * cancelling it; what the server had already sent is drained, and rolling back to the
   * savepoint leaves the snapshot transaction usable for the next table. If any of that fails,
   * the connection is dropped (it held nothing but a read-only snapshot).
   */
  private async stop(stream: Readable): Promise<void> {
    stream.on('error', () => {}); // the cancel's own error is expected
    const over = settled(stream);
    stream.resume();
    try {
      if (!stream.readableEnded && !stream.errored) await cancelQuery(this.conn);
      await over;
      await run(this.conn, `ROLLBACK TO SAVEPOINT ${READ_SAVEPOINT}`);
    } catch {
      this.broken = true;
      stream.destroy();
      socketOf(this.conn).destroy();
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
  return new PgSource(await connect(config), config.schema);
}
