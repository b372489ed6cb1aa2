/**
 * Streaming a query's rows from SQL Server with back-pressure, and turning them into wire rows.
 * Every read of the adapter (changes, keysets, whole tables, the change log; source and replica
 * alike) goes through here, so that none of them buffers a result.
 */
import type sql from 'mssql';
import type { WireRow } from '../types.js';
import { bind } from './driver.js';
import type { Query } from './sql.js';
import type { WireReader } from './types.js';

/**
 * Rows the driver may read ahead of the consumer. The driver pauses the socket beyond this, so
 * memory is bounded by it whatever the size of the table.
 */
export const READ_AHEAD_ROWS = 1000;

/**
 * Streams the rows of `query` as arrays in select-list order. Errors arrive as thrown errors
 * (untranslated: the caller knows which table to name). A consumer that stops early cancels
 * the request, so the server does not go on streaming the rest to nobody.
 */
export async function* streamRows(request: sql.Request, query: Query): AsyncGenerator<unknown[]> {
  bind(request, query);
  request.arrayRowMode = true;
  // toReadableStream pauses the request when the stream's buffer is full and resumes it when
  // we read: back-pressure all the way to the socket.
  const stream = request.toReadableStream({ highWaterMark: READ_AHEAD_ROWS });
  // In stream mode the promise always resolves; errors arrive on the stream.
  void request.query(query.text).catch(() => {});
  let finished = false;
  try {
    for await (const row of stream) yield row as unknown[];
    finished = true;
  } finally {
    if (!finished) request.cancel();
  }
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
