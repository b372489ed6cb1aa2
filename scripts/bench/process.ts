/**
 * Child processes for the bench: the real bins, psql and the mariadb client. Each run is timed
 * from spawn to exit, so a bin's figure includes its Node start-up, as cron would see it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall-clock seconds from spawn to exit. */
  seconds: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Children still running, so that an interrupted bench can stop them before it cleans up. */
const running = new Set<ReturnType<typeof spawn>>();

export function killRunning(): void {
  for (const child of running) child.kill('SIGTERM');
}

/** Runs a command to completion and collects its output; never rejects on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: RunOptions = {},
): Promise<ProcessResult> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (error) => {
      running.delete(child);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      running.delete(child);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
      });
    });
  });
}

/** Like `run`, but a non-zero exit becomes an error that quotes the end of stderr. */
export async function runOk(
  command: string,
  args: string[],
  options: RunOptions = {},
): Promise<ProcessResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} exited with ${result.code}: ${tail(result.stderr || result.stdout)}`,
    );
  }
  return result;
}

/** The last few lines of a process's output, for error messages. */
export function tail(text: string, lines = 5): string {
  return text.trim().split('\n').slice(-lines).join(' | ');
}

/** GNU time reports the peak resident set size; Debian ships it as /usr/bin/time (package time). */
export const GNU_TIME = '/usr/bin/time';
export const HAVE_GNU_TIME = existsSync(GNU_TIME);
