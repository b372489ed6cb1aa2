/**
 * The one place where errors become exit codes and one-line messages. Every bin goes through
 * `runCommand`: it loads the config, sets up logging, runs the step, and exits.
 */
import { loadConfig, type LoadedConfig } from '../config/load.js';
import type { StepName } from '../config/schema.js';
import {
  ConfigError,
  ExitCode,
  LockHeldError,
  LockTimeoutError,
  describeError,
  exitCodeOf,
  type ExitCodeValue,
} from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { terminalProgress, type Progress } from './progress.js';

/** Command-line misuse (unknown flag, missing argument): sysexits EX_USAGE. */
export const EXIT_USAGE = 64;

export interface CommonOptions {
  config: string;
  verbose?: boolean;
  /** Readable log lines even when stdout is not a terminal. */
  pretty?: boolean;
}

export interface CommandContext {
  config: LoadedConfig;
  log: Logger;
  progress?: Progress;
}

/** better-sqlite3's codes for "another process holds the database file's lock". */
const SQLITE_LOCK_CODES = new Set(['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_BUSY_SNAPSHOT']);

/**
 * Driver errors that mean the same whatever statement raised them, for engines whose modules do
 * not translate every call: SQLite's busy timeout (lockTimeoutSeconds) expiring.
 */
function fromDriver(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SQLITE_LOCK_CODES.has(code)) {
    return new LockTimeoutError(
      `SQLite: another process kept the database file locked for lockTimeoutSeconds (${(err as Error).message}); nothing was applied`,
      { hint: 'let that process finish, then run again; or raise lockTimeoutSeconds', cause: err },
    );
  }
  return err;
}

/**
 * Reports an error and returns the exit code. A held lock is an expected, quiet event in cron:
 * nothing on stderr unless --verbose.
 */
export async function report(
  command: string,
  err: unknown,
  verbose: boolean,
  log?: Logger,
): Promise<ExitCodeValue> {
  err = fromDriver(err);
  const code = exitCodeOf(err);
  if (err instanceof LockTimeoutError) await err.describeBlocker();
  if (err instanceof LockHeldError) {
    if (verbose) process.stderr.write(`deltasync ${command}: ${err.message}\n`);
    return code;
  }
  const line = describeError(err);
  log?.error({ exitCode: code, err: line }, `${command} failed`);
  if (code === ExitCode.FAILURE) {
    process.stderr.write(
      `deltasync ${command}: internal error: ${line} — please report this with the log\n`,
    );
    if (verbose && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  } else {
    process.stderr.write(`deltasync ${command}: ${line}\n`);
  }
  return code;
}

/**
 * The run's logger, naming the job and `step` on every line; a log file this user cannot write is
 * a configuration mistake.
 */
export async function openLog(
  config: LoadedConfig,
  options: CommonOptions,
  step?: string,
): Promise<Logger> {
  try {
    return await createLogger({
      file: config.log.file,
      level: options.verbose ? 'debug' : config.log.level,
      pretty: options.pretty,
      job: config.name,
      step,
    });
  } catch (err) {
    throw new ConfigError(
      `log.file: cannot write ${config.log.file ?? 'the log'}: ${(err as Error).message}`,
      {
        hint: 'make the file (and its directory) writable by the user cron runs as, or change log.file',
        cause: err,
      },
    );
  }
}

export type CommandFn = (ctx: CommandContext) => Promise<ExitCodeValue | void>;

/**
 * Runs one step with its config and logger ready, and returns its exit code (never throws). The
 * one path a single run and each iteration of `run --every` share, so both leave the same traces.
 */
export async function runStep(
  command: string,
  ctx: CommandContext,
  verbose: boolean,
  fn: CommandFn,
): Promise<number> {
  try {
    return (await fn(ctx)) ?? ExitCode.OK;
  } catch (err) {
    return await report(command, err, verbose, ctx.log);
  } finally {
    ctx.progress?.done();
  }
}

/** Loads config and logger, runs `fn`, and returns the exit code (never throws). */
export async function runCommand(
  command: string,
  step: StepName,
  options: CommonOptions,
  fn: CommandFn,
): Promise<number> {
  let log: Logger | undefined;
  let config: LoadedConfig;
  try {
    config = await loadConfig(options.config, step);
    log = await openLog(config, options, step);
  } catch (err) {
    return await report(command, err, options.verbose ?? false, log);
  }
  const ctx = { config, log, progress: terminalProgress(command) };
  return runStep(command, ctx, options.verbose ?? false, fn);
}
