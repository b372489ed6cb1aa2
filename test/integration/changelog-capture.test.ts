/**
 * Change capture (changelog mode), through the real bins. On a PostgreSQL source:
 * - the upgrade of an install from before exact capture (a change log without the txid stamp,
 *   a plain logId cursor): extract refuses (78) until `capture --apply` upgrades it in place,
 *   then carries on with nothing lost and nothing seeded again;
 * - a changelog table whose trigger is disabled or missing is refused (78), nothing written;
 * - rows written through inheritance children and partitions are captured; a child added after
 *   `capture --apply` is refused until capture runs again (issue 8 item 4); a job listing a
 *   parent and its inheritance child is refused (78) by capture and extract;
 * - delta.maxRowsPerDelta splits a backlog into bounded deltas while an older transaction is
 *   still open, and its row follows once it commits.
 * On SQLite: a missing trigger is refused (78).
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob, type Db, type JobFiles } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());
const it_ = it.skipIf(!dbs.available('pg'));

function run(bin: string, job: JobFiles, ...args: string[]) {
  const r = runBin(bin, [...args, '-c', job.config]);
  expect(r.code, `${bin} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

function cycle(job: JobFiles): void {
  run('deltasync-extract', job);
  run('deltasync-copy', job);
  run('deltasync-load', job);
}

async function expectSame(source: Db, replica: Db, sql: string): Promise<void> {
  expect(await replica.rows(sql), sql).toEqual(await source.rows(sql));
}

const statePath = (job: JobFiles) => join(job.dir, 'state', 'e2e.extract.state.json');
const outbox = (job: JobFiles) =>
  readdirSync(join(job.dir, 'outbox')).filter((f) => f.endsWith('.MANIFEST.json'));

describe('PostgreSQL change capture', () => {
  it_('upgrades an install from before exact capture in place; nothing lost', async () => {
    const source = await openDb(dbs, 'pg', 'ups');
    const replica = await openDb(dbs, 'pg', 'upr');
    for (const db of [source, replica])
      await db.exec('CREATE TABLE item (id int PRIMARY KEY, v text)');
    const job = writeJob(
      source,
      replica,
      `tables: [{ name: 'item', key: ['id'], mode: 'changelog' }]`,
    );
    try {
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`INSERT INTO item VALUES (1, 'one'), (2, 'two')`);
      cycle(job);
      // Make it look like an install of the previous version: no stamp, a plain logId cursor,
      // no seed marks.
      await source.exec('ALTER TABLE deltasync_changelog DROP COLUMN txid');
      const shipped = (
        await source.rows('SELECT max(log_id)::text FROM deltasync_changelog')
      )[0]![0];
      const state = JSON.parse(readFileSync(statePath(job), 'utf8'));
      state.cursors = { 'changelog:deltasync_changelog': shipped };
      writeFileSync(statePath(job), JSON.stringify(state));
      await source.exec(`INSERT INTO item VALUES (3, 'three')`); // logged without a stamp
      await source.exec(`UPDATE item SET v = 'uno' WHERE id = 1`);

      const before = outbox(job);
      const refused = runBin('deltasync-extract', ['-c', job.config]);
      expect(refused.code).toBe(78);
      expect(refused.stderr).toContain('run deltasync capture --apply');
      expect(outbox(job)).toEqual(before);

      run('deltasync', job, 'capture', '--apply');
      await source.exec(`INSERT INTO item VALUES (4, 'four')`); // stamped
      cycle(job);
      await expectSame(source, replica, 'SELECT id, v FROM item ORDER BY id');
      const manifest = JSON.parse(
        readFileSync(join(job.dir, 'outbox', outbox(job).at(-1)!), 'utf8'),
      );
      expect(manifest.tables[0].base).toBeUndefined(); // the upgrade seeds nothing again
      expect(manifest.tables[0].rows).toBe(3);
      expect(manifest.cursors['changelog:deltasync_changelog']).toMatch(/^pg:/);
      await source.exec(`DELETE FROM item WHERE id = 2`);
      cycle(job);
      await expectSame(source, replica, 'SELECT id, v FROM item ORDER BY id');
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });

  it_('refuses a changelog table whose trigger is disabled or missing', async () => {
    const source = await openDb(dbs, 'pg', 'trgs');
    const replica = await openDb(dbs, 'pg', 'trgr');
    for (const db of [source, replica])
      await db.exec('CREATE TABLE item (id int PRIMARY KEY, v text)');
    const job = writeJob(
      source,
      replica,
      `tables: [{ name: 'item', key: ['id'], mode: 'changelog' }]`,
    );
    try {
      const missingLog = runBin('deltasync-extract', ['-c', job.config]);
      expect(missingLog.code).toBe(78);
      expect(missingLog.stderr).toContain(
        `change log 'deltasync_changelog' does not exist: run deltasync capture --apply`,
      );
      run('deltasync', job, 'capture', '--apply');
      cycle(job);
      await source.exec('ALTER TABLE item DISABLE TRIGGER deltasync_changelog_item');
      const disabled = runBin('deltasync-extract', ['-c', job.config]);
      expect(disabled.code).toBe(78);
      expect(disabled.stderr).toContain(
        `table 'item': the change-capture trigger deltasync_changelog_item is disabled`,
      );
      expect(disabled.stderr).toContain('run deltasync capture --apply');
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`INSERT INTO item VALUES (1, 'one')`);
      cycle(job);
      await expectSame(source, replica, 'SELECT id, v FROM item ORDER BY id');

      await source.exec('DROP TRIGGER deltasync_changelog_item ON item');
      const missing = runBin('deltasync-extract', ['-c', job.config]);
      expect(missing.code).toBe(78);
      expect(missing.stderr).toContain('deltasync_changelog_item is missing');
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });

  it_('captures rows written through inheritance children and partitions', async () => {
    const source = await openDb(dbs, 'pg', 'parts');
    const replica = await openDb(dbs, 'pg', 'partr');
    await source.exec(`CREATE TABLE payment (payment_id int PRIMARY KEY, amount int, paid date)`);
    for (const month of ['01', '02']) {
      await source.exec(
        `CREATE TABLE payment_p2007_${month} (
           CHECK (paid >= DATE '2007-${month}-01' AND paid < DATE '2007-${month}-01' + 31)
         ) INHERITS (payment)`,
      );
    }
    await source.exec(
      `CREATE TABLE measurement (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`,
    );
    await source.exec(
      `CREATE TABLE m2024 PARTITION OF measurement FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`,
    );
    await source.exec(
      `CREATE TABLE m2025 PARTITION OF measurement FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`,
    );
    await replica.exec(`CREATE TABLE payment (payment_id int PRIMARY KEY, amount int, paid date)`);
    await replica.exec(`CREATE TABLE measurement (id int, at date, v int, PRIMARY KEY (id, at))`);
    const job = writeJob(
      source,
      replica,
      `tables: [
         { name: 'payment', key: ['payment_id'], mode: 'changelog' },
         { name: 'measurement', key: ['id', 'at'], mode: 'changelog' },
       ]`,
    );
    const payments = 'SELECT payment_id, amount, paid::text FROM payment ORDER BY payment_id';
    const measurements = 'SELECT id, at::text, v FROM measurement ORDER BY id, at';
    try {
      const printed = run('deltasync', job, 'capture', '--print').stdout;
      expect(printed).toContain('ON payment_p2007_01\n');
      expect(printed).toContain('ON payment_p2007_02\n');
      run('deltasync', job, 'capture', '--apply');

      await source.exec(`INSERT INTO payment VALUES (1, 10, '2006-12-31')`);
      await source.exec(
        `INSERT INTO payment_p2007_01 VALUES (2, 20, '2007-01-15'), (3, 30, '2007-01-20')`,
      );
      await source.exec(`INSERT INTO payment_p2007_02 VALUES (4, 40, '2007-02-03')`);
      await source.exec(`INSERT INTO measurement VALUES (1, '2024-05-01', 5)`); // routed
      await source.exec(`INSERT INTO m2025 VALUES (2, '2025-03-01', 6)`); // straight into a partition
      cycle(job);
      await expectSame(source, replica, payments);
      await expectSame(source, replica, measurements);

      await source.exec(`UPDATE payment_p2007_01 SET amount = 21 WHERE payment_id = 2`);
      await source.exec(`DELETE FROM payment_p2007_01 WHERE payment_id = 3`);
      await source.exec(`UPDATE m2024 SET v = 50 WHERE id = 1`);
      await source.exec(`DELETE FROM measurement WHERE id = 2`);
      cycle(job);
      await expectSame(source, replica, payments);
      await expectSame(source, replica, measurements);

      // A new partition gets PostgreSQL's clone of the trigger; a new inheritance child does not.
      await source.exec(
        `CREATE TABLE m2026 PARTITION OF measurement FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
      );
      await source.exec(`CREATE TABLE payment_p2007_03 () INHERITS (payment)`);
      const refused = runBin('deltasync-extract', ['-c', job.config]);
      expect(refused.code).toBe(78);
      expect(refused.stderr).toContain(`payment_p2007_03 (writes into 'payment')`);
      expect(refused.stderr).toContain('run deltasync capture --apply');
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`INSERT INTO payment_p2007_03 VALUES (5, 50, '2007-03-01')`);
      await source.exec(`INSERT INTO m2026 VALUES (3, '2026-02-01', 7)`);
      cycle(job);
      await expectSame(source, replica, payments);
      await expectSame(source, replica, measurements);
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });

  it_('refuses a job that lists an inheritance parent and its child (rows twice)', async () => {
    const source = await openDb(dbs, 'pg', 'overlaps');
    const replica = await openDb(dbs, 'pg', 'overlapr');
    await source.exec(`CREATE TABLE payment (payment_id int PRIMARY KEY, amount int)`);
    await source.exec(`CREATE TABLE payment_2007 () INHERITS (payment)`);
    await source.exec(`CREATE TABLE payment_2007_q1 () INHERITS (payment_2007)`);
    await source.exec(`INSERT INTO payment_2007_q1 VALUES (1, 10)`);
    const job = writeJob(
      source,
      replica,
      `tables: [
         { name: 'payment', key: ['payment_id'], mode: 'changelog' },
         { name: 'payment_2007_q1', key: ['payment_id'], mode: 'logid', logIdColumn: 'payment_id' },
       ]`,
    );
    const message =
      "tables 'payment' and 'payment_2007_q1' overlap: 'payment_2007_q1' inherits from 'payment'";
    try {
      const install = runBin('deltasync', ['capture', '--apply', '-c', job.config]);
      expect(install.code, install.stderr).toBe(78);
      expect(install.stderr).toContain(message);
      expect(await source.rows(`SELECT to_regclass('deltasync_changelog') IS NULL`)).toEqual([
        [true],
      ]);

      const extract = runBin('deltasync-extract', ['-c', job.config]);
      expect(extract.code, extract.stderr).toBe(78);
      expect(extract.stderr).toContain(message);
      expect(extract.stderr).toContain('list only one of them in tables');
      expect(outbox(job)).toEqual([]);

      // Taking triggers out is never refused: a job set up that way can still clean up.
      expect(runBin('deltasync', ['capture', '--remove', '--print', '-c', job.config]).code).toBe(
        0,
      );
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });

  it_('splits a backlog into bounded deltas while an older transaction is open', async () => {
    const source = await openDb(dbs, 'pg', 'splits');
    const replica = await openDb(dbs, 'pg', 'splitr');
    for (const db of [source, replica])
      await db.exec('CREATE TABLE item (id int PRIMARY KEY, v text)');
    const job = writeJob(
      source,
      replica,
      `delta: { maxRowsPerPart: 4, maxRowsPerDelta: 10 },
       tables: [{ name: 'item', key: ['id'], mode: 'changelog' }]`,
    );
    const { default: pg } = await import('pg');
    const held = new pg.Client({ connectionString: source.config.connection as string });
    await held.connect();
    try {
      run('deltasync', job, 'capture', '--apply');
      cycle(job);
      await held.query('BEGIN');
      await held.query(`INSERT INTO item VALUES (1000, 'held')`);
      for (let i = 1; i <= 25; i++) await source.exec(`INSERT INTO item VALUES (${i}, 'v${i}')`);
      const before = outbox(job).length;
      const e = run('deltasync-extract', job);
      const written = outbox(job).slice(before);
      expect(written).toHaveLength(3);
      const manifests = written.map((f) =>
        JSON.parse(readFileSync(join(job.dir, 'outbox', f), 'utf8')),
      );
      expect(manifests.map((m) => m.tables[0].rows)).toEqual([10, 10, 5]);
      // The first two stop inside one snapshot's window; the last one ends on that snapshot.
      expect(manifests[0].cursors['changelog:deltasync_changelog']).toMatch(/^pg:[^;]+;[^;]+;\d+$/);
      expect(manifests[2].cursors['changelog:deltasync_changelog']).toMatch(/^pg:[^;]+$/);
      expect(e.code).toBe(0);
      run('deltasync-copy', job);
      run('deltasync-load', job);
      await held.query('COMMIT');
      cycle(job);
      await expectSame(source, replica, 'SELECT id, v FROM item ORDER BY id');
      expect((await replica.rows('SELECT count(*)::int FROM item'))[0]).toEqual([26]);
    } finally {
      await held.end();
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });
});

describe('SQLite change capture', () => {
  it('refuses a changelog table whose trigger is missing', async () => {
    const source = await openDb(dbs, 'sqlite', 'sqtrg');
    const replica = await openDb(dbs, 'sqlite', 'sqtrgr');
    for (const db of [source, replica])
      await db.exec('CREATE TABLE item (id INTEGER PRIMARY KEY, v TEXT)');
    const job = writeJob(
      source,
      replica,
      `tables: [{ name: 'item', key: ['id'], mode: 'changelog' }]`,
    );
    try {
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`INSERT INTO item VALUES (1, 'one')`);
      cycle(job);
      await source.exec('DROP TRIGGER deltasync_changelog_item_upd');
      const refused = runBin('deltasync-extract', ['-c', job.config]);
      expect(refused.code).toBe(78);
      expect(refused.stderr).toContain(
        `table 'item': the change-capture trigger deltasync_changelog_item_upd is missing`,
      );
      expect(refused.stderr).toContain('run deltasync capture --apply');
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`UPDATE item SET v = 'uno' WHERE id = 1`);
      cycle(job);
      await expectSame(source, replica, 'SELECT id, v FROM item ORDER BY id');
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });
});
