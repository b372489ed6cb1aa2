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
  /** Parts opened so far, for their file names. */
  private opened = 0;
  /**
   * The part before the one being written, still finishing (zlib's last bytes, fsync, rename)
   * while rows go on into the next; its lines; and its failure, thrown at the next step.
   */
  private finishing: Promise<void> | undefined;
  private finishingLines = 0;
  private failure: { err: unknown } | undefined;

  constructor(
    private readonly delta: PartSink,
    private readonly fileName: (index: number) => string,
    private readonly types: LogicalType[],
  ) {}

  get rows(): number {
    return (
      this.parts.reduce((n, p) => n + p.rows, 0) +
      this.finishingLines +
      (this.writer?.lines ?? 0) +
      this.pendingLines
    );
  }

  private async open(): Promise<PartFileWriter> {
    if (this.failure) throw this.failure.err;
    this.writer ??= await this.delta.openPart(this.fileName(++this.opened));
    return this.writer;
  }

  /** One wire row, encoded by the codec (the generic path). */
  async write(row: WireRow): Promise<void> {
    const writer = this.writer ?? (await this.open());
    this.pending += encodeRow(row, this.types);
    this.pendingLines++;
    if (writer.lines + this.pendingLines >= this.delta.maxRowsPerPart) await this.endPart();
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
        await this.endPart();
        chunk = chunk.subarray(cut);
      }
    }
    return { rows, lastLine: last.finish() };
  }

  /**
   * Ends the part being written. It finishes in the background while the next part fills (a
   * part boundary no longer stalls the source for an fsync); one part at a time, so the one
   * before it is waited for first.
   */
  private async endPart(): Promise<void> {
    if (!this.writer) return;
    await this.flushPending();
    // The one before first; should it have failed, this part stays here for abort() to remove.
    await this.settle();
    const writer = this.writer;
    this.writer = undefined;
    this.finishingLines = writer.lines;
    this.finishing = this.delta.finishPart(writer).then((part) => {
      this.parts.push(part);
      this.finishingLines = 0;
    });
    // Not awaited until the next boundary: recorded now, so that the next chunk stops on it.
    this.finishing.catch((err: unknown) => (this.failure ??= { err }));
  }

  /** Waits for the part finishing in the background; throws its failure (or an earlier one). */
  private async settle(): Promise<void> {
    const finishing = this.finishing;
    this.finishing = undefined;
    await finishing;
    if (this.failure) throw this.failure.err;
  }

  /** Ends the last part and waits until every part is published, in order, in `parts`. */
  async close(): Promise<void> {
    await this.endPart();
    await this.settle();
  }

  async abort(): Promise<void> {
    this.pending = '';
    this.pendingLines = 0;
    await this.writer?.abort();
    this.writer = undefined;
    // A part finishing in the background is published or removed before the delta's abort
    // removes what was published.
    await this.finishing?.catch(() => undefined);
    this.finishing = undefined;
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
