/**
 * Running the real bins as child processes, and building throwaway SQLite jobs for them.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';

export const ROOT = resolve(import.meta.dirname, '../..');

export interface BinResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runBin(bin: string, args: string[], env: Record<string, string> = {}): BinResult {
  const r: SpawnSyncReturns<string> = spawnSync(
    process.execPath,
    [join(ROOT, 'bin', bin), ...args],
    {
      encoding: 'utf8',
      env: { ...process.env, ...env },
      timeout: 120_000,
    },
  );
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The JSON log lines a run printed on stdout. */
export function logLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export function summaryOf(stdout: string): Record<string, unknown> | undefined {
  return logLines(stdout)
    .filter((l) => l.msg === 'summary')
    .at(-1);
}

export const ITEMS_DDL =
  'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, log_id INTEGER NOT NULL)';

export interface SqliteJob {
  dir: string;
  config: string;
  source: string;
  target: string;
  outbox: string;
  inbox: string;
  stateDir: string;
  /** Runs `sql` on the source. */
  sourceExec(sql: string, ...params: unknown[]): void;
  /** Rows of a table in the target, ordered by id. */
  targetRows(table?: string): unknown[];
  cleanup(): void;
}

/**
 * A job with a SQLite source and target holding one table `items`, config written as a JS module.
 * `extra` is merged into the config object (as JSON).
 */
export function sqliteJob(extra: Record<string, unknown> = {}): SqliteJob {
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-test-'));
  const source = join(dir, 'source.sqlite');
  const target = join(dir, 'target.sqlite');
  const outbox = join(dir, 'outbox');
  const inbox = join(dir, 'inbox');
  const stateDir = join(dir, 'state');
  mkdirSync(inbox);
  for (const file of [source, target]) {
    const db = new Database(file);
    db.exec(ITEMS_DDL);
    db.close();
  }
  const config = {
    name: 't',
    stateDir,
    source: { client: 'sqlite', connection: { filename: source } },
    target: { client: 'sqlite', connection: { filename: target } },
    outbox,
    destinations: [{ name: 'main', dir: inbox }],
    inbox,
    tables: [{ name: 'items', key: ['id'], mode: 'logid', logIdColumn: 'log_id' }],
    delta: { maxRowsPerPart: 3, compression: 'gzip' },
    ...extra,
  };
  const configPath = join(dir, 'job.js');
  writeFileSync(configPath, `export default ${JSON.stringify(config, null, 2)};\n`);
  return {
    dir,
    config: configPath,
    source,
    target,
    outbox,
    inbox,
    stateDir,
    sourceExec(sql, ...params) {
      const db = new Database(source);
      db.prepare(sql).run(...params);
      db.close();
    },
    targetRows(table = 'items') {
      const db = new Database(target, { readonly: true });
      const rows = db.prepare(`SELECT * FROM ${table} ORDER BY id`).all();
      db.close();
      return rows;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
