/**
 * Each capture mode and the shaping options end to end through the real bins, on every engine
 * that can run here (SQLite always; PostgreSQL and MariaDB when their servers answer):
 * changelog mode with triggers made by `deltasync capture` (inserts, updates, key changes,
 * deletes, foreign keys, parents first), timestamp mode with many rows sharing one timestamp split
 * by the batch limit, snapshot mode, and shaping (target name, rename, exclude, filter, computed
 * columns) next to a replica column that users edit.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin, summaryOf } from '../helpers/cli.js';
import {
  openDb,
  servers,
  writeJob,
  type Db,
  type Engine,
  type JobFiles,
} from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const ENGINES: Engine[] = ['sqlite', 'pg', 'mysql'];

const TYPES: Record<Engine, { id: string; text: string; ts: string; suffix: string }> = {
  sqlite: { id: 'INTEGER', text: 'TEXT', ts: 'TIMESTAMPTZ', suffix: '' },
  pg: { id: 'bigint', text: 'text', ts: 'timestamptz', suffix: '' },
  mysql: { id: 'bigint', text: 'varchar(100)', ts: 'timestamp(6) NULL', suffix: ' ENGINE=InnoDB' },
};

/** A column rendered as text the same way on every engine, for comparisons. */
function txt(engine: Engine, column: string): string {
  return engine === 'pg'
    ? `${column}::text`
    : engine === 'mysql'
      ? `CAST(${column} AS CHAR)`
      : `CAST(${column} AS TEXT)`;
}

function run(bin: string, job: JobFiles, ...args: string[]) {
  const r = runBin(bin, [...args, '-c', job.config]);
  expect(r.code, `${bin} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

function cycle(job: JobFiles): { extracted: number; loaded: number } {
  const e = run('deltasync-extract', job);
  run('deltasync-copy', job);
  const l = run('deltasync-load', job);
  return {
    extracted: Number(summaryOf(e.stdout)?.deltas),
    loaded: Number(summaryOf(l.stdout)?.rows),
  };
}

async function pair(engine: Engine, label: string): Promise<{ source: Db; target: Db }> {
  return {
    source: await openDb(dbs, engine, `${label}s`),
    target: await openDb(dbs, engine, `${label}t`),
  };
}

async function both(p: { source: Db; target: Db }, sql: string): Promise<void> {
  await p.source.exec(sql);
  await p.target.exec(sql);
}

describe.each(ENGINES)('%s', (engine) => {
  const T = TYPES[engine];
  const run_ = it.skipIf(!dbs.available(engine));

  run_(
    'changelog mode: triggers capture inserts, updates, key changes and deletes, parents first',
    async () => {
      const p = await pair(engine, 'cl');
      const job = writeJob(
        p.source,
        p.target,
        `tableOrder: 'foreign-keys',
       tables: [
         { name: 'children', key: ['id'], mode: 'changelog' },
         { name: 'parents', key: ['id'], mode: 'changelog' },
       ]`,
      );
      try {
        await both(p, `CREATE TABLE parents (id ${T.id} PRIMARY KEY, name ${T.text})${T.suffix}`);
        await both(
          p,
          `CREATE TABLE children (id ${T.id} PRIMARY KEY, parent_id ${T.id} NOT NULL REFERENCES parents(id), label ${T.text})${T.suffix}`,
        );
        const printed = run('deltasync', job, 'capture', '--print');
        expect(printed.stdout).toMatch(/CREATE (OR REPLACE )?TRIGGER/i);
        expect(printed.stdout).toContain('deltasync_changelog');
        run('deltasync', job, 'capture', '--apply');

        await p.source.exec(`INSERT INTO parents VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
        await p.source.exec(
          `INSERT INTO children VALUES (10, 1, 'a'), (11, 1, 'b'), (12, 2, 'c'), (13, 3, 'd')`,
        );
        expect(cycle(job).loaded).toBe(7);
        const manifest = readdirSync(join(job.dir, 'outbox')).find((f) =>
          f.endsWith('.MANIFEST.json'),
        )!;
        const tables = JSON.parse(readFileSync(join(job.dir, 'outbox', manifest), 'utf8')).tables;
        expect(tables.map((t: { name: string }) => t.name)).toEqual(['parents', 'children']);

        await p.source.exec(`UPDATE children SET label = 'b2' WHERE id = 11`);
        await p.source.exec(`UPDATE children SET id = 14 WHERE id = 12`);
        await p.source.exec(`DELETE FROM children WHERE id = 13`);
        await p.source.exec(`DELETE FROM parents WHERE id = 3`);
        await p.source.exec(`INSERT INTO parents VALUES (4, 'four')`);
        cycle(job);

        for (const [table, cols] of [
          ['parents', `${txt(engine, 'id')}, name`],
          ['children', `${txt(engine, 'id')}, ${txt(engine, 'parent_id')}, label`],
        ]) {
          const sql = `SELECT ${cols} FROM ${table} ORDER BY ${table}.id`;
          expect(await p.target.rows(sql), table).toEqual(await p.source.rows(sql));
        }
        expect(
          await p.target.rows(`SELECT ${txt(engine, 'id')} FROM children ORDER BY children.id`),
        ).toEqual([['10'], ['11'], ['14']]);
        expect(cycle(job).extracted).toBe(0);

        run('deltasync', job, 'capture', '--remove');
        await expect(p.source.rows('SELECT * FROM deltasync_changelog')).rejects.toThrow();
        await p.source.exec(`INSERT INTO parents VALUES (5, 'five')`); // no trigger left to fail
      } finally {
        await p.source.close();
        await p.target.close();
        job.cleanup();
      }
    },
  );

  run_(
    'timestamp mode: rows sharing one timestamp are split by the batch limit and none is lost',
    async () => {
      const p = await pair(engine, 'ts');
      const job = writeJob(
        p.source,
        p.target,
        `capture: { timestampLagSeconds: 0 },
       delta: { maxRowsPerPart: 4, maxRowsPerDelta: 10 },
       tables: [{ name: 'events', key: ['id'], mode: 'timestamp', timestampColumn: 'changed' }]`,
      );
      try {
        await both(
          p,
          `CREATE TABLE events (id ${T.id} PRIMARY KEY, changed ${T.ts}, payload ${T.text})${T.suffix}`,
        );
        const same = engine === 'sqlite' ? '2026-01-01 10:00:00.000' : '2026-01-01 10:00:00';
        const later = engine === 'sqlite' ? '2026-01-02 08:00:00.000' : '2026-01-02 08:00:00';
        const rows = Array.from({ length: 25 }, (_, i) => `(${i + 1}, '${same}', 'same ${i + 1}')`);
        rows.push(...Array.from({ length: 5 }, (_, i) => `(${i + 100}, '${later}', 'later ${i}')`));
        await p.source.exec(`INSERT INTO events VALUES ${rows.join(', ')}`);

        const e = run('deltasync-extract', job);
        const summary = summaryOf(e.stdout)!;
        expect(summary.deltas).toBe(3);
        expect(summary.rows).toBe(30);
        const manifests = readdirSync(join(job.dir, 'outbox')).filter((f) =>
          f.endsWith('.MANIFEST.json'),
        );
        for (const m of manifests) {
          const parsed = JSON.parse(readFileSync(join(job.dir, 'outbox', m), 'utf8'));
          expect(parsed.tables[0].rows).toBeLessThanOrEqual(10);
        }
        run('deltasync-copy', job);
        run('deltasync-load', job);
        const sql = `SELECT ${txt(engine, 'id')}, payload FROM events ORDER BY events.id`;
        expect(await p.target.rows(sql)).toEqual(await p.source.rows(sql));

        await p.source.exec(
          `UPDATE events SET payload = 'edited', changed = '${later.replace('08:00', '09:00')}' WHERE id = 3`,
        );
        cycle(job);
        expect(await p.target.rows(sql)).toEqual(await p.source.rows(sql));
        expect(cycle(job).extracted).toBe(0);
      } finally {
        await p.source.close();
        await p.target.close();
        job.cleanup();
      }
    },
  );

  run_('snapshot mode: only inserts, updates and deletes travel', async () => {
    const p = await pair(engine, 'snap');
    const job = writeJob(
      p.source,
      p.target,
      `tables: [{ name: 'settings', key: ['k'], mode: 'snapshot' }]`,
    );
    try {
      const key = engine === 'mysql' ? 'varchar(50)' : T.text;
      await both(p, `CREATE TABLE settings (k ${key} PRIMARY KEY, v ${T.text})${T.suffix}`);
      await p.source.exec(`INSERT INTO settings VALUES ('a', '1'), ('b', '2'), ('c', '3')`);
      expect(cycle(job).loaded).toBe(3);
      await p.source.exec(`UPDATE settings SET v = '20' WHERE k = 'b'`);
      await p.source.exec(`DELETE FROM settings WHERE k = 'c'`);
      await p.source.exec(`INSERT INTO settings VALUES ('d', '4')`);
      expect(cycle(job).loaded).toBe(3); // 2 upserts + 1 delete
      const sql = 'SELECT k, v FROM settings ORDER BY k';
      expect(await p.target.rows(sql)).toEqual([
        ['a', '1'],
        ['b', '20'],
        ['d', '4'],
      ]);
      expect(cycle(job).extracted).toBe(0);
      const state = readdirSync(join(job.dir, 'state')).filter((f) => f.includes('.snapshot.'));
      expect(state).toHaveLength(1);
    } finally {
      await p.source.close();
      await p.target.close();
      job.cleanup();
    }
  });

  run_(
    'shaping: target name, rename, exclude, filter and computed columns; users’ column untouched',
    async () => {
      const p = await pair(engine, 'shape');
      const job = writeJob(
        p.source,
        p.target,
        `tables: [{
         name: 'people', key: ['id'], mode: 'logid', logIdColumn: 'log_id',
         target: 'persons',
         rename: { first: 'given_name' },
         exclude: ['secret', 'log_id'],
         filter: (row) => row.first !== 'skip',
         computed: { initial: { type: 'text', value: (row) => (row.first ? row.first.slice(0, 1) : null) } },
       }],
       // The hook inherits the environment: the test tells it where to write.
       afterLoad: { command: 'echo "$DELTASYNC_LOGID $DELTASYNC_ROWS" >> "$DELTASYNC_TEST_HOOK_DIR/hook.log"' }`,
      );
      try {
        await p.source.exec(
          `CREATE TABLE people (id ${T.id} PRIMARY KEY, first ${T.text}, secret ${T.text}, log_id ${T.id} NOT NULL)${T.suffix}`,
        );
        await p.target.exec(
          `CREATE TABLE persons (id ${T.id} PRIMARY KEY, given_name ${T.text}, initial ${T.text}, note ${T.text})${T.suffix}`,
        );
        await p.source.exec(
          `INSERT INTO people VALUES (1, 'Ada', 's1', 1), (2, 'skip', 's2', 2), (3, 'Grace', 's3', 3)`,
        );
        const env = { DELTASYNC_TEST_HOOK_DIR: job.dir };
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config], env);
          expect(r.code, r.stderr).toBe(0);
        }
        await p.target.exec(`UPDATE persons SET note = 'edited by a user' WHERE id = 1`);
        await p.source.exec(`UPDATE people SET first = 'Augusta', log_id = 4 WHERE id = 1`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config], env);
          expect(r.code, r.stderr).toBe(0);
        }
        expect(
          await p.target.rows(
            `SELECT ${txt(engine, 'id')}, given_name, initial, note FROM persons ORDER BY persons.id`,
          ),
        ).toEqual([
          ['1', 'Augusta', 'A', 'edited by a user'],
          ['3', 'Grace', 'G', null],
        ]);
        const hookLog = join(job.dir, 'hook.log');
        expect(existsSync(hookLog)).toBe(true);
        expect(readFileSync(hookLog, 'utf8')).toBe('3 2\n4 1\n');
      } finally {
        await p.source.close();
        await p.target.close();
        job.cleanup();
      }
    },
  );
});

describe.each(['pg', 'mysql'] as const)(
  '%s: the late commit (stable high-water mark)',
  (engine) => {
    it.skipIf(!dbs.available(engine))(
      'a transaction that took a lower logId and commits last loses no row',
      async () => {
        const p = await pair(engine, 'late');
        const auto = engine === 'pg' ? 'bigserial' : 'bigint AUTO_INCREMENT';
        const job = writeJob(
          p.source,
          p.target,
          `capture: { maxWaitSeconds: 1 },
         tables: [{ name: 'ledger', key: ['log_id'], mode: 'logid', logIdColumn: 'log_id' }]`,
        );
        const T = TYPES[engine];
        await p.source.exec(
          `CREATE TABLE ledger (log_id ${auto} PRIMARY KEY, note ${T.text})${T.suffix}`,
        );
        await p.target.exec(
          `CREATE TABLE ledger (log_id ${T.id} PRIMARY KEY, note ${T.text})${T.suffix}`,
        );
        await p.source.exec(`INSERT INTO ledger (note) VALUES ('first')`);
        const slow = await openSlowWriter(engine, p.source);
        try {
          await slow.exec('BEGIN');
          await slow.exec(`INSERT INTO ledger (note) VALUES ('slow')`); // takes logId 2, commits last
          await p.source.exec(`INSERT INTO ledger (note) VALUES ('fast')`); // logId 3, committed now
          const during = run('deltasync-extract', job);
          expect(during.stdout).toContain('transactions still running');
          await slow.exec('COMMIT');
          cycle(job);
          const sql = `SELECT ${txt(engine, 'log_id')}, note FROM ledger ORDER BY ledger.log_id`;
          expect(await p.target.rows(sql)).toEqual([
            ['1', 'first'],
            ['2', 'slow'],
            ['3', 'fast'],
          ]);
        } finally {
          await slow.close();
          await p.source.close();
          await p.target.close();
          job.cleanup();
        }
      },
    );
  },
);

describe.each(ENGINES)('%s: an empty logid table', (engine) => {
  it.skipIf(!dbs.available(engine))(
    'is caught up, not "held back": extract says nothing about running transactions, then ships the first row',
    async () => {
      const p = await pair(engine, 'empty');
      const T = TYPES[engine];
      const job = writeJob(
        p.source,
        p.target,
        `capture: { maxWaitSeconds: 1 },
         tables: [{ name: 'quiet', key: ['log_id'], mode: 'logid', logIdColumn: 'log_id' }]`,
      );
      try {
        await both(p, `CREATE TABLE quiet (log_id ${T.id} PRIMARY KEY, note ${T.text})${T.suffix}`);
        const idle = run('deltasync-extract', job);
        expect(idle.stdout + idle.stderr).not.toContain('held back');
        expect(summaryOf(idle.stdout)?.deltas).toBe(0);
        await p.source.exec(`INSERT INTO quiet VALUES (1, 'first')`);
        expect(cycle(job)).toEqual({ extracted: 1, loaded: 1 });
        expect(await p.target.rows(`SELECT ${txt(engine, 'log_id')}, note FROM quiet`)).toEqual([
          ['1', 'first'],
        ]);
      } finally {
        await p.source.close();
        await p.target.close();
        job.cleanup();
      }
    },
  );
});

describe.each(['pg', 'mysql'] as const)('%s: logid mode with nothing new', (engine) => {
  it.skipIf(!dbs.available(engine))(
    'ships nothing without waiting for, or blaming, a transaction open on another table',
    async () => {
      const p = await pair(engine, 'idle');
      const T = TYPES[engine];
      const job = writeJob(
        p.source,
        p.target,
        `capture: { maxWaitSeconds: 1 },
         tables: [{ name: 'ledger', key: ['log_id'], mode: 'logid', logIdColumn: 'log_id' }]`,
      );
      const other = await openSlowWriter(engine, p.source);
      try {
        await both(
          p,
          `CREATE TABLE ledger (log_id ${T.id} PRIMARY KEY, note ${T.text})${T.suffix}`,
        );
        await p.source.exec(`CREATE TABLE unrelated (id int)${T.suffix}`);
        await p.source.exec(`INSERT INTO ledger VALUES (1, 'first')`);
        expect(cycle(job)).toEqual({ extracted: 1, loaded: 1 });
        await other.exec('BEGIN');
        await other.exec('INSERT INTO unrelated VALUES (1)'); // open until the end of the test
        const idle = run('deltasync-extract', job);
        expect(idle.stdout + idle.stderr).not.toContain('held back');
        expect(summaryOf(idle.stdout)?.deltas).toBe(0);
        // A new row while it is still open: that one must wait for it (it may hold a lower logId).
        await p.source.exec(`INSERT INTO ledger VALUES (2, 'second')`);
        expect(run('deltasync-extract', job).stdout).toContain('held back');
        await other.exec('COMMIT');
        expect(cycle(job)).toEqual({ extracted: 1, loaded: 1 });
      } finally {
        await other.close();
        await p.source.close();
        await p.target.close();
        job.cleanup();
      }
    },
  );
});

async function openSlowWriter(
  engine: 'pg' | 'mysql',
  source: Db,
): Promise<{ exec(sql: string): Promise<void>; close(): Promise<void> }> {
  const url = source.config.connection as string;
  if (engine === 'pg') {
    const { default: pg } = await import('pg');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    return { exec: async (sql) => void (await c.query(sql)), close: () => c.end() };
  }
  const mysql = await import('mysql2/promise');
  const c = await mysql.createConnection(url);
  return { exec: async (sql) => void (await c.query(sql)), close: () => c.end() };
}
