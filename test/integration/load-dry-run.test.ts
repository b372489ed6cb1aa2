/**
 * Issue 12 point 8: `deltasync-load --dry-run` says which deltas a load would apply, in order,
 * with their tables, rows, deletes, base tables and the columns the replica lacks, stops where a
 * load would stop (gap, bad manifest, missing column under 'stop') with the load's exit code, and
 * changes nothing: the replica, the state directory and the inbox are byte for byte as before,
 * on PostgreSQL and MariaDB replicas (SQLite too: it has no deltasync_applied until a load).
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock } from '../../src/format/lock.js';
import { runBin, type BinResult } from '../helpers/cli.js';
import { cols, loadJob, type LoadJob } from '../helpers/deltas.js';
import { openDb, servers, type Db, type Engine, type Servers } from '../helpers/engines.js';

const ENGINES: Engine[] = ['pg', 'mysql', 'sqlite'];
let s: Servers;
beforeAll(async () => {
  s = await servers();
});
afterAll(async () => s?.cleanup());

const TABLES_SQL: Record<Engine, string> = {
  pg: 'SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1',
  mysql:
    'SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1',
  sqlite: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
};
const COLUMNS_SQL: Record<Engine, string> = {
  pg: "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'customer' ORDER BY 1",
  mysql:
    "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'customer' ORDER BY 1",
  sqlite: "SELECT name FROM pragma_table_info('customer') ORDER BY 1",
};

/** Everything a load could change on the replica: tables, customer's columns, every row. */
async function replicaSnapshot(db: Db): Promise<string> {
  const tables = (await db.rows(TABLES_SQL[db.engine])).map((r) => String(r[0]));
  const snap: Record<string, unknown> = {
    tables,
    customerColumns: await db.rows(COLUMNS_SQL[db.engine]),
  };
  for (const t of tables) snap[t] = await db.rows(`SELECT * FROM ${t} ORDER BY 1`);
  return JSON.stringify(snap, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
}

/** Every file of a directory with its content (a missing directory is an empty one). */
function files(dir: string): Record<string, string> {
  let names: string[] = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return {};
  }
  return Object.fromEntries(names.map((n) => [n, readFileSync(join(dir, n), 'base64')]));
}

async function expectUnchanged(db: Db, job: LoadJob, run: () => void): Promise<void> {
  const replica = await replicaSnapshot(db);
  const state = files(job.stateDir);
  const inbox = files(job.inbox);
  run();
  expect(await replicaSnapshot(db)).toBe(replica);
  expect(files(job.stateDir)).toEqual(state);
  expect(files(job.inbox)).toEqual(inbox);
}

function dryRun(job: LoadJob): BinResult {
  return runBin('deltasync-load', ['-c', job.config, '--dry-run']);
}
const NOT_RUN: BinResult = { code: null, stdout: '', stderr: '' };

const CUSTOMER = cols('id:int', 'name:text');
const ORDERS = cols('id:int', 'note:text');

/** A replica with customer and orders, the first delta loaded, four more deltas waiting. */
async function scenario(engine: Engine, label: string, extra = '') {
  const db = await openDb(s, engine, label);
  const job = loadJob(db, extra);
  await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
  await db.exec('CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(40))');
  await job.delta(0, 10, [
    {
      name: 'customer',
      key: ['id'],
      columns: CUSTOMER,
      rows: [
        [1, 'a'],
        [2, 'b'],
        [3, 'c'],
      ],
    },
  ]);
  const first = runBin('deltasync-load', ['-c', job.config]);
  expect(first.code, first.stderr).toBe(0);
  const waiting = {
    second: await job.delta(10, 20, [
      {
        name: 'customer',
        key: ['id'],
        columns: CUSTOMER,
        rows: [
          [4, 'd'],
          [5, 'e'],
          [1, 'a2'],
        ],
        deletes: [[2]],
      },
      {
        name: 'orders',
        key: ['id'],
        columns: ORDERS,
        rows: [
          [100, 'x'],
          [101, 'y'],
        ],
      },
    ]),
    // customer grew a column the replica lacks; orders is resent whole (a base).
    third: await job.delta(20, 30, [
      {
        name: 'customer',
        key: ['id'],
        columns: cols('id:int', 'name:text', 'born:date'),
        rows: [[6, 'f', '1990-01-02']],
      },
      { name: 'orders', key: ['id'], columns: ORDERS, rows: [[100, 'x']], base: true },
    ]),
    // 30 -> 40 is missing: a gap.
    afterGap: await job.delta(40, 50, [
      { name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[7, 'g']] },
    ]),
  };
  return { db, job, waiting };
}

describe.each(ENGINES)('%s replica: load --dry-run', (engine) => {
  it('lists the deltas in order up to a gap (exit 65), with what is in them, and changes nothing', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const { db, job, waiting } = await scenario(
      engine,
      `dry_gap_${engine}`,
      "load: { missingColumns: 'add' }",
    );
    try {
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(65);
      const err = r.stderr.trim().split('\n');
      expect(err).toHaveLength(1);
      expect(err[0]).toMatch(/gap: the delta after logId 30 is missing/);
      const out = r.stdout;
      expect(out).toMatch(/nothing was changed/);
      expect(out).toMatch(/replica applied logId 10\n/);
      expect(out).toMatch(/would apply 2 deltas \(7 rows, 1 delete\), in this order:/);
      // In order, each with its tables, rows and deletes.
      expect(out.indexOf(waiting.second)).toBeLessThan(out.indexOf(waiting.third));
      expect(out).toMatch(
        new RegExp(
          `${waiting.second} \\(logId 10 -> 20, created [^)]+\\): 5 rows, 1 delete, \\d+ bytes\n`,
        ),
      );
      expect(out).toMatch(/ {4}customer: 3 rows, 1 delete\n {4}orders: 2 rows\n/);
      expect(out).toMatch(/ {4}orders: 1 row, base: replica rows not in the delta are deleted/);
      expect(out).toMatch(
        /column born \(date\) missing on the replica: load adds it \(load.missingColumns: add\): ALTER TABLE .customer. ADD COLUMN .born. date/i,
      );
      expect(out).toMatch(
        new RegExp(`a load would stop at ${waiting.afterGap} \\(exit 65\\): gap: the delta after`),
      );

      // The real load applies what the dry run listed, and stops where it said.
      const real = runBin('deltasync-load', ['-c', job.config]);
      expect(real.code, real.stderr).toBe(65);
      expect(job.state().logId).toBe('30');
      expect(await db.rows('SELECT id FROM customer ORDER BY id')).toEqual([
        [1],
        [3],
        [4],
        [5],
        [6],
      ]);
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it("stops before a delta carrying a missing column under 'stop' (exit 78, with the ALTER TABLE), changing nothing", async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const { db, job, waiting } = await scenario(engine, `dry_stop_${engine}`);
    try {
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(78);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/'born' \(date\)/);
      expect(r.stdout).toMatch(/would apply 1 delta \(5 rows, 1 delete\)/);
      expect(r.stdout).toMatch(
        /column born \(date\) missing on the replica: load stops before this delta \(load.missingColumns: stop\); add it: ALTER TABLE/,
      );
      expect(r.stdout).toMatch(
        new RegExp(
          `${waiting.third} \\(logId 20 -> 30[^\\n]*, NOT applied:\\n {4}customer: 1 row\\n {6}column born`,
        ),
      );
      expect(r.stdout).toMatch(new RegExp(`a load would stop at ${waiting.third} \\(exit 78\\)`));
      expect(r.stdout).not.toMatch(waiting.afterGap);
      // The load it describes: the second delta goes in, then 78 before the third.
      const real = runBin('deltasync-load', ['-c', job.config]);
      expect(real.code, real.stderr).toBe(78);
      expect(job.state().logId).toBe('20');
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it('refuses a bad manifest as a load would (65) and runs while a load holds the lock', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const { db, job, waiting } = await scenario(engine, `dry_bad_${engine}`);
    try {
      // A load in progress holds the lock: the dry run neither waits for it nor exits 75.
      const lock = await acquireLock(join(job.stateDir, 'rj.load.lock'));
      try {
        let r = NOT_RUN;
        await expectUnchanged(db, job, () => (r = dryRun(job)));
        expect(r.code, r.stderr).toBe(78);
        expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(75);
      } finally {
        await lock.release();
      }

      const path = join(job.inbox, waiting.second);
      writeFileSync(path, readFileSync(path, 'utf8').replace('"rows": 3', '"rows": "3"'));
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(65);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(waiting.second);
      expect(r.stdout).not.toMatch(/would apply/);
      expect(r.stdout).toMatch(new RegExp(`a load would stop at ${waiting.second} \\(exit 65\\)`));
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it('reads a replica that never loaded without creating deltasync_applied or a state directory', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `dry_fresh_${engine}`);
    const job = loadJob(db);
    try {
      await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
      const file = await job.delta(0, 5, [
        { name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[1, 'a']] },
      ]);
      rmSync(job.stateDir, { recursive: true, force: true });
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/replica applied logId 0\n/);
      expect(r.stdout).toMatch(new RegExp(`would apply 1 delta [^\\n]*\\n {2}${file}`));
      expect((await db.rows(TABLES_SQL[engine])).map((t) => String(t[0]))).toEqual(['customer']);
      expect(files(job.stateDir)).toEqual({});

      expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
      const after = dryRun(job);
      expect(after.code, after.stderr).toBe(0);
      expect(after.stdout).toMatch(/replica applied logId 5\nnothing to apply/);
    } finally {
      job.cleanup();
      await db.close();
    }
  });
});

describe('sqlite replica: load --dry-run where a load starts elsewhere', () => {
  it('starts at the newest full base for a replica that applied nothing, as a load does', async () => {
    const db = await openDb(s, 'sqlite', 'dry_base');
    const job = loadJob(db);
    try {
      await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
      await job.delta(0, 10, [
        { name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[1, 'a']] },
      ]);
      const base = await job.delta(
        10,
        20,
        [{ name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[2, 'b']], base: true }],
        { fullBase: true },
      );
      const next = await job.delta(20, 30, [
        { name: 'customer', key: ['id'], columns: CUSTOMER, deletes: [[2]] },
      ]);
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(
        `a load would start at the full base ${base}, skipping 1 earlier delta\n`,
      );
      expect(r.stdout).toMatch(/would apply 2 deltas \(1 row, 1 delete\), in this order:/);
      expect(r.stdout.indexOf(base)).toBeLessThan(r.stdout.indexOf(`  ${next}`));

      const real = runBin('deltasync-load', ['-c', job.config]);
      expect(real.code, real.stderr).toBe(0);
      expect(job.state().logId).toBe('30');
      expect(await db.rows('SELECT id FROM customer ORDER BY id')).toEqual([]);
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it('reads the applied logId from the replica, not from a state file that differs', async () => {
    const db = await openDb(s, 'sqlite', 'dry_state');
    const job = loadJob(db);
    try {
      await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
      await job.delta(0, 10, [
        { name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[1, 'a']] },
      ]);
      expect(runBin('deltasync-load', ['-c', job.config]).code).toBe(0);
      const next = await job.delta(10, 20, [
        { name: 'customer', key: ['id'], columns: CUSTOMER, rows: [[2, 'b']] },
      ]);
      const stateFile = join(job.stateDir, 'rj.load.state.json');
      writeFileSync(
        stateFile,
        readFileSync(stateFile, 'utf8').replace('"logId": "10"', '"logId": "4"'),
      );
      let r = NOT_RUN;
      await expectUnchanged(db, job, () => (r = dryRun(job)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(
        /replica applied logId 10 \(the state file says 4; a load would set it to the replica's\)/,
      );
      expect(r.stdout).toMatch(new RegExp(`would apply 1 delta [^\\n]*\\n {2}${next}`));
    } finally {
      job.cleanup();
      await db.close();
    }
  });
});
