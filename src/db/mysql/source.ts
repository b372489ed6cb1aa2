/**
 * The MySQL/MariaDB SourceReader. Every read runs inside one read-only transaction started with
 * a consistent snapshot when the reader opens, so the high-water mark and the rows of every
 * table come from the same moment; a reader therefore serves one extract run, not a daemon.
 */
import type { Readable } from 'node:stream';
import type { TypeCast } from 'mysql2';
import { ConfigError, DeltasyncError } from '../../errors.js';
import type { ColumnInfo, DbConfig, ReadChangesRequest, SourceReader, WireRow } from '../types.js';
import {
  closeSession,
  openSession,
  reflectColumns,
  run,
  translateError,
  type Session,
} from './connection.js';
import {
  logicalTypeOf,
  quoteIdent,
  quoteTable,
  readConverter,
  type NativeColumn,
  type ReadConverter,
} from './types.js';

/** How many rows the driver may buffer before it stops reading the socket. */
const STREAM_HIGH_WATER_ROWS = 512;

/** logId bounds are inlined as numeric literals: a string bound would compare as a double. */
const LOG_ID_RE = /^-?\d+(\.\d+)?$/;

// The text protocol would otherwise parse geometry into {x, y} objects.
const geometryAsBuffer: TypeCast = (field, next) =>
  field.type === 'GEOMETRY' ? field.buffer() : next();

/** Reads one MySQL/MariaDB database; see the module comment for the snapshot it reads. */
export class MysqlSource implements SourceReader {
  readonly engine = 'mysql' as const;
  /** The result being streamed; while it is open the connection can run nothing else. */
  private streaming: Readable | null = null;

  private constructor(private readonly session: Session) {}

  /** Connects and starts the read-only snapshot transaction. */
  static async open(config: DbConfig): Promise<MysqlSource> {
    const session = await openSession(config, false);
    try {
      // WITH CONSISTENT SNAPSHOT only means something under REPEATABLE READ.
      await run(session, 'SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      await run(session, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');
    } catch (err) {
      await closeSession(session);
      throw err;
    }
    return new MysqlSource(session);
  }

  async columns(table: string): Promise<ColumnInfo[]> {
    return (await this.nativeColumns(table)).map((c) => ({
      name: c.name,
      type: logicalTypeOf(c, table),
      nativeType: c.columnType,
    }));
  }

  async maxLogId(table: string, logIdColumn: string): Promise<string | null> {
    this.assertIdle();
    const rows = await run<{ m: unknown }[]>(
      this.session,
      `SELECT MAX(${quoteIdent(logIdColumn)}) AS m FROM ${quoteTable(table)}`,
      undefined,
      table,
    );
    const max = rows[0]?.m;
    return max === null || max === undefined ? null : String(max);
  }

  async *readChanges(request: ReadChangesRequest): AsyncIterable<WireRow> {
    const { table, columns, logIdColumn, after, upTo } = request;
    for (const bound of [after, upTo]) {
      if (!LOG_ID_RE.test(bound)) {
        throw new ConfigError(`logId bound '${bound}' for table ${table} is not a decimal number`);
      }
    }
    const plan = await this.readPlan(table, columns);
    const log = quoteIdent(logIdColumn);
    const sql =
      `SELECT ${plan.selects.join(', ')} FROM ${quoteTable(table)}` +
      ` WHERE ${log} > ${after} AND ${log} <= ${upTo} ORDER BY ${log}`;

    this.assertIdle();
    const query = this.session.core.query({
      sql,
      rowsAsArray: true,
      typeCast: plan.hasGeometry ? geometryAsBuffer : true,
    });
    // The driver pauses the socket while this buffer is full: back-pressure reaches the server.
    const stream = query.stream({ highWaterMark: STREAM_HIGH_WATER_ROWS });
    this.streaming = stream;
    const { converters } = plan;
    const width = converters.length;
    try {
      for await (const raw of stream as AsyncIterable<unknown[]>) {
        const row: WireRow = new Array(width);
        for (let i = 0; i < width; i++) {
          const v = raw[i];
          row[i] = v === null || v === undefined ? null : converters[i]!(v);
        }
        yield row;
      }
    } catch (err) {
      throw translateError(this.session.lostWith ?? err, this.session.where, table);
    } finally {
      // Leaving early destroys the stream; the driver then drains the rest of the result.
      stream.destroy();
      this.streaming = null;
    }
  }

  /** Ends the snapshot transaction (it never wrote anything) and disconnects. */
  async close(): Promise<void> {
    if (this.streaming) {
      // A COMMIT would queue behind a paused result forever; dropping the connection ends the
      // read-only transaction just as well.
      this.streaming.destroy();
      this.session.conn.destroy();
      return;
    }
    if (!this.session.lostWith) {
      try {
        await run(this.session, 'COMMIT');
      } catch {
        // Closing the connection ends the transaction anyway.
      }
    }
    await closeSession(this.session);
  }

  private async nativeColumns(table: string): Promise<NativeColumn[]> {
    this.assertIdle();
    const native = await reflectColumns(this.session, table);
    if (native.length === 0) {
      throw new ConfigError(
        `table ${table} does not exist in MariaDB/MySQL ${this.session.where}`,
        { hint: 'create it or fix the table name in the job config' },
      );
    }
    return native;
  }

  /** The select list and one converter per requested column, checked against the table. */
  private async readPlan(table: string, columns: ColumnInfo[]) {
    const byName = new Map((await this.nativeColumns(table)).map((c) => [c.name, c]));
    const selects: string[] = [];
    const converters: ReadConverter[] = [];
    let hasGeometry = false;
    for (const column of columns) {
      const native = byName.get(column.name);
      if (!native) {
        throw new ConfigError(`column ${table}.${column.name} does not exist in the source`, {
          hint: 'fix the column list in the job config',
        });
      }
      const type = logicalTypeOf(native, table);
      if (type !== column.type) {
        throw new ConfigError(
          `column ${table}.${column.name} is ${native.columnType} (${type}) in the source, not ${column.type}`,
        );
      }
      // FLOAT prints with 6 significant digits; `+ 0e0` sends the exact value as a DOUBLE.
      const quoted = quoteIdent(column.name);
      selects.push(native.dataType === 'float' ? `${quoted} + 0e0` : quoted);
      converters.push(readConverter(type, native.dataType));
      hasGeometry ||= type === 'binary' && !/blob|binary/.test(native.dataType);
    }
    return { selects, converters, hasGeometry };
  }

  /** A paused stream holds the connection: a second query would wait for it forever. */
  private assertIdle(): void {
    if (this.streaming) {
      throw new DeltasyncError(
        'MySQL source: another query was started while readChanges was still streaming; finish or abandon the iteration first',
      );
    }
  }
}
