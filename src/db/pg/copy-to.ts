/**
 * `COPY … TO STDOUT` as a stream of the rows' bytes, for node-postgres' `client.query()`.
 *
 * It does what pg-copy-streams' `to` does (take the connection's socket over for the length of
 * the COPY, hand it back at its end or at an error) with a cheaper decoder: PostgreSQL sends
 * each row as its own CopyData message, and pg-copy-streams cut one Buffer per row (a million
 * objects for a million rows, then a copy of them all into one chunk). Here each socket chunk is
 * compacted in place, its message headers squeezed out with `copyWithin`, and pushed as one
 * Buffer: no allocation per row. Measured on the bench table (1M rows, 142 MB of text): about
 * a third less user CPU to read it (~0.20 s against ~0.30 s).
 */
import { Readable } from 'node:stream';
import type { Connection } from 'pg';

/** Backend message types (https://www.postgresql.org/docs/current/protocol-message-formats.html). */
const ERROR_RESPONSE = 0x45; // 'E'
const COPY_OUT_RESPONSE = 0x48; // 'H'
const COPY_DATA = 0x64; // 'd'
/** May come between CopyData messages during a COPY; any other type ends copy-out mode. */
const NOTIFICATION_RESPONSE = 0x41; // 'A'
const NOTICE_RESPONSE = 0x4e; // 'N'
const PARAMETER_STATUS = 0x53; // 'S'

/** A message's type byte and its Int32 length (which counts itself, not the type byte). */
const HEADER_BYTES = 5;

/**
 * Bytes the stream holds for its reader (Readable's default is 16 KiB, less than one socket
 * chunk): the socket is drained, and the server kept busy, while the reader works.
 */
const HIGH_WATER_BYTES = 1024 * 1024;

type DataHandler = (chunk: Buffer) => void;

/**
 * A `COPY … TO STDOUT` query: pass it to `client.query()` and read the COPY text from it, chunk
 * boundaries anywhere. Errors of the server come through the stream's 'error' event.
 */
export class CopyToStream extends Readable {
  private connection: Connection | undefined;
  /** node-postgres' own 'data' listener, put back once the COPY is over. */
  private pgDataHandler: DataHandler | undefined;
  private readonly onSocketReadable = () => this.forward();
  /** Whether the consumer wants more (the last push was under the high-water mark). */
  private wanted = false;
  private forwarding = false;
  /** The type of the message being read, and how many of its bytes are still to come. */
  private type = 0;
  private remaining = 0;
  /** A message header split across two socket chunks. */
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerBytes = 0;

  constructor(readonly text: string) {
    super({ highWaterMark: HIGH_WATER_BYTES });
  }

  /** Called by node-postgres when the query's turn comes. */
  submit(connection: Connection): void {
    this.connection = connection;
    const socket = connection.stream;
    const listeners = socket.listeners('data') as DataHandler[];
    if (listeners.length !== 1) throw new Error('unexpected listeners on the connection socket');
    this.pgDataHandler = listeners[0]!;
    socket.removeListener('data', this.pgDataHandler);
    socket.pause();
    socket.on('readable', this.onSocketReadable);
    connection.query(this.text);
  }

  override _read(): void {
    this.wanted = true;
    this.forward();
  }

  private forward(): void {
    if (this.forwarding || !this.wanted || !this.connection) return;
    this.forwarding = true;
    const socket = this.connection.stream;
    let chunk: Buffer | null;
    while (this.wanted && this.connection && (chunk = socket.read() as Buffer | null) !== null) {
      this.wanted = this.parse(chunk);
    }
    this.forwarding = false;
  }

  /**
   * Squeezes the CopyData payloads of one socket chunk to its front and pushes them. The chunk
   * is ours (a socket read allocates a fresh one) and the write position never passes the read
   * position, so the bytes not read yet are intact when the socket goes back to node-postgres.
   * Returns whether the consumer wants more.
   */
  private parse(chunk: Buffer): boolean {
    const end = chunk.length;
    let at = 0;
    let out = 0;
    let over = false;
    while (at < end) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, end - at);
        if (this.type === COPY_DATA) {
          if (out !== at) chunk.copyWithin(out, at, at + n);
          out += n;
        }
        at += n;
        this.remaining -= n;
        if (this.remaining > 0) break;
        if (!continuesCopy(this.type)) {
          over = true;
          break;
        }
        continue;
      }
      if (this.headerBytes === 0) {
        // The error goes to node-postgres whole, type byte included: it fails the query.
        if (chunk[at] === ERROR_RESPONSE) {
          if (out > 0) this.push(chunk.subarray(0, out));
          this.detach(chunk.subarray(at));
          return false;
        }
        if (end - at >= HEADER_BYTES) {
          this.type = chunk[at]!;
          this.remaining = chunk.readUInt32BE(at + 1) - 4;
          at += HEADER_BYTES;
        } else {
          this.headerBytes = chunk.copy(this.header, 0, at, end);
          at = end;
          break;
        }
      } else {
        const n = Math.min(HEADER_BYTES - this.headerBytes, end - at);
        chunk.copy(this.header, this.headerBytes, at, at + n);
        this.headerBytes += n;
        at += n;
        if (this.headerBytes < HEADER_BYTES) break;
        this.headerBytes = 0;
        this.type = this.header[0]!;
        this.remaining = this.header.readUInt32BE(1) - 4;
      }
      if (this.remaining === 0 && !continuesCopy(this.type)) {
        over = true;
        break;
      }
    }
    const wanted = out > 0 ? this.push(chunk.subarray(0, out)) : true;
    if (over) {
      // CopyDone (or a message that ends copy-out mode): the rest, CommandComplete and
      // ReadyForQuery, is node-postgres' to read.
      this.detach(chunk.subarray(at));
      this.push(null);
      return false;
    }
    return wanted;
  }

  /** Gives the socket back to node-postgres with the bytes it has not seen yet. */
  private detach(unread: Buffer): void {
    const connection = this.connection!;
    const handler = this.pgDataHandler!;
    const socket = connection.stream;
    this.connection = undefined;
    socket.removeListener('readable', this.onSocketReadable);
    socket.on('data', handler);
    handler(unread);
    // As pg-copy-streams: the handler above may pause the socket; resume once it has returned.
    process.nextTick(() => socket.resume());
  }

  /** Called by node-postgres: the server refused the COPY or failed mid-way. */
  handleError(err: Error): void {
    this.destroy(err);
  }

  handleCommandComplete(): void {}

  handleReadyForQuery(): void {}
}

/** Messages that may come during a COPY without ending it. */
function continuesCopy(type: number): boolean {
  return (
    type === COPY_DATA ||
    type === COPY_OUT_RESPONSE ||
    type === PARAMETER_STATUS ||
    type === NOTICE_RESPONSE ||
    type === NOTIFICATION_RESPONSE
  );
}
