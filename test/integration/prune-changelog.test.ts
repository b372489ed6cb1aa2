/**
 * Change-log retention against real sources: under a pgbench workload on PostgreSQL, extract with
 * `retention.changelog` keeps the change log bounded (after each run it holds none of what that
 * run shipped); `deltasync capture --prune` does the same from cron and keeps rows younger than
 * keepHours; on SQLite the high-water position bounds what goes.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { logLines, runBin, sqliteJob } from '../helpers/cli.js';
import { mysqlServer, pgServer } from '../helpers/databases.js';
import mysql from 'mysql2/promise';

const pgs = await pgServer();
const mys = await mysqlServer();
const dirs: string[] = [];
afterAll(async () => {
  await pgs.cleanup();
  await mys.cleanup();
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});
const pgbench = spawnSync('pgbench', ['--version']).status === 0;

function writeConfig(dir: string, name: string, config: Record<string, unknown>): string {
  const file = join(dir, `${name}.js`);
  writeFileSync(file, `export default ${JSON.stringify(config, null, 2)};\n`);
  return file;
}

async function count(url: string, sql: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return Number((await c.query<{ n: string }>(sql)).rows[0]!.n);
  } finally {
    await c.end();
  }
}

const pruned = (stdout: string) =>
  logLines(stdout).find((l) => l.msg === 'change log pruned') as
    { deleted: number; position: string } | undefined;

describe.skipIf(!pgs.available || !pgbench)('change-log retention on PostgreSQL', () => {
  it('stays bounded under pgbench: extract deletes what it shipped; capture --prune keeps young rows', async () => {
    const url = await pgs.fresh('prunecl');
    const init = spawnSync('pgbench', ['-i', '-s', '1', '-q', url], { encoding: 'utf8' });
    expect(init.status, init.stderr).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'deltasync-prunecl-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'outbox'));
    const base = {
      name: 'bench',
      stateDir: join(dir, 'state'),
      source: { client: 'pg', connection: url },
      outbox: join(dir, 'outbox'),
      tables: [
        { name: 'pgbench_branches', key: 'bid', mode: 'changelog' },
        { name: 'pgbench_tellers', key: 'tid', mode: 'changelog' },
        { name: 'pgbench_accounts', key: 'aid', mode: 'changelog' },
      ],
    };
    const config = writeConfig(dir, 'extract', {
      ...base,
      retention: { keepDeltas: 2, keepHours: 0, changelog: true },
    });
    const cron = writeConfig(dir, 'cron', base);
    const apply = runBin('deltasync', ['capture', '-c', config, '--apply']);
    expect(apply.code, apply.stderr).toBe(0);
    const seeded = runBin('deltasync-extract', ['-c', config]);
    expect(seeded.code, seeded.stderr).toBe(0);

    const logged: number[] = [];
    const left: number[] = [];
    for (let round = 0; round < 4; round++) {
      const bench = spawnSync('pgbench', ['-n', '-c', '2', '-t', '40', url], { encoding: 'utf8' });
      expect(bench.status, bench.stderr).toBe(0);
      logged.push(await count(url, 'SELECT count(*) AS n FROM deltasync_changelog'));
      const r = runBin('deltasync-extract', ['-c', config]);
      expect(r.code, r.stderr).toBe(0);
      expect(pruned(r.stdout)?.deleted).toBe(logged.at(-1));
      left.push(await count(url, 'SELECT count(*) AS n FROM deltasync_changelog'));
    }
    console.log(`change log before/after each extract: ${JSON.stringify({ logged, left })}`);
    // Each TPC-B transaction logs one row for each of the three tables: 2 clients × 40 each.
    expect(logged).toEqual([240, 240, 240, 240]);
    expect(left).toEqual([0, 0, 0, 0]);

    // From cron with the defaults: rows younger than keepHours (24) stay.
    spawnSync('pgbench', ['-n', '-c', '1', '-t', '10', url]);
    expect(runBin('deltasync-extract', ['-c', cron]).code).toBe(0);
    const kept = runBin('deltasync', ['capture', '-c', cron, '--prune']);
    expect(kept.code, kept.stderr).toBe(0);
    expect(pruned(kept.stdout)).toMatchObject({ deleted: 0 });
    expect(await count(url, 'SELECT count(*) AS n FROM deltasync_changelog')).toBe(30);
    // Rows logged a day ago (their age is all that differs) go.
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query("UPDATE deltasync_changelog SET changed_at = now() - interval '25 hours'");
    await c.end();
    const gone = runBin('deltasync', ['capture', '-c', cron, '--prune']);
    expect(pruned(gone.stdout)).toMatchObject({ deleted: 30 });
  }, 300_000);
});

describe('change-log retention on SQLite', () => {
  it('deletes the rows at or below the shipped high-water mark, nothing after it', () => {
    const job = sqliteJob({
      tables: [{ name: 'items', key: ['id'], mode: 'changelog' }],
      retention: { keepDeltas: 2, keepHours: 0 },
    });
    try {
      expect(runBin('deltasync', ['capture', '-c', job.config, '--apply']).code).toBe(0);
      expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
      for (let id = 1; id <= 5; id++)
        job.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', id, `row ${id}`, 1, id);
      expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
      // Logged after the extract: not shipped, so it stays.
      job.sourceExec('UPDATE items SET qty = 2 WHERE id = 1');
      const r = runBin('deltasync', ['capture', '-c', job.config, '--prune']);
      expect(r.code, r.stderr).toBe(0);
      expect(pruned(r.stdout)).toMatchObject({ deleted: 5 });
      const db = new Database(job.source, { readonly: true });
      const rows = db.prepare('SELECT table_name, op FROM deltasync_changelog').all();
      db.close();
      expect(rows).toEqual([{ table_name: 'items', op: 'U' }]);
    } finally {
      job.cleanup();
    }
  });
});

describe.skipIf(!mys.available)('change-log retention on MariaDB', () => {
  it('never deletes past a gap still open: a transaction that commits late still ships', async () => {
    const url = await mys.fresh('prunecl');
    const admin = await mysql.createConnection(url);
    const held = await mysql.createConnection(url);
    try {
      await admin.query('CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))');
      const dir = mkdtempSync(join(tmpdir(), 'deltasync-prunecl-my-'));
      dirs.push(dir);
      mkdirSync(join(dir, 'outbox'));
      const config = writeConfig(dir, 'extract', {
        name: 'my',
        stateDir: join(dir, 'state'),
        source: { client: 'mysql', connection: url },
        outbox: join(dir, 'outbox'),
        tables: [{ name: 'items', key: 'id', mode: 'changelog' }],
        retention: { keepDeltas: 2, keepHours: 0, changelog: true },
      });
      expect(runBin('deltasync', ['capture', '-c', config, '--apply']).code).toBe(0);
      expect(runBin('deltasync-extract', ['-c', config]).code).toBe(0);
      // A transaction takes change-log id 1 and stays open; ids 2 and 3 commit after it.
      await held.query('BEGIN');
      await held.query("INSERT INTO items VALUES (1, 'late')");
      await admin.query("INSERT INTO items VALUES (2, 'b'), (3, 'c')");
      const first = runBin('deltasync-extract', ['-c', config]);
      expect(first.code, first.stderr).toBe(0);
      expect(pruned(first.stdout)).toMatchObject({ deleted: 0 });
      const [rows] = await admin.query('SELECT log_id FROM deltasync_changelog ORDER BY log_id');
      expect((rows as { log_id: number }[]).map((r) => Number(r.log_id))).toEqual([2, 3]);

      await held.query('COMMIT');
      // The next extracts ship the late row, its gap closes, and everything shipped goes.
      let deleted = 0;
      for (let i = 0; i < 3 && deleted < 3; i++) {
        const r = runBin('deltasync-extract', ['-c', config]);
        expect(r.code, r.stderr).toBe(0);
        deleted += pruned(r.stdout)?.deleted ?? 0;
      }
      expect(deleted).toBe(3);
      const [left] = await admin.query('SELECT count(*) AS n FROM deltasync_changelog');
      expect(Number((left as { n: number }[])[0]!.n)).toBe(0);
      const outbox = join(dir, 'outbox');
      const shipped = readdirSync(outbox)
        .filter((f) => f.endsWith('.MANIFEST.json'))
        .map(
          (f) =>
            JSON.parse(readFileSync(join(outbox, f), 'utf8')) as { tables: { rows: number }[] },
        )
        .reduce((n, m) => n + m.tables.reduce((k, t) => k + t.rows, 0), 0);
      // The seed (empty), ids 2 and 3, then the late id 1: three rows shipped in all.
      expect(shipped).toBe(3);
    } finally {
      await held.end();
      await admin.end();
    }
  }, 120_000);
});
