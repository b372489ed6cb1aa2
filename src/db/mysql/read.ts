/**
 * Streaming rows out of MySQL/MariaDB, shared by the source (changes, keysets, whole tables,
 * the change log) and the target (`verify` reads the replica the same way).
 *
 * A result is streamed with the driver paused whenever the consumer is slower than the server,
 * so memory stays flat; while a result is open the connection can run nothing else, which
 * `RowStreams.assertIdle` turns into a clear error instead of a hang.
 */
import type { Readable } from 'node:stream';
import type { TypeCast } from 'mysql2';
import { ConfigError, DeltasyncError } from '../../errors.js';
import type { ColumnInfo, LogicalType, WireRow } from '../types.js';
import { nativeColumns } from './catalog.js';
import { translateError, type Session } from './connection.js';
import {
  logicalTypeOf,
  quoteIdent,
  readConverter,
  type NativeColumn,
  type ReadConverter,
} from './types.js';

/** How many rows the driver may buffer before it stops reading the socket. */
const STREAM_HIGH_WATER_ROWS = 512;

// The text protocol would otherwise parse geometry into {x, y} objects.
const geometryAsBuffer: TypeCast = (field, next) =>
  field.type === 'GEOMETRY' ? field.buffer() : next();

/** The select list and one converter per requested column. */
export interface ReadPlan {
  selects: string[];
  converters: ReadConverter[];
  hasGeometry: boolean;
  /** The table's columns by name, as reflected. */
  native: Map<string, NativeColumn>;
}

/** The expression that reads a column exactly (FLOAT prints 6 digits; `+ 0e0` sends a DOUBLE). */
export function selectExpression(column: NativeColumn, qualifier = ''): string {
  const quoted = qualifier + quoteIdent(column.name);
  return column.dataType === 'float' ? `${quoted} + 0e0` : quoted;
}

/**
 * Checks the requested columns against the table and prepares their converters. `strict` (the
 * source) refuses a column whose logical type differs from the request; otherwise (a replica
 * read for `verify`) the value is read back the way load wrote the requested type into it.
 */
export async function readPlan(
  session: Session,
  table: string,
  columns: ColumnInfo[],
  strict: boolean,
  qualifier = '',
): Promise<ReadPlan> {
  const list = await nativeColumns(session, table, strict ? 'source' : 'replica');
  const native = new Map(list.map((c) => [c.name, c]));
  const selects: string[] = [];
  const converters: ReadConverter[] = [];
  let hasGeometry = false;
  for (const column of columns) {
    const found = native.get(column.name);
    if (!found) {
      throw new ConfigError(
        `column ${table}.${column.name} does not exist in MariaDB/MySQL ${session.where}`,
        { hint: 'fix the column list in the job config' },
      );
    }
    const type = logicalTypeOf(found, table);
    if (strict && type !== column.type) {
      throw new ConfigError(
        `column ${table}.${column.name} is ${found.columnType} (${type}) in the source, not ${column.type}`,
      );
    }
    selects.push(selectExpression(found, qualifier));
    converters.push(
      type === column.type ? readConverter(type, found.dataType) : looseConverter(column.type),
    );
    hasGeometry ||= type === 'binary' && !/blob|binary/.test(found.dataType);
  }
  return { selects, converters, hasGeometry, native };
}

/** Reads a value into a logical type other than the column's own (replica columns only). */
function looseConverter(type: LogicalType): ReadConverter {
  switch (type) {
    case 'int':
    case 'float':
      return (v) => Number(v);
    case 'bigint':
    case 'decimal':
      return (v) => String(v);
    default:
      return readConverter(type, '');
  }
}

/** Runs streaming queries on one session, one at a time. */
export class RowStreams {
  /** The result being streamed; while it is open the connection can run nothing else. */
  private streaming: Readable | null = null;

  constructor(private readonly session: Session) {}

  get busy(): boolean {
    return this.streaming !== null;
  }

  /**
   * Streams the rows of `sql` as arrays, each turned into a T by `convert`. Leaving the loop
   * early is fine: the driver then drains the rest of the result.
   */
  async *stream<T>(
    sql: string,
    convert: (raw: unknown[]) => T,
    options: { table?: string; hasGeometry?: boolean } = {},
  ): AsyncGenerator<T> {
    this.assertIdle();
    const query = this.session.core.query({
      sql,
      rowsAsArray: true,
      typeCast: options.hasGeometry ? geometryAsBuffer : true,
    });
    // The driver pauses the socket while this buffer is full: back-pressure reaches the server.
    const stream = query.stream({ highWaterMark: STREAM_HIGH_WATER_ROWS });
    this.streaming = stream;
    try {
      for await (const raw of stream as AsyncIterable<unknown[]>) yield convert(raw);
    } catch (err) {
      throw translateError(this.session.lostWith ?? err, this.session.where, options.table);
    } finally {
      stream.destroy();
      this.streaming = null;
    }
  }

  /** Drops a paused result (and with it the connection, the only way to stop the server). */
  abandon(): boolean {
    if (!this.streaming) return false;
    this.streaming.destroy();
    this.session.conn.destroy();
    return true;
  }

  /** A paused stream holds the connection: a second query would wait for it forever. */
  assertIdle(): void {
    if (this.streaming) {
      throw new DeltasyncError(
        'MySQL: another query was started while a read was still streaming; finish or abandon the iteration first',
      );
    }
  }
}

/** Converts a raw row with one converter per column; NULL stays null. */
export function wireRowConverter(converters: ReadConverter[]): (raw: unknown[]) => WireRow {
  const width = converters.length;
  return (raw) => {
    const row: WireRow = new Array(width);
    for (let i = 0; i < width; i++) {
      const v = raw[i];
      row[i] = v === null || v === undefined ? null : converters[i]!(v);
    }
    return row;
  };
}
