/**
 * `deltasync run … --every …` as a child process that a test watches line by line and stops with
 * a signal. Waits are on log lines, never on elapsed time: a loaded CI machine only makes them
 * slower, not wrong.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './cli.js';

export type LogLine = Record<string, unknown>;

export interface RunningLoop {
  child: ChildProcess;
  /** Every JSON log line so far, in order. */
  lines: LogLine[];
  stderr(): string;
  /** Resolves with the first line (from `from` on) that matches; rejects on exit or timeout. */
  waitFor(match: (line: LogLine) => boolean, what: string, from?: number): Promise<LogLine>;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** How long a wait for a line may take before the test fails saying what it waited for. */
const WAIT_MS = 60_000;

export function startLoop(args: string[], env: Record<string, string> = {}): RunningLoop {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'deltasync'), 'run', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  let err = '';
  let partial = '';
  const waiters = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const text = partial + chunk;
    const complete = text.split('\n');
    partial = complete.pop()!;
    for (const l of complete) if (l.startsWith('{')) lines.push(JSON.parse(l) as LogLine);
    for (const w of waiters) w();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const w of waiters) w();
  });

  function waitFor(match: (line: LogLine) => boolean, what: string, from = 0) {
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}`)), WAIT_MS);
      const check = () => {
        const hit = lines.slice(from).find(match);
        if (hit) finish(undefined, hit);
        else if (done) finish(new Error(`the loop exited before ${what}: ${err}`));
      };
      function finish(e?: Error, line?: LogLine) {
        clearTimeout(timer);
        waiters.delete(check);
        if (e) reject(e);
        else resolve(line!);
      }
      waiters.add(check);
      check();
    });
  }

  return {
    child,
    lines,
    stderr: () => err,
    waitFor,
    exited,
    async stop(signal = 'SIGTERM') {
      if (!done) child.kill(signal);
      return exited;
    },
  };
}

/** The `p`-th percentile (0–100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}
