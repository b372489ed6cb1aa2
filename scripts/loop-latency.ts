/**
 * Loop-mode latency: how long a row committed on the source takes to be visible on the replica
 * when `deltasync run --steps extract,copy` and `deltasync run --steps load` loop over a
 * directory store. `measureLoopLatency` is what test/integration/loop-latency.test.ts asserts on
 * and what a benchmark can call; run on its own it builds a throwaway SQLite job and prints
 * p50/p95/max:
 *
 *   node dist/scripts/loop-latency.js [--every 2s] [--rows 40] [--commit-every-ms 250]
 *
 * Also `startLoop`: a loop as a child process watched line by line. Waits are on log lines, never
 * on elapsed time: a loaded machine only makes them slower, not wrong.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The package root, from scripts/ (vitest) or dist/scripts/ (compiled). */
const ROOT = existsSync(join(HERE, '..', 'package.json'))
  ? resolve(HERE, '..')
  : resolve(HERE, '../..');

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

/** A job whose source and target SQLite files hold `items (id, name, qty, log_id)`. */
export interface LatencyJob {
  config: string;
  source: string;
  target: string;
}

export interface LatencyOptions {
  /** The loops' period, as given to `--every`. */
  every?: string;
  rows?: number;
  /** One source commit this often. */
  commitEveryMs?: number;
}

export interface LatencyResult {
  every: string;
  rows: number;
  /** Per row (by id - 1), commit → first seen on the replica; NaN if it never arrived. */
  latenciesMs: number[];
  p50: number;
  p95: number;
  max: number;
  /** Ids as the replica showed them, in the order they appeared. */
  order: number[];
  /** Log lines of the source loop and the replica loop. */
  sourceLines: LogLine[];
  replicaLines: LogLine[];
  /** Exit codes after SIGTERM (source loop) and SIGINT (replica loop). */
  sourceExit: number | null;
  replicaExit: number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts both loops, commits `rows` rows one at a time on the source (ids 1…rows), watches the
 * replica every 50 ms until every row is there (or 60 s pass), then stops both loops.
 * Start-up (Node, drivers) is not counted: the first commit waits for both loops to run.
 */
export async function measureLoopLatency(
  job: LatencyJob,
  options: LatencyOptions = {},
): Promise<LatencyResult> {
  const every = options.every ?? '2s';
  const rows = options.rows ?? 40;
  const commitEveryMs = options.commitEveryMs ?? 250;
  const source = startLoop(['-c', job.config, '--steps', 'extract,copy', '--every', every]);
  const replica = startLoop(['-c', job.config, '--steps', 'load', '--every', every]);
  const committedAt: number[] = [];
  const seenAt = new Map<number, number>();
  const order: number[] = [];
  const src = new Database(job.source);
  const tgt = new Database(job.target, { readonly: true, fileMustExist: true });
  try {
    const started = (l: LogLine) => l.msg === 'loop started';
    await Promise.all([
      source.waitFor(started, 'the source loop to start'),
      replica.waitFor(started, 'the replica loop to start'),
    ]);
    const insert = src.prepare('INSERT INTO items (id, name, qty, log_id) VALUES (?, ?, ?, ?)');
    const seen = tgt.prepare('SELECT id FROM items WHERE id > ? ORDER BY id');
    let last = 0;
    const watch = () => {
      const now = Date.now();
      for (const { id } of seen.all(last) as { id: number }[]) {
        seenAt.set(id, now);
        order.push(id);
        last = id;
      }
    };
    for (let id = 1; id <= rows; id++) {
      insert.run(id, `row ${id}`, id, id);
      committedAt.push(Date.now());
      for (let next = Date.now() + commitEveryMs; Date.now() < next; await sleep(50)) watch();
    }
    for (const end = Date.now() + 60_000; seenAt.size < rows && Date.now() < end; await sleep(50))
      watch();
  } finally {
    src.close();
    tgt.close();
  }
  const sourceExit = await source.stop('SIGTERM');
  const replicaExit = await replica.stop('SIGINT');
  const latenciesMs = committedAt.map((at, i) => (seenAt.get(i + 1) ?? NaN) - at);
  return {
    every,
    rows,
    latenciesMs,
    p50: percentile(latenciesMs, 50),
    p95: percentile(latenciesMs, 95),
    max: percentile(latenciesMs, 100),
    order,
    sourceLines: source.lines,
    replicaLines: replica.lines,
    sourceExit,
    replicaExit,
  };
}

/** One line for a report: `loop latency (--every 2s, 40 rows): p50 2.90 s, p95 3.80 s, max 3.95 s`. */
export function formatLatency(r: LatencyResult): string {
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  return `loop latency (--every ${r.every}, ${r.rows} rows): p50 ${s(r.p50)}, p95 ${s(r.p95)}, max ${s(r.max)}`;
}

/** A throwaway SQLite job in `dir`: source and target with `items`, a directory store. */
export function sqliteLatencyJob(dir: string): LatencyJob {
  const job = {
    config: join(dir, 'job.js'),
    source: join(dir, 'source.sqlite'),
    target: join(dir, 'target.sqlite'),
  };
  for (const file of [job.source, job.target]) {
    const db = new Database(file);
    db.exec(
      'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, log_id INTEGER NOT NULL)',
    );
    db.close();
  }
  mkdirSync(join(dir, 'inbox'));
  const config = {
    name: 'latency',
    stateDir: join(dir, 'state'),
    source: { client: 'sqlite', connection: { filename: job.source } },
    target: { client: 'sqlite', connection: { filename: job.target } },
    outbox: join(dir, 'outbox'),
    destinations: [{ name: 'main', dir: join(dir, 'inbox') }],
    inbox: join(dir, 'inbox'),
    tables: [{ name: 'items', key: ['id'], mode: 'logid', logIdColumn: 'log_id' }],
  };
  writeFileSync(job.config, `export default ${JSON.stringify(config, null, 2)};\n`);
  return job;
}

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : (process.argv[i + 1] ?? fallback);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-latency-'));
  try {
    const r = await measureLoopLatency(sqliteLatencyJob(dir), {
      every: flag('every', '2s'),
      rows: Number(flag('rows', '40')),
      commitEveryMs: Number(flag('commit-every-ms', '250')),
    });
    process.stdout.write(`${formatLatency(r)}\n`);
    process.exitCode = r.latenciesMs.some(Number.isNaN) ? 1 : 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
