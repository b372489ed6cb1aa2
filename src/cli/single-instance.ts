/**
 * `single-instance NAME [--dir DIR] [-v] -- command …`: runs any command under the same kind of
 * lock the deltasync steps take, for cron lines that are not deltasync's own. Exits 75 at once
 * (quietly) if another run holds NAME; otherwise exits with the command's own exit code.
 */
import { spawn } from 'node:child_process';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { acquireLock } from '../format/lock.js';
import { report, EXIT_USAGE } from './run.js';

const USAGE = 'usage: single-instance NAME [--dir DIR] [-v] -- command [args…]';

export async function singleInstance(argv: string[]): Promise<number> {
  const sep = argv.indexOf('--');
  const own = sep === -1 ? argv : argv.slice(0, sep);
  const command = sep === -1 ? [] : argv.slice(sep + 1);
  let dir = process.env.DELTASYNC_STATE_DIR ?? join(homedir(), 'var/run/deltasync');
  let verbose = false;
  const names: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const a = own[i]!;
    if (a === '--dir') dir = own[++i] ?? '';
    else if (a === '-v' || a === '--verbose') verbose = true;
    else names.push(a);
  }
  if (names.length !== 1 || !/^[A-Za-z0-9._-]+$/.test(names[0]!) || command.length === 0 || !dir) {
    process.stderr.write(`${USAGE}\n`);
    return EXIT_USAGE;
  }
  let lock;
  try {
    await mkdir(resolve(dir), { recursive: true });
    lock = await acquireLock(join(resolve(dir), `${names[0]}.lock`));
  } catch (err) {
    return report('single-instance', err, verbose);
  }
  try {
    return await new Promise<number>((done) => {
      const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
      const forward = (signal: NodeJS.Signals) => child.kill(signal);
      for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, forward);
      child.on('error', (err) => {
        process.stderr.write(`single-instance: cannot run ${command[0]}: ${err.message}\n`);
        done(127);
      });
      child.on('exit', (code, signal) => done(code ?? 128 + (signal ? osSignal(signal) : 0)));
    });
  } finally {
    await lock.release();
  }
}

function osSignal(name: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[name] ?? 0;
}
