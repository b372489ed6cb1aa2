/**
 * Logging. JSON lines (pino) to the configured log file, or to stdout when there is none; on a
 * terminal, readable lines instead. Every line carries an ISO time, the level's name and the job
 * and step it comes from, so lines of several steps (a loop, or cron runs sharing one file) can
 * be told apart. Every run ends with one `summary` line that monitoring can parse: step, delta,
 * tables, rows, bytes, seconds, maxRssMb.
 */
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

export interface LogOptions {
  file?: string;
  level?: string;
  /** Force readable output (default: when stdout is a terminal and no file is configured). */
  pretty?: boolean;
  /** The job's name, on every line. */
  job?: string;
  /** The step (or command) that logs, on every line; a loop gives each step a child logger. */
  step?: string;
}

/** Whether to colour readable lines: only for a terminal, and never against NO_COLOR's wish. */
export function colourFor(stream: { isTTY?: boolean }, env = process.env): boolean {
  return stream.isTTY === true && env.NO_COLOR === undefined;
}

function baseOptions(options: LogOptions): LoggerOptions {
  const base: Record<string, unknown> = { pid: process.pid };
  if (options.job !== undefined) base.job = options.job;
  if (options.step !== undefined) base.step = options.step;
  return {
    level: options.level ?? 'info',
    base,
    // Readable by people and by every log shipper without knowing pino's conventions.
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
}

let beforeTerminalWrite: () => void = () => undefined;

/**
 * Called before each readable line goes to stdout: a live progress line on the same terminal
 * clears itself there, so that a log line never lands in the middle of it.
 */
export function setBeforeTerminalWrite(fn: () => void): void {
  beforeTerminalWrite = fn;
}

/** stdout for readable lines, synchronous like the JSON one so that no line is lost at exit. */
function terminalStdout(): ReturnType<typeof pino.destination> {
  const out = pino.destination({ dest: 1, sync: true });
  const write = out.write.bind(out);
  out.write = (data: string) => {
    beforeTerminalWrite();
    return write(data);
  };
  return out;
}

/** The log files this process writes, so that a long-running loop can reopen them. */
const openFiles = new Set<ReturnType<typeof pino.destination>>();

/**
 * Reopens every log file by its name: after logrotate has moved it away, lines go to the new
 * file instead of the rotated one (the loop does this on SIGHUP).
 */
export function reopenLogFiles(): void {
  for (const dest of openFiles) dest.reopen();
}

export async function createLogger(options: LogOptions): Promise<Logger> {
  const opts = baseOptions(options);
  if (options.file) {
    // A file always gets JSON lines, whatever --pretty says: it is read by programs, and colour
    // codes or wrapped fields would break them.
    const dest = pino.destination({ dest: options.file, mkdir: true, append: true, sync: true });
    openFiles.add(dest);
    return pino(opts, dest);
  }
  if (options.pretty ?? process.stdout.isTTY) {
    // Loaded only for humans: cron runs should not pay for it.
    const { default: pretty } = await import('pino-pretty');
    return pino(
      opts,
      pretty({
        sync: true,
        // `--pretty > file` must not fill the file with escape codes.
        colorize: colourFor(process.stdout),
        destination: terminalStdout(),
        ignore: 'pid,hostname,job,step',
        // The time is already ISO (see timestamp above): show it as it is.
        translateTime: false,
        messageFormat: (line, messageKey) =>
          `(${[line.job, line.step].filter((v) => v !== undefined).join('/')}) ${String(line[messageKey] ?? '')}`,
      }),
    );
  }
  return pino(opts, pino.destination({ dest: 1, sync: true }));
}

/** A logger that drops everything, for library callers that bring no logger. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export interface Summary {
  step: string;
  delta: string | null;
  deltas: number;
  tables: number;
  rows: number;
  bytes: number;
  seconds: number;
}

/** Loggers whose summaries of runs that did nothing go at debug level (see quietIdleSummaries). */
const quietIdle = new WeakSet<Logger>();

/**
 * A loop runs its steps every few seconds: an info line for each iteration that found nothing to
 * do would grow the log by tens of thousands of lines a day. Those summaries go at debug level
 * for this logger; runs that did something are logged as always.
 */
export function quietIdleSummaries(log: Logger): void {
  quietIdle.add(log);
}

export function logSummary(log: Logger, summary: Summary): void {
  const maxRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
  // The logger usually carries the step already; the same key twice would be legal but confusing.
  const { step, ...rest } = summary;
  const fields = log.bindings().step === step ? rest : summary;
  const level = summary.deltas === 0 && quietIdle.has(log) ? 'debug' : 'info';
  log[level]({ summary: true, ...fields, maxRssMb }, 'summary');
}
