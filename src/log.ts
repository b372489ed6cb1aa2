/**
 * Logging. JSON lines (pino) to the configured log file, or to stdout when there is none; on a
 * terminal, readable lines instead. Every run ends with one `summary` line that monitoring can
 * parse: step, delta, tables, rows, bytes, seconds, maxRssMb.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  file?: string;
  level?: string;
  /** Force readable output (default: when stdout is a terminal and no file is configured). */
  pretty?: boolean;
}

export async function createLogger(options: LogOptions): Promise<Logger> {
  const level = options.level ?? 'info';
  if (options.file) {
    return pino(
      { level },
      pino.destination({ dest: options.file, mkdir: true, append: true, sync: true }),
    );
  }
  if (options.pretty ?? process.stdout.isTTY) {
    // Loaded only for humans: cron runs should not pay for it.
    const { default: pretty } = await import('pino-pretty');
    return pino(
      { level },
      pretty({ sync: true, colorize: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss' }),
    );
  }
  return pino({ level }, pino.destination({ dest: 1, sync: true }));
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

export function logSummary(log: Logger, summary: Summary): void {
  const maxRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
  log.info({ summary: true, ...summary, maxRssMb }, 'summary');
}
