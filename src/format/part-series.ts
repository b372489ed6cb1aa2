/**
 * The part files of one kind (rows or deletes) of one table in a format-2 delta: rows go in one
 * by one (encoded by the codec) or as COPY text bytes (split on line boundaries, never parsed),
 * and a new part starts every maxRowsPerPart lines.
 */
import type { LogicalType, WireRow } from './wire.js';
import type { ManifestPart } from './manifest.js';
import { encodeRow } from './copy-text.js';
import { MAX_LINE_BYTES, type PartFileWriter } from './part-file.js';

/** Where a series opens and publishes its parts (the DeltaWriter). */
export interface PartSink {
  readonly maxRowsPerPart: number;
  openPart(file: string): Promise<PartFileWriter>;
  finishPart(writer: PartFileWriter): Promise<ManifestPart>;
}

/** Text rows are batched into chunks of about this size before they reach zlib. */
const WRITE_CHUNK_CHARS = 256 * 1024;

const NEWLINE = 0x0a;

/** A sequence of part files of one kind (rows or deletes) for one table, in format 2. */
export class PartSeries {
  readonly parts: ManifestPart[] = [];
  private writer: PartFileWriter | undefined;
  /** Encoded lines not yet handed to the writer, and how many. */
  private pending = '';
  private pendingLines = 0;

  constructor(
    private readonly delta: PartSink,
    private readonly fileName: (index: number) => string,
    private readonly types: LogicalType[],
  ) {}

  get rows(): number {
    return (
      this.parts.reduce((n, p) => n + p.rows, 0) + (this.writer?.lines ?? 0) + this.pendingLines
    );
  }

  private async open(): Promise<PartFileWriter> {
    this.writer ??= await this.delta.openPart(this.fileName(this.parts.length + 1));
    return this.writer;
  }

  /** One wire row, encoded by the codec (the generic path). */
  async write(row: WireRow): Promise<void> {
    const writer = this.writer ?? (await this.open());
    this.pending += encodeRow(row, this.types);
    this.pendingLines++;
    if (writer.lines + this.pendingLines >= this.delta.maxRowsPerPart) await this.close();
    else if (this.pending.length >= WRITE_CHUNK_CHARS) await this.flushPending();
  }

  private async flushPending(): Promise<void> {
    if (this.pendingLines === 0) return;
    const text = this.pending;
    const lines = this.pendingLines;
    this.pending = '';
    this.pendingLines = 0;
    await this.writer!.write(text, lines);
  }

  /**
   * COPY text as bytes (the fast path): split into parts on line boundaries by counting newline
   * bytes, never parsing a row. Returns the lines written and the last one (for a cursor).
   */
  async writeCopyText(data: AsyncIterable<Buffer>): Promise<CopyTextWritten> {
    await this.flushPending();
    const max = this.delta.maxRowsPerPart;
    const last = new LastLine();
    let rows = 0;
    for await (const whole of data) {
      last.add(whole);
      let chunk = whole;
      while (chunk.length > 0) {
        const writer = await this.open();
        const room = max - writer.lines;
        let lines = 0;
        let cut = -1;
        for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) {
          if (++lines === room) {
            cut = i + 1;
            break;
          }
        }
        rows += lines;
        if (cut === -1) {
          await writer.write(chunk, lines);
          break;
        }
        await writer.write(chunk.subarray(0, cut), lines);
        await this.close();
        chunk = chunk.subarray(cut);
      }
    }
    return { rows, lastLine: last.finish() };
  }

  async close(): Promise<void> {
    if (!this.writer) return;
    await this.flushPending();
    const writer = this.writer;
    this.writer = undefined;
    this.parts.push(await this.delta.finishPart(writer));
  }

  async abort(): Promise<void> {
    this.pending = '';
    this.pendingLines = 0;
    await this.writer?.abort();
    this.writer = undefined;
  }
}

/** What `writeCopyText` wrote. */
export interface CopyTextWritten {
  rows: number;
  /** The last line, without its '\n' (null when there were none): timestamp mode's cursor. */
  lastLine: Buffer | null;
}

/** Follows a byte stream of lines, keeping only its last complete line and the open one. */
class LastLine {
  private line: Buffer | null = null;
  private open: Buffer[] = [];
  private openBytes = 0;

  add(chunk: Buffer): void {
    const end = chunk.lastIndexOf(NEWLINE);
    if (end === -1) {
      this.open.push(chunk);
      this.openBytes += chunk.length;
      if (this.openBytes > MAX_LINE_BYTES) {
        throw new Error(`COPY text holds a line longer than ${MAX_LINE_BYTES} bytes`);
      }
      return;
    }
    const start = end > 0 ? chunk.lastIndexOf(NEWLINE, end - 1) : -1;
    // Copied: a slice would keep the whole chunk alive.
    this.line =
      start === -1
        ? Buffer.concat([...this.open, chunk.subarray(0, end)])
        : Buffer.from(chunk.subarray(start + 1, end));
    const rest = chunk.subarray(end + 1);
    this.open = rest.length > 0 ? [rest] : [];
    this.openBytes = rest.length;
  }

  finish(): Buffer | null {
    if (this.openBytes > 0) throw new Error('COPY text does not end with a newline');
    return this.line;
  }
}
