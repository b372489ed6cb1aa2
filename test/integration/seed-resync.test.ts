/**
 * Seeding and `deltasync resync` (issue 8 item 5), through the real bins:
 * - a changelog table joins a job with rows already in it (first run, and added to a running
 *   job later): its first delta is a base, its later changes follow, nothing missed or doubled;
 * - `resync --table NAME` writes the next delta of the chain with that table as a base, the
 *   others as usual; with no --table every table is a base and the manifest says fullBase;
 *   an unknown table is refused (78);
 * - a 1,000,000-row PostgreSQL table seeded and resynced end to end into a PostgreSQL replica,
 *   with memory flat (the summary's maxRssMb).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin, summaryOf } from '../helpers/cli.js';
import { manifestsIn } from '../helpers/invariants.js';
import { openDb, servers, writeJob, type Db, type JobFiles } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

function run(bin: string, job: JobFiles, ...args: string[]) {
  const r = runBin(bin, [...args, '-c', job.config]);
  expect(r.code, `${bin} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

function cycle(job: JobFiles): { extract: Record<string, unknown>; load: Record<string, unknown> } {
  const e = run('deltasync-extract', job);
  run('deltasync-copy', job);
  const l = run('deltasync-load', job);
  return { extract: summaryOf(e.stdout) ?? {}, load: summaryOf(l.stdout) ?? {} };
}

interface ManifestJson {
  fullBase?: boolean;
  tables: {
    name: string;
    rows: number;
    base?: boolean;
    deletes?: { rows: number };
    columnsChanged?: { added: string[]; dropped: string[] };
  }[];
}

/** The newest manifest in the outbox. */
function lastManifest(job: JobFiles): ManifestJson {
  const all = manifestsIn(join(job.dir, 'outbox'));
  return JSON.parse(
    readFileSync(join(job.dir, 'outbox', all.at(-1)!.file), 'utf8'),
  ) as ManifestJson;
}

const byName = (m: ManifestJson, name: string) => m.tables.find((t) => t.name === name)!;

async function expectSame(source: Db, replica: Db, sql: string): Promise<void> {
  const text = (rows: unknown[][]) =>
    rows.map((r) => r.map((v) => (v === null ? null : String(v))));
  expect(text(await replica.rows(sql)), sql).toEqual(text(await source.rows(sql)));
}

describe('seeding and resync on SQLite', () => {
  it('a table with rows joins the job: seeded whole once, then only its changes', async () => {
    const source = await openDb(dbs, 'sqlite', 'seeds');
    const replica = await openDb(dbs, 'sqlite', 'seedr');
    const ddl = [
      'CREATE TABLE actor (actor_id INTEGER PRIMARY KEY, name TEXT)',
      'CREATE TABLE film (film_id INTEGER PRIMARY KEY, title TEXT)',
    ];
    for (const sql of ddl) {
      await source.exec(sql);
      await replica.exec(sql);
    }
    const actors = Array.from({ length: 200 }, (_, i) => `(${i + 1}, 'actor ${i + 1}')`);
    await source.exec(`INSERT INTO actor VALUES ${actors.join(', ')}`);
    const films = Array.from({ length: 25 }, (_, i) => `(${i + 1}, 'film ${i + 1}')`);
    await source.exec(`INSERT INTO film VALUES ${films.join(', ')}`);
    const job = writeJob(
      source,
      replica,
      `tables: [{ name: 'actor', key: ['actor_id'], mode: 'changelog' }]`,
    );
    try {
      run('deltasync', job, 'capture', '--apply');
      expect(cycle(job).load.rows).toBe(200);
      const first = lastManifest(job);
      expect(byName(first, 'actor')).toMatchObject({ rows: 200, base: true });
      expect(first.fullBase).toBe(true);
      await expectSame(source, replica, 'SELECT actor_id, name FROM actor ORDER BY actor_id');

      await source.exec(`UPDATE actor SET name = 'renamed' WHERE actor_id = 7`);
      expect(cycle(job).load.rows).toBe(1);
      expect(byName(lastManifest(job), 'actor').base).toBeUndefined();

      // film joins the running job: capture for it, then its first delta is a base.
      writeFileSync(
        job.config,
        readFileSync(job.config, 'utf8').replace(
          `tables: [{ name: 'actor', key: ['actor_id'], mode: 'changelog' }]`,
          `tables: [{ name: 'actor', key: ['actor_id'], mode: 'changelog' },
                    { name: 'film', key: ['film_id'], mode: 'changelog' }]`,
        ),
      );
      run('deltasync', job, 'capture', '--apply');
      await source.exec(`UPDATE film SET title = 'edited' WHERE film_id = 3`);
      await source.exec(`UPDATE actor SET name = 'again' WHERE actor_id = 8`);
      expect(cycle(job).load.rows).toBe(26);
      const joined = lastManifest(job);
      expect(byName(joined, 'film')).toMatchObject({ rows: 25, base: true });
      expect(byName(joined, 'actor')).toMatchObject({ rows: 1 });
      expect(byName(joined, 'actor').base).toBeUndefined();
      expect(joined.fullBase).toBeUndefined();
      await expectSame(source, replica, 'SELECT film_id, title FROM film ORDER BY film_id');
      await expectSame(source, replica, 'SELECT actor_id, name FROM actor ORDER BY actor_id');
      expect(cycle(job).extract.deltas).toBe(0);
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });

  it('resync writes the named tables whole in the next delta; all of them without --table', async () => {
    const source = await openDb(dbs, 'sqlite', 'resyncs');
    const replica = await openDb(dbs, 'sqlite', 'resyncr');
    const ddl = [
      'CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, log_id INTEGER NOT NULL)',
      'CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)',
    ];
    for (const sql of ddl) {
      await source.exec(sql);
      await replica.exec(sql);
    }
    await source.exec(`INSERT INTO a VALUES (1, 'one', 1), (2, 'two', 2)`);
    await source.exec(`INSERT INTO b VALUES (1, 'x'), (2, 'y')`);
    const job = writeJob(
      source,
      replica,
      `tables: [
         { name: 'a', key: ['id'], mode: 'logid', logIdColumn: 'log_id' },
         { name: 'b', key: ['id'], mode: 'snapshot' },
       ]`,
    );
    try {
      cycle(job);
      // The replica drifts: a row the source never had.
      await replica.exec(`INSERT INTO a VALUES (99, 'stray', 99)`);
      await source.exec(`UPDATE b SET v = 'y2' WHERE id = 2`);

      const refused = runBin('deltasync', ['resync', '--table', 'nope', '-c', job.config]);
      expect(refused.code).toBe(78);
      expect(refused.stderr).toContain(`'nope' is not a table of job`);

      const r = run('deltasync', job, 'resync', '--table', 'a');
      expect(summaryOf(r.stdout)?.deltas).toBe(1);
      const m = lastManifest(job);
      expect(byName(m, 'a')).toMatchObject({ rows: 2, base: true });
      expect(byName(m, 'b')).toMatchObject({ rows: 1 }); // b's change rides along
      expect(byName(m, 'b').base).toBeUndefined();
      expect(m.fullBase).toBeUndefined();

      run('deltasync', job, 'resync');
      const all = lastManifest(job);
      expect(all.fullBase).toBe(true);
      expect(all.tables.map((t) => [t.name, t.rows, t.base])).toEqual([
        ['a', 2, true],
        ['b', 2, true],
      ]);
      expect(cycle(job).extract.deltas).toBe(0);
      // Load replaces the replica's content with a base: the stray row goes.
      run('deltasync-copy', job);
      run('deltasync-load', job);
      await expectSame(source, replica, 'SELECT id, v FROM a ORDER BY id');
      await expectSame(source, replica, 'SELECT id, v FROM b ORDER BY id');
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });
});

describe('source columns change', () => {
  it('is logged once, noted in the manifest, and the table goes out whole', async () => {
    const source = await openDb(dbs, 'sqlite', 'colss');
    const replica = await openDb(dbs, 'sqlite', 'colsr');
    await source.exec('CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, log_id INTEGER NOT NULL)');
    await source.exec(`INSERT INTO a VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3)`);
    const job = writeJob(
      source,
      replica,
      `tables: [{ name: 'a', key: ['id'], mode: 'logid', logIdColumn: 'log_id' }]`,
    );
    try {
      run('deltasync-extract', job);
      await source.exec(`UPDATE a SET v = 'uno', log_id = 4 WHERE id = 1`);
      run('deltasync-extract', job);
      expect(lastManifest(job).tables[0]).toMatchObject({ rows: 1 });
      expect(lastManifest(job).tables[0]).not.toHaveProperty('columnsChanged');

      await source.exec(`ALTER TABLE a ADD COLUMN extra TEXT DEFAULT 'x'`);
      await source.exec(`ALTER TABLE a RENAME COLUMN v TO label`);
      const changed = run('deltasync-extract', job);
      const said = changed.stdout.split('\n').filter((l) => l.includes('source columns changed'));
      expect(said).toHaveLength(1);
      const m = lastManifest(job);
      expect(m.tables[0]).toMatchObject({
        rows: 3,
        base: true,
        columnsChanged: { added: ['label', 'extra'], dropped: ['v'] },
      });
      const again = run('deltasync-extract', job);
      expect(again.stdout).not.toContain('source columns changed');
      expect(summaryOf(again.stdout)?.deltas).toBe(0);
    } finally {
      await source.close();
      await replica.close();
      job.cleanup();
    }
  });
});

describe('1,000,000 rows', () => {
  it.skipIf(!dbs.available('pg'))(
    'a PostgreSQL table is seeded and resynced end to end with memory flat',
    async () => {
      const source = await openDb(dbs, 'pg', 'bigs');
      const replica = await openDb(dbs, 'pg', 'bigr');
      const ddl = 'CREATE TABLE big (id int PRIMARY KEY, n bigint, payload text)';
      await source.exec(ddl);
      await replica.exec(ddl);
      await source.exec(
        `INSERT INTO big SELECT g, g * 7, md5(g::text) FROM generate_series(1, 1000000) g`,
      );
      const job = writeJob(
        source,
        replica,
        `delta: { maxRowsPerPart: 250000, maxRowsPerDelta: 100000 },
         tables: [{ name: 'big', key: ['id'], mode: 'changelog' }]`,
      );
      const sums = 'SELECT count(*), sum(id), sum(n), sum(length(payload)) FROM big';
      try {
        run('deltasync', job, 'capture', '--apply');
        const seeded = cycle(job);
        // The row limit splits backlogs of changes, never a base: one delta, one snapshot.
        expect(seeded.extract.deltas).toBe(1);
        expect(seeded.extract.rows).toBe(1000000);
        expect(Number(seeded.extract.maxRssMb)).toBeLessThan(200);
        const m = lastManifest(job);
        expect(m.fullBase).toBe(true);
        expect(byName(m, 'big')).toMatchObject({ rows: 1000000, base: true });
        await expectSame(source, replica, sums);

        await source.exec(`UPDATE big SET payload = 'changed' WHERE id % 100000 = 0`);
        await source.exec(`DELETE FROM big WHERE id = 5`);
        expect(cycle(job).load.rows).toBe(11);
        await expectSame(source, replica, sums);

        await replica.exec(`INSERT INTO big VALUES (2000001, 0, 'stray')`);
        const r = run('deltasync', job, 'resync', '--table', 'big');
        expect(Number(summaryOf(r.stdout)?.maxRssMb)).toBeLessThan(200);
        expect(byName(lastManifest(job), 'big')).toMatchObject({ rows: 999999, base: true });
        run('deltasync-copy', job);
        run('deltasync-load', job);
        await expectSame(source, replica, sums);
      } finally {
        await source.close();
        await replica.close();
        job.cleanup();
      }
    },
    900_000,
  );
});
