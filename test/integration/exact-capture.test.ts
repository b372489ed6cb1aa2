/**
 * Exact capture on a PostgreSQL source (issue 8, findings 1 and 2), through the real bins, into
 * PostgreSQL, MariaDB and SQLite replicas that carry the source's foreign keys:
 *   1. a transaction newer than every completed one (so in no snapshot's xip list) that took a
 *      lower logId and commits after extract ran: its change reaches the replica in a later
 *      cycle, in changelog mode and in logid mode;
 *   2. a long transaction open while a short one adds an album and moves a track onto it: every
 *      delta is one consistent cut, so every load applies and no foreign key is ever broken.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import {
  openDb,
  servers,
  writeJob,
  type Db,
  type Engine,
  type JobFiles,
} from '../helpers/engines.js';
import { startStep } from '../helpers/invariants.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const REPLICAS: Engine[] = ['pg', 'mysql', 'sqlite'];

const TYPES: Record<Engine, { int: string; text: string; suffix: string }> = {
  pg: { int: 'int', text: 'text', suffix: '' },
  mysql: { int: 'int', text: 'varchar(200)', suffix: ' ENGINE=InnoDB' },
  sqlite: { int: 'INTEGER', text: 'TEXT', suffix: '' },
};

/** The music schema of the findings (Chinook's shape), with its foreign keys. */
function schema(engine: Engine, logId = false): string[] {
  const T = TYPES[engine];
  const log = logId
    ? `, log_id bigint NOT NULL${engine === 'pg' ? " DEFAULT nextval('lsn')" : ''}`
    : '';
  return [
    `CREATE TABLE genre (genre_id ${T.int} PRIMARY KEY, name ${T.text}${log})${T.suffix}`,
    `CREATE TABLE album (album_id ${T.int} PRIMARY KEY, title ${T.text}${log})${T.suffix}`,
    `CREATE TABLE track (track_id ${T.int} PRIMARY KEY,
       album_id ${T.int} NOT NULL REFERENCES album (album_id),
       genre_id ${T.int} REFERENCES genre (genre_id),
       name ${T.text}, unit_price ${T.int}${log})${T.suffix}`,
  ];
}

const SEED = [
  `INSERT INTO genre (genre_id, name) VALUES (1, 'Rock'), (11, 'Bossa Nova')`,
  `INSERT INTO album (album_id, title) VALUES (1, 'First'), (2, 'Second')`,
  `INSERT INTO track (track_id, album_id, genre_id, name, unit_price)
     VALUES (1, 1, 1, 'One', 99), (3503, 2, 11, 'Koyaanisqatsi', 99)`,
];

function tablesConfig(mode: 'changelog' | 'logid'): string {
  const extra = mode === 'logid' ? `, logIdColumn: 'log_id'` : '';
  const exclude = mode === 'logid' ? `, exclude: ['log_id']` : '';
  return `tableOrder: 'foreign-keys',
    capture: { maxWaitSeconds: 1 },
    tables: ['genre', 'album', 'track'].map((name) => ({
      name, key: [name + '_id'], mode: '${mode}'${extra}${exclude},
    }))`;
}

function run(bin: string, job: JobFiles, ...args: string[]) {
  const r = runBin(bin, [...args, '-c', job.config]);
  expect(r.code, `${bin} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

/** Copy and load; then the replica's foreign keys must hold (checked, whatever the engine enforces). */
async function copyAndLoad(job: JobFiles, replica: Db): Promise<void> {
  run('deltasync-copy', job);
  run('deltasync-load', job);
  const orphans = await replica.rows(
    `SELECT t.track_id FROM track t LEFT JOIN album a ON a.album_id = t.album_id
      WHERE a.album_id IS NULL`,
  );
  expect(orphans, 'tracks without their album on the replica').toEqual([]);
}

async function cycle(job: JobFiles, replica: Db): Promise<void> {
  run('deltasync-extract', job);
  await copyAndLoad(job, replica);
}

const CONTENT = [
  'SELECT genre_id, name FROM genre ORDER BY genre_id',
  'SELECT album_id, title FROM album ORDER BY album_id',
  'SELECT track_id, album_id, genre_id, name, unit_price FROM track ORDER BY track_id',
];

/** Source and replica rows, as text so that engines compare. */
async function expectEqual(source: Db, replica: Db): Promise<void> {
  for (const sql of CONTENT) {
    const text = (rows: unknown[][]) =>
      rows.map((r) => r.map((v) => (v === null ? null : String(v))));
    expect(text(await replica.rows(sql)), sql).toEqual(text(await source.rows(sql)));
  }
}

async function session(source: Db): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: source.config.connection as string });
  await c.connect();
  return c;
}

async function pidOf(c: pg.Client): Promise<number> {
  return (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
}

interface Setup {
  source: Db;
  replica: Db;
  job: JobFiles;
  a: pg.Client;
  b: pg.Client;
}

async function setUp(
  replicaEngine: Engine,
  label: string,
  mode: 'changelog' | 'logid',
): Promise<Setup> {
  const source = await openDb(dbs, 'pg', `${label}s`);
  const replica = await openDb(dbs, replicaEngine, `${label}r`);
  if (mode === 'logid') await source.exec('CREATE SEQUENCE lsn');
  for (const sql of schema('pg', mode === 'logid')) await source.exec(sql);
  for (const sql of schema(replicaEngine)) await replica.exec(sql);
  const job = writeJob(source, replica, tablesConfig(mode));
  // Rows written after capture is installed, so that every version ships them (seeding is
  // tested on its own).
  if (mode === 'changelog') run('deltasync', job, 'capture', '--apply');
  for (const sql of SEED) await source.exec(sql);
  return { source, replica, job, a: await session(source), b: await session(source) };
}

async function tearDown(s: Setup): Promise<void> {
  await s.a.end().catch(() => {});
  await s.b.end().catch(() => {});
  await s.source.close();
  await s.replica.close();
  s.job.cleanup();
}

describe.each(REPLICAS)('PostgreSQL source, %s replica', (replicaEngine) => {
  const it_ = it.skipIf(!dbs.available('pg') || !dbs.available(replicaEngine));

  it_(
    'changelog: a transaction newer than every completed one commits after extract, and still ships',
    async () => {
      const s = await setUp(replicaEngine, `f1c${replicaEngine}`, 'changelog');
      try {
        await cycle(s.job, s.replica);
        await expectEqual(s.source, s.replica);

        await s.a.query('BEGIN');
        await s.a.query('SELECT pg_current_xact_id()');
        await s.b.query('BEGIN');
        await s.b.query(`UPDATE genre SET name = name || ' (batch)' WHERE genre_id = 11`);
        await s.a.query('UPDATE track SET unit_price = unit_price + 1 WHERE track_id = 1');
        await s.a.query('COMMIT');
        // B must be running and newer than every completed transaction: listed in no snapshot's
        // xip. Other test files share the server, and a transaction of theirs that completes after
        // B took its xid puts B in the list; then B starts again with a newer xid.
        let listed = true;
        for (let attempt = 0; listed && attempt < 100; attempt++) {
          if (attempt > 0) {
            await s.b.query('ROLLBACK');
            await s.b.query('BEGIN');
            await s.b.query(`UPDATE genre SET name = name || ' (batch)' WHERE genre_id = 11`);
          }
          const bXid = (await s.b.query('SELECT pg_current_xact_id()::text AS x')).rows[0].x;
          const [[inXip]] = await s.source.rows(
            `SELECT '${bXid}'::xid8 = ANY (SELECT pg_snapshot_xip(pg_current_snapshot()))`,
          );
          listed = inXip === true;
        }
        expect(listed, 'B is in no snapshot xip list (the case the finding needs)').toBe(false);
        await cycle(s.job, s.replica); // ships A's change; B's is not committed
        expect(await s.replica.rows('SELECT unit_price FROM track WHERE track_id = 1')).toEqual([
          [100],
        ]);
        await s.b.query('COMMIT');
        await cycle(s.job, s.replica);
        await cycle(s.job, s.replica);
        await expectEqual(s.source, s.replica);
        expect(await s.replica.rows('SELECT name FROM genre WHERE genre_id = 11')).toEqual([
          ['Bossa Nova (batch)'],
        ]);
      } finally {
        await tearDown(s);
      }
    },
  );

  it_('logid: a lower logId committed after a higher one is held back, never skipped', async () => {
    const s = await setUp(replicaEngine, `f1l${replicaEngine}`, 'logid');
    try {
      await cycle(s.job, s.replica);
      await expectEqual(s.source, s.replica);

      await s.a.query('BEGIN');
      await s.a.query('SELECT pg_current_xact_id()');
      await s.b.query('BEGIN');
      await s.b.query(
        `UPDATE genre SET name = name || ' (batch)', log_id = nextval('lsn') WHERE genre_id = 11`,
      );
      await s.a.query(
        `UPDATE track SET unit_price = unit_price + 1, log_id = nextval('lsn') WHERE track_id = 1`,
      );
      await s.a.query('COMMIT');
      const held = run('deltasync-extract', s.job);
      expect(held.stdout).toContain('logid tables held back');
      expect(held.stdout).toContain(`session pid ${await pidOf(s.b)}`);
      await copyAndLoad(s.job, s.replica);
      await s.b.query('COMMIT');
      await cycle(s.job, s.replica);
      await cycle(s.job, s.replica);
      await expectEqual(s.source, s.replica);
      expect(await s.replica.rows('SELECT name FROM genre WHERE genre_id = 11')).toEqual([
        ['Bossa Nova (batch)'],
      ]);
    } finally {
      await tearDown(s);
    }
  });

  it_(
    'changelog: a long transaction open while a new album and its track commit; every load keeps the foreign keys',
    async () => {
      const s = await setUp(replicaEngine, `f2${replicaEngine}`, 'changelog');
      try {
        await cycle(s.job, s.replica);

        // The long transaction has an xid, and one completes after it: it is in every snapshot's
        // xip, so an extract that waits for running transactions waits for it.
        await s.a.query('BEGIN');
        await s.a.query('SELECT pg_current_xact_id()');
        await s.source.exec(
          `UPDATE track SET name = 'Koyaanisqatsi (remaster)' WHERE track_id = 3503`,
        );
        let exited = false;
        const extracting = startStep('extract', s.job.config, {}, () => {});
        void extracting.then(() => (exited = true));
        // Once extract is done or waiting, a short transaction adds the album and moves the track.
        await until(async () => {
          const waiting = await s.source.rows(
            `SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                AND pid <> pg_backend_pid() AND pid <> ${await pidOf(s.a)}
                AND (query LIKE '%txid_status%' OR query LIKE '%pg_locks%')`,
          );
          return waiting.length > 0 || exited;
        });
        await s.b.query('BEGIN');
        await s.b.query(`INSERT INTO album (album_id, title) VALUES (1001, 'Powaqqatsi')`);
        await s.b.query('UPDATE track SET album_id = 1001 WHERE track_id = 3503');
        await s.b.query('COMMIT');
        await s.a.query('COMMIT');
        const extracted = await extracting;
        expect(extracted.code, extracted.stderr).toBe(0);
        await copyAndLoad(s.job, s.replica);
        await cycle(s.job, s.replica);
        await cycle(s.job, s.replica);
        await expectEqual(s.source, s.replica);
      } finally {
        await tearDown(s);
      }
    },
  );
});

/** Polls a condition until it holds (the test's own timeout bounds it). */
async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((r) => setTimeout(r, 50));
}
