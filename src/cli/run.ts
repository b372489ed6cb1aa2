/**
 * The one place where errors become exit codes and one-line messages. Every bin goes through
 * `runCommand`: it loads the config, sets up logging, runs the step, and exits. The steps that
 * do work leave their run record and metrics here too (`runRecorded`), failures included; a
 * config that cannot be loaded leaves one when its job name can still be read from it.
 */
import { access, constants } from 'node:fs/promises';
import { loadConfig, recordPlaceOf, type LoadedConfig, type RecordPlace } from '../config/load.js';
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
import { ensureStateDir, loadStepName } from '../format/state.js';
import { createLogger, type Logger } from '../log.js';
import { terminalProgress, type Progress } from './progress.js';
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
  const recorded = (RECORDED_COMMANDS as readonly string[]).includes(command);
  const started = new Date();
  let config: LoadedConfig | undefined;
  let log: Logger | undefined;
  try {
    config = await loadConfig(options.config, step);
    log = await openLog(config, options, step);
  } catch (err) {
    const code = await report(command, err, options.verbose ?? false, log);
    if (recorded)
      await recordFailedStart(command as RecordedCommand, options, config, started, code, err);
    return code;
  }
  const base = { config, log, progress: terminalProgress(command) };
  try {
    if (recorded) return await runRecorded(command as RecordedCommand, base, options, fn);
    return (await fn({ ...base, summary: () => undefined })) ?? ExitCode.OK;
  } catch (err) {
    return await report(command, err, options.verbose ?? false, log);
  } finally {
    base.progress?.done();
  }
}

/**
 * A config that did not load (an unset password, a bad key, an unwritable log file) still leaves
 * a failed run record when its job name can be read: cron's runs fail, and monitoring must say so.
 */
async function recordFailedStart(
  command: RecordedCommand,
  options: CommonOptions,
  config: LoadedConfig | undefined,
  started: Date,
  code: number,
  err: unknown,
): Promise<void> {
  const place = config
    ? {
        name: config.name,
        stateDir: config.stateDir,
        replica: config.replica,
        textfileDir: config.metrics?.textfileDir,
      }
    : await recordPlaceOf(options.config).catch(() => null);
  if (!place) return;
  await saveRun(command, place, undefined, {
    started: started.toISOString(),
    finished: new Date().toISOString(),
    exitCode: code,
    message: describeError(err).split('\n')[0]!,
    deltas: 0,
    rows: 0,
    bytes: 0,
  });
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
  const place = {
    name: config.name,
    stateDir: config.stateDir,
    replica: config.replica,
    textfileDir: config.metrics?.textfileDir,
  };
  await saveRun(
    command,
    place,
    log,
    {
      started: started.toISOString(),
      finished: new Date().toISOString(),
      exitCode: code,
      message: message.split('\n')[0]!,
      deltas: summary.deltas ?? 0,
      rows: summary.rows ?? 0,
      bytes: summary.bytes ?? 0,
      ...(summary.destinations ? { destinations: summary.destinations } : {}),
    },
    config,
  );
  return code;
}

/**
 * Writes the run record and the metrics file. Neither may turn a run's outcome into another: a
 * failure here is logged, and the exit code stays the step's. With the loaded `config`, the
 * metrics of extract, copy and load also say where the step stands (lag, waiting, retained).
 */
async function saveRun(
  command: RecordedCommand,
  place: RecordPlace,
  log: Logger | undefined,
  outcome: RunOutcome,
  config?: LoadedConfig,
): Promise<void> {
  const step = command === 'load' ? loadStepName(place.replica) : command;
  let record: LastRun;
  try {
    record = await writeRunRecord(place, step, outcome);
  } catch (err) {
    log?.warn({ err: describeError(err) }, 'run record not written');
    return;
  }
  if (!place.textfileDir) return;
  try {
    const only = command === 'extract' || command === 'copy' || command === 'load' ? command : null;
    // Loaded here only: most runs have no metrics, and status brings the database drivers.
    const { status } = await import('../steps/status.js');
    const { writeMetrics } = await import('../steps/metrics.js');
    const positions = only && config ? (await status(config, { only })).steps : [];
    await writeMetrics(place.textfileDir, record, command, positions);
  } catch (err) {
    log?.warn({ err: describeError(err) }, 'metrics file not written');
  }
}

/**
 * Writes the run record, making the state directory (and proving it writable, for the message)
 * only when that fails: a step that ran has done both already, and the proof costs two fsyncs
 * in every cron run.
 */
async function writeRunRecord(
  place: RecordPlace,
  step: string,
  outcome: RunOutcome,
): Promise<LastRun> {
  try {
    return await writeLastRun(place.stateDir, place.name, step, outcome);
  } catch {
    await ensureStateDir(place.stateDir);
    return await writeLastRun(place.stateDir, place.name, step, outcome);
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
