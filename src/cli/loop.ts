/**
 * `deltasync run -c FILE --steps extract,copy --every 2s`: the listed steps in order, then a
 * sleep until the next tick, until SIGTERM or SIGINT. Seconds of latency where cron gives
 * minutes, with nothing else changed: each step takes its own lock per iteration (so a cron run
 * and a loop never overlap), and goes through the same `runRecorded` as a single run (same log
 * lines, same exit codes, same run record and metrics file after every iteration).
 *
 * A held lock skips that step for this iteration. A failing step is logged and the loop goes on,
 * but a step that keeps failing is retried less and less often (see `backoffMs`), so a replica
 * that is down for an hour costs a few dozen lines in the log, not two thousand.
 */
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { ExitCode } from '../errors.js';
import { quietIdleSummaries, reopenLogFiles, type Logger } from '../log.js';
import { formatDuration } from './duration.js';
import { terminalProgress } from './progress.js';
import { openLog, report, runRecorded, type CommandFn, type CommonOptions } from './run.js';

export const LOOP_STEPS = ['extract', 'copy', 'load'] as const;
export type LoopStep = (typeof LOOP_STEPS)[number];

export interface LoopOptions extends CommonOptions {
  steps: LoopStep[];
  /** Milliseconds from the start of one iteration to the start of the next. */
  every: number;
}

/** The longest a failing step waits before it is tried again. */
export const MAX_BACKOFF_MS = 5 * 60_000;

/**
 * How long after its `failures`-th failure in a row a step is tried again: one period after the
 * first (a transient error costs nothing), then twice as long each time, at most MAX_BACKOFF_MS
 * (or the period, if that is longer).
 */
export function backoffMs(every: number, failures: number): number {
  if (failures <= 1) return every;
  return Math.max(every, Math.min(MAX_BACKOFF_MS, every * 2 ** (failures - 1)));
}

/** `extract,copy` → the steps, in the order given; throws a message for anything else. */
export function parseSteps(text: string): LoopStep[] {
  const steps = text.split(',').map((s) => s.trim());
  for (const s of steps) {
    if (!(LOOP_STEPS as readonly string[]).includes(s))
      throw new Error(`'${s}' is not a step: give some of ${LOOP_STEPS.join(', ')}`);
  }
  if (new Set(steps).size !== steps.length) throw new Error('a step is listed twice');
  return steps as LoopStep[];
}

interface StepSlot {
  step: LoopStep;
  config: LoadedConfig;
  log: Logger;
  failures: number;
  /** Not tried before this time (ms since the epoch), after failures. */
  notBefore: number;
}

/** Signals that end the loop after the current step. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

class Stopper {
  stopped = false;
  private wake: (() => void) | undefined;
  private readonly handler = (signal: NodeJS.Signals) => this.onSignal(signal);
  /** SIGHUP, logrotate's signal: write to log.file by its name again. */
  private readonly reopen = () => {
    reopenLogFiles();
    this.log.info('log file reopened');
  };

  constructor(private readonly log: Logger) {
    for (const s of STOP_SIGNALS) process.on(s, this.handler);
    process.on('SIGHUP', this.reopen);
  }

  private onSignal(signal: NodeJS.Signals): void {
    if (this.stopped) {
      // A second signal: the person means it. Every step is safe to kill (see crash tests).
      this.log.warn({ signal }, 'second signal: exiting without finishing the step');
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    }
    this.stopped = true;
    this.log.info({ signal }, 'stopping after the current step');
    this.wake?.();
  }

  /** Sleeps `ms`, or less if a signal comes. */
  sleep(ms: number): Promise<void> {
    if (this.stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  close(): void {
    for (const s of STOP_SIGNALS) process.off(s, this.handler);
    process.off('SIGHUP', this.reopen);
  }
}

/** One step of one iteration: runs it unless it is backing off, and keeps its failure count. */
async function runSlot(
  slot: StepSlot,
  options: LoopOptions,
  fn: CommandFn,
  now: number,
): Promise<void> {
  if (now < slot.notBefore) return;
  const ctx = { config: slot.config, log: slot.log, progress: terminalProgress(slot.step) };
  let code: number;
  try {
    code = await runRecorded(slot.step, ctx, options, fn);
  } finally {
    ctx.progress?.done();
  }
  if (code === ExitCode.OK) {
    if (slot.failures > 0) slot.log.info({ failures: slot.failures }, 'step recovered');
    slot.failures = 0;
    slot.notBefore = 0;
  } else if (code === ExitCode.LOCKED) {
    // A cron run (or another loop) has it: this iteration leaves the step to them.
    slot.log.info('skipped: another instance holds the lock');
  } else {
    slot.failures += 1;
    const wait = backoffMs(options.every, slot.failures);
    slot.notBefore = Date.now() + wait;
    slot.log.warn(
      { exitCode: code, failures: slot.failures, retryIn: formatDuration(wait) },
      'step failed; the loop goes on',
    );
  }
}

/**
 * Runs the loop until a signal; returns the exit code: 0 when stopped by SIGTERM or SIGINT, or
 * the config error's code (78) when a step's config is unusable at start.
 */
export async function runLoop(
  options: LoopOptions,
  runners: Record<LoopStep, CommandFn>,
): Promise<number> {
  const verbose = options.verbose ?? false;
  let root: Logger | undefined;
  const slots: StepSlot[] = [];
  try {
    // Every step's config is checked before the first iteration: a mistake is found now, by
    // the person starting the loop, not at 3 a.m. by the first failing iteration.
    for (const step of options.steps) {
      const config = await loadConfig(options.config, step);
      root ??= await openLog(config, options);
      const log = root.child({ step });
      quietIdleSummaries(log);
      slots.push({ step, config, log, failures: 0, notBefore: 0 });
    }
  } catch (err) {
    return await report('run', err, verbose, root);
  }
  const log = root!.child({ step: 'run' });
  const stopper = new Stopper(log);
  log.info({ steps: options.steps, every: formatDuration(options.every) }, 'loop started');
  try {
    while (!stopper.stopped) {
      const started = Date.now();
      for (const slot of slots) {
        if (stopper.stopped) break;
        await runSlot(slot, options, runners[slot.step], Date.now());
      }
      // The next tick is one period after this one started; a late iteration does not try to
      // catch up with a burst.
      await stopper.sleep(started + options.every - Date.now());
    }
  } finally {
    stopper.close();
  }
  log.info('loop stopped');
  return ExitCode.OK;
}
