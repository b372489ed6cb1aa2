/**
 * The live progress line a person sees on a terminal: table, rows, rows/s, elapsed, and the
 * percentage and ETA when the row count is known. Redrawn in place a few times a second on
 * stderr and cleared at the end; never shown when stderr is not a terminal (cron, a pipe, a
 * log file) nor under CI. Steps only see the small `Progress` interface (StepContext.progress).
 */
import { setBeforeTerminalWrite } from '../log.js';
import type { Progress } from '../steps/common.js';

export type { Progress };

/** The part of a stream the line needs (process.stderr, or a fake one in tests). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

/** At most this many redraws a second: enough to look live, cheap on a slow terminal. */
const REDRAWS_PER_SECOND = 4;
const CLEAR = '\r\x1b[K';
/** A step shorter than this shows no line at all: no flicker for an idle run (or a loop's). */
export const SHOW_AFTER_MS = 500;

/** Whether a live line belongs on this stream: a terminal, and not a CI job's captured log. */
export function wantsProgress(stream: ProgressStream, env = process.env): boolean {
  const ci = env.CI;
  return stream.isTTY === true && (ci === undefined || ci === '' || ci === '0' || ci === 'false');
}

function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** `75`, `1:15`, `1:02:03`: short enough for the line. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (v: number) => String(v).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

/** The line's text for a table after `seconds`; pure, so tests can pin it down. */
export function progressText(
  step: string,
  table: string,
  done: number,
  seconds: number,
  total?: number,
): string {
  const rate = seconds > 0 ? done / seconds : 0;
  const parts = [`${step} ${table}: ${count(done)}${total ? ` of ${count(total)}` : ''} rows`];
  if (total) parts.push(`${Math.min(100, Math.floor((done / total) * 100))}%`);
  parts.push(`${count(rate)} rows/s`, `${clock(seconds)} elapsed`);
  if (total && rate > 0 && done < total) parts.push(`ETA ${clock((total - done) / rate)}`);
  return parts.join(', ');
}

export class TerminalProgress implements Progress {
  private current:
    { name: string; total?: number; done: number; since: number; poll?: () => number } | undefined;
  private drawn = '';
  private timer: NodeJS.Timeout | undefined;
  /** When the step's first table started. */
  private started: number | undefined;

  constructor(
    private readonly step: string,
    private readonly stream: ProgressStream,
    private readonly now: () => number = Date.now,
  ) {}

  table(name: string, total?: number, poll?: () => number): void {
    this.current = { name, total, done: 0, since: this.now(), poll };
    this.started ??= this.current.since;
    this.draw();
    if (!this.timer) {
      this.timer = setInterval(() => this.draw(), 1000 / REDRAWS_PER_SECOND);
      // The line must never keep a finished process alive.
      this.timer.unref();
    }
  }

  rows(count: number): void {
    if (this.current) this.current.done += count;
  }

  done(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.current = undefined;
    this.started = undefined;
    this.clear();
  }

  /** Takes the line off the screen (a log line is about to be written); the timer redraws it. */
  clear(): void {
    if (this.drawn) this.stream.write(CLEAR);
    this.drawn = '';
  }

  /** Redraws the line; public so tests can draw without waiting for the timer. */
  draw(): void {
    const c = this.current;
    if (!c || this.now() - this.started! < SHOW_AFTER_MS) return;
    if (c.poll) c.done = c.poll();
    const seconds = (this.now() - c.since) / 1000;
    // One column short of the width: writing the last column makes some terminals wrap.
    // A pseudo-terminal may report 0 columns: assume the classic 80 then.
    const width = Math.max(20, (this.stream.columns || 80) - 1);
    const text = progressText(this.step, c.name, c.done, seconds, c.total).slice(0, width);
    if (text === this.drawn) return;
    this.stream.write(`${CLEAR}${text}`);
    this.drawn = text;
  }
}

/**
 * The progress line for `step` on stderr, or undefined when nobody is watching (no terminal, or
 * CI). Log lines on the same terminal clear it first, so the two never mix.
 */
export function terminalProgress(
  step: string,
  stream: ProgressStream = process.stderr,
): Progress | undefined {
  if (!wantsProgress(stream)) return undefined;
  const line = new TerminalProgress(step, stream);
  setBeforeTerminalWrite(() => line.clear());
  return line;
}
