/**
 * The one place where errors become exit codes and one-line messages. Every bin goes through
 * `runCommand`: it loads the config, sets up logging, runs the step, and exits. The steps that
 * do work leave their run record and metrics here too (`runRecorded`), failures included; a
 * config that cannot be loaded leaves none, having no job name or state directory to trust.
 */
import { access, constants } from 'node:fs/promises';
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
import { ensureStateDir } from '../format/state.js';
import { createLogger, type Logger } from '../log.js';
import { terminalProgress, type Progress } from './progress.js';
import { loadStep } from '../steps/common.js';
import {
  writeLastRun,
  type DestinationRun,
  type LastRun,
  type RunOutcome,
} from '../steps/last-run.js';

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
  /** The terminal's progress line, when a person watches (see cli/progress.ts). */
  progress?: Progress;
  /** What a successful run did, for its run record and metrics (recorded commands only). */
  summary(s: RunSummary): void;
}

/** What a command tells about a successful run; absent counts are 0. */
export interface RunSummary {
  deltas?: number;
  rows?: number;
  bytes?: number;
  /** One line; default: the counts. */
  message?: string;
  destinations?: DestinationRun[];
}

/**
 * The commands that leave a run record (`<job>.<step>.last-run.json`) and, with `metrics`, a
 * metrics file. `status`, `capture`, `simulate` and `demo` do not: they read, set up or rehearse.
 */
export const RECORDED_COMMANDS = ['extract', 'copy', 'load', 'prune', 'resync', 'verify'] as const;
export type RecordedCommand = (typeof RECORDED_COMMANDS)[number];

/** The record's step name: load's names its replica, as its state file does. */
export function recordStep(command: RecordedCommand, config: LoadedConfig): string {
  return command === 'load' ? loadStep(config) : command;
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
  const base = { config, log, progress: terminalProgress(command) };
  try {
    if ((RECORDED_COMMANDS as readonly string[]).includes(command))
      return await runRecorded(command as RecordedCommand, base, options, fn);
    return (await fn({ ...base, summary: () => undefined })) ?? ExitCode.OK;
  } catch (err) {
    return await report(command, err, options.verbose ?? false, log);
  } finally {
    base.progress?.done();
  }
}

function summaryLine(s: RunSummary): string {
  const deltas = s.deltas ?? 0;
  if (deltas === 0 && !s.rows) return 'done: nothing to do';
  return `done: ${deltas} deltas, ${s.rows ?? 0} rows, ${s.bytes ?? 0} bytes`;
}

/**
 * Runs one step with a config and logger already loaded, and leaves its run record and metrics
 * whatever the outcome: the one place they are written, for the single commands and for every
 * iteration of a loop. Returns the exit code (never throws). A run that found the step's lock
 * held leaves none: the run holding it writes its own, and two writers would race.
 */
export async function runRecorded(
  command: RecordedCommand,
  base: Omit<CommandContext, 'summary'>,
  options: Pick<CommonOptions, 'verbose'>,
  fn: CommandFn,
): Promise<number> {
  const { config, log } = base;
  const started = new Date();
  let summary: RunSummary = {};
  let code: number;
  let message: string;
  let failure: unknown;
  try {
    if (config.metrics) await ensureMetricsDir(config.metrics.textfileDir);
    code = (await fn({ ...base, summary: (s) => void (summary = s) })) ?? ExitCode.OK;
    message = summary.message ?? summaryLine(summary);
  } catch (err) {
    failure = fromDriver(err);
    code = await report(command, failure, options.verbose ?? false, log);
    message = describeError(failure);
  }
  if (failure instanceof LockHeldError) return code;
  await saveRun(command, config, log, {
    started: started.toISOString(),
    finished: new Date().toISOString(),
    exitCode: code,
    message: message.split('\n')[0]!,
    deltas: summary.deltas ?? 0,
    rows: summary.rows ?? 0,
    bytes: summary.bytes ?? 0,
    ...(summary.destinations ? { destinations: summary.destinations } : {}),
  });
  return code;
}

/**
 * Writes the run record and the metrics file. Neither may turn a run's outcome into another: a
 * failure here is logged, and the exit code stays the step's.
 */
async function saveRun(
  command: RecordedCommand,
  config: LoadedConfig,
  log: Logger,
  outcome: RunOutcome,
): Promise<void> {
  const step = recordStep(command, config);
  let record: LastRun;
  try {
    await ensureStateDir(config.stateDir);
    record = await writeLastRun(config.stateDir, config.name, step, outcome);
  } catch (err) {
    log.warn({ err: describeError(err) }, 'run record not written');
    return;
  }
  if (!config.metrics) return;
  try {
    const only = command === 'extract' || command === 'copy' || command === 'load' ? command : null;
    // Loaded here only: most runs have no metrics, and status brings the database drivers.
    const { status } = await import('../steps/status.js');
    const { writeMetrics } = await import('../steps/metrics.js');
    const positions = only ? (await status(config, { only })).steps : [];
    await writeMetrics(config.metrics.textfileDir, record, command, positions);
  } catch (err) {
    log.warn({ err: describeError(err) }, 'metrics file not written');
  }
}

/** The metrics directory must be writable before a step works, like the state directory. */
async function ensureMetricsDir(dir: string): Promise<void> {
  try {
    await access(dir, constants.W_OK);
  } catch (err) {
    throw new ConfigError(`metrics.textfileDir ${dir} is not writable: ${(err as Error).message}`, {
      hint: "create it for this user (node_exporter's --collector.textfile.directory) or fix metrics.textfileDir",
    });
  }
}
