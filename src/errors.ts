/**
 * Typed errors and the exit codes they map to.
 *
 * Exit codes follow sysexits(3) so that a cron wrapper or a monitoring script can tell a corrupt
 * delta from an unreachable database from a run that merely found another instance running.
 * The CLI turns errors into exit codes in exactly one place (`src/cli/run.ts`).
 */

export const ExitCode = {
  /** Done, including "nothing to do". */
  OK: 0,
  /** Anything unexpected: a bug, or a failure we have no better name for. */
  FAILURE: 1,
  /** EX_DATAERR: a delta is corrupt, truncated, tampered, out of chain or from another job. */
  DATA: 65,
  /** EX_UNAVAILABLE: a database or a destination cannot be reached or written. */
  UNAVAILABLE: 69,
  /** EX_SOFTWARE: the after-load hook failed; the deltas it ran after stay committed. */
  HOOK: 70,
  /** EX_TEMPFAIL: another instance holds the lock; cron will simply try again later. */
  LOCKED: 75,
  /** EX_CONFIG: the configuration is missing, invalid or does not match the databases. */
  CONFIG: 78,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** Base class: every error we raise on purpose carries an exit code and a hint for the operator. */
export class DeltasyncError extends Error {
  readonly exitCode: ExitCodeValue = ExitCode.FAILURE;
  /** What the operator should do next, shown after the message. */
  readonly hint?: string;

  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** The configuration is wrong: a bad key, a missing file, a table or column the database lacks. */
export class ConfigError extends DeltasyncError {
  override readonly exitCode = ExitCode.CONFIG;
}

/** The configured database user lacks a privilege (a grant, or the right to create objects). */
export class PrivilegeError extends ConfigError {}

/** A delta cannot be trusted: checksum, row count, chain gap, unreadable manifest, bad signature. */
export class DeltaError extends DeltasyncError {
  override readonly exitCode = ExitCode.DATA;
  /** The file the problem was found in, when there is one. */
  readonly file?: string;

  constructor(message: string, options?: { file?: string; hint?: string; cause?: unknown }) {
    super(message, options);
    this.file = options?.file;
  }
}

/** A database or a destination directory cannot be reached, opened or written. */
export class UnavailableError extends DeltasyncError {
  override readonly exitCode = ExitCode.UNAVAILABLE;
}

/**
 * A lock on a table (source or replica) was not granted within `lockTimeoutSeconds`: another
 * session holds it. Nothing was applied; the run can be retried once that session is done.
 * `findBlocker` looks up who holds the lock (from a second connection) while it is still held,
 * so that the one-line message can name the session to look at.
 */
export class LockTimeoutError extends UnavailableError {
  readonly table?: string;
  findBlocker?: () => Promise<string | undefined>;

  constructor(
    message: string,
    options: {
      table?: string;
      hint?: string;
      cause?: unknown;
      findBlocker?: () => Promise<string | undefined>;
    },
  ) {
    super(message, options);
    this.table = options.table;
    this.findBlocker = options.findBlocker;
  }

  /** Adds the blocking session to the message, once; a failed look-up leaves it as it was. */
  async describeBlocker(): Promise<void> {
    const find = this.findBlocker;
    this.findBlocker = undefined;
    if (!find) return;
    const blocker = await find().catch(() => undefined);
    if (blocker) this.message = `${this.message}; blocked by ${blocker}`;
  }
}

/** Another process holds the single-instance lock. Cron treats this as "try again later". */
export class LockHeldError extends DeltasyncError {
  override readonly exitCode = ExitCode.LOCKED;
  readonly holderPid?: number;

  constructor(message: string, options?: { holderPid?: number }) {
    super(message);
    this.holderPid = options?.holderPid;
  }
}

/** The after-load hook failed. What it ran after is committed and stays so. */
export class HookError extends DeltasyncError {
  override readonly exitCode = ExitCode.HOOK;
}

/** Turns any thrown value into a one-line message for stderr. */
export function describeError(err: unknown): string {
  if (err instanceof DeltasyncError) {
    return err.hint ? `${err.message} (${err.hint})` : err.message;
  }
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}

/** The exit code for any thrown value; unknown errors are failures. */
export function exitCodeOf(err: unknown): ExitCodeValue {
  return err instanceof DeltasyncError ? err.exitCode : ExitCode.FAILURE;
}
