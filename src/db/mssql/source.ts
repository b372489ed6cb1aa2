/**
 * Reading a SQL Server source: reflection, the high-water mark, and a streamed read of changes.
 *
 * Read-only: nothing here writes, so extract works with a db_datareader login. Reads run at READ
 * COMMITTED (tedious sets it on every connection), one statement each, so a read never sees a
 * row that is later rolled back.
 */
import sql from 'mssql';
import { ConfigError } from '../../errors.js';
import type { ColumnInfo, DbConfig, ReadChangesRequest, SourceReader, WireRow } from '../types.js';
import { connect, translateError, type MssqlConnection } from './connection.js';
import { reflectColumns } from './catalog.js';
import { maxLogIdQuery, readChangesQuery, tableName, type Query, type TableName } from './sql.js';
import { publicColumn, wireReader, type MssqlColumn, type WireReader } from './types.js';

/**
 * Rows the driver may read ahead of the consumer. The driver pauses the socket beyond this, so
 * memory is bounded by it whatever the size of the table.
 */
const READ_AHEAD_ROWS = 1000;

/** Binds a generated query's parameters with the types it asked for. */
export function bind(request: sql.Request, query: Query): sql.Request {
  for (const p of query.params) {
    request.input(p.name, p.type === 'BigInt' ? sql.BigInt : sql.VarChar(40), p.value);
  }
  return request;
}

/**
 * Converts driver rows (arrays, in select-list order) to wire rows. Separate from the query so
 * that the conversion can be tested without a server.
 */
export async function* toWireRows(
  rows: AsyncIterable<unknown>,
  readers: WireReader[],
): AsyncGenerator<WireRow> {
  for await (const row of rows) {
    const values = row as unknown[];
    const wire: WireRow = new Array(readers.length);
    for (let i = 0; i < readers.length; i++) wire[i] = readers[i]!(values[i]);
    yield wire;
  }
}

/** A SourceReader over one mssql connection pool. */
export class MssqlSource implements SourceReader {
  readonly engine = 'mssql' as const;
  private readonly reflected = new Map<string, MssqlColumn[]>();

  private constructor(private readonly conn: MssqlConnection) {}

  static async open(config: DbConfig): Promise<MssqlSource> {
    return new MssqlSource(await connect(config));
  }

  private table(table: string): TableName {
    return tableName(table, this.conn.schema);
  }

  /** The table's columns, cached for the life of the reader; ConfigError when it is missing. */
  private async reflect(table: TableName): Promise<MssqlColumn[]> {
    const cached = this.reflected.get(table.quoted);
    if (cached) return cached;
    let columns: MssqlColumn[];
    try {
      columns = await reflectColumns(this.conn.pool.request(), table);
    } catch (err) {
      throw translateError(err, this.conn.label, table.label);
    }
    if (columns.length === 0) {
      throw new ConfigError(
        `table ${table.label} does not exist in SQL Server ${this.conn.label}`,
        {
          hint: 'check the table name and schema, and that the login may see it',
        },
      );
    }
    this.reflected.set(table.quoted, columns);
    return columns;
  }

  private async column(table: TableName, name: string): Promise<MssqlColumn> {
    const columns = await this.reflect(table);
    const found =
      columns.find((c) => c.name === name) ??
      columns.find((c) => c.name.toLowerCase() === name.toLowerCase());
    if (!found) throw new ConfigError(`table ${table.label} has no column ${name}`);
    return found;
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    const name = this.table(table);
    const columns = await this.reflect(name);
    const unsupported = columns.filter((c) => !c.type);
    if (unsupported.length > 0) {
      const list = unsupported.map((c) => `${c.name} (${c.nativeType})`).join(', ');
      throw new ConfigError(`table ${name.label}: deltasync cannot carry column ${list}`, {
        hint: 'read the table through a view that leaves the column out or converts it',
      });
    }
    return columns.map(publicColumn);
  }

  /**
   * For rowversion, the highest value that no open transaction can still undercut (see
   * maxLogIdQuery), which may be below MAX(col): extract uses this as its high-water mark, and a
   * row committed later with a lower rowversion would otherwise be skipped forever.
   */
  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    const name = this.table(table);
    const logId = await this.column(name, logIdColumn);
    let row: { max_log_id: string | null; stable_log_id: string | null } | undefined;
    try {
      row = (await this.conn.pool.request().query(maxLogIdQuery(name, logId))).recordset[0];
    } catch (err) {
      throw translateError(err, this.conn.label, name.label);
    }
    const max = row?.max_log_id ?? null;
    const stable = row?.stable_log_id ?? null;
    if (max === null || stable === null) return max;
    return BigInt(stable) < BigInt(max) ? stable : max;
  }

  async *readChanges(request: ReadChangesRequest): AsyncGenerator<WireRow> {
    const name = this.table(request.table);
    const columns: MssqlColumn[] = [];
    for (const wanted of request.columns) {
      const column = await this.column(name, wanted.name);
      // A text column may be declared json (its content is a JSON document); nothing else may
      // be read as a type other than its own.
      const compatible =
        column.type === wanted.type || (column.type === 'text' && wanted.type === 'json');
      if (!compatible) {
        throw new ConfigError(
          `table ${name.label}: column ${column.name} is ${column.nativeType} (${column.type ?? 'unsupported'}), not ${wanted.type}`,
        );
      }
      columns.push(column);
    }
    const logId = await this.column(name, request.logIdColumn);
    const query = readChangesQuery(name, columns, logId, request.after, request.upTo);

    const req = bind(this.conn.pool.request(), query);
    req.arrayRowMode = true;
    // toReadableStream pauses the request when the stream's buffer is full and resumes it
    // when we read: back-pressure all the way to the socket.
    const stream = req.toReadableStream({ highWaterMark: READ_AHEAD_ROWS });
    // In stream mode the promise always resolves; errors arrive on the stream.
    void req.query(query.text).catch(() => {});
    let finished = false;
    try {
      yield* toWireRows(
        stream,
        request.columns.map((c) => wireReader(c.type)),
      );
      finished = true;
    } catch (err) {
      throw translateError(err, this.conn.label, name.label);
    } finally {
      // A consumer that stops early must not leave the server streaming the rest to nobody.
      if (!finished) req.cancel();
    }
  }

  async close(): Promise<void> {
    await this.conn.pool.close();
  }
}
