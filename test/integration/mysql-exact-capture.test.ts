/**
 * Exact capture from a MariaDB source (issue 8), end to end through the real bins, into
 * PostgreSQL, MariaDB and SQLite replicas:
 *   - finding 1: a transaction that took a lower change-log id commits after extract ran; its
 *     change arrives in a later delta, and it holds nothing else back meanwhile (also without the
 *     PROCESS privilege);
 *   - finding 2: a delta is one consistent cut: a child is never shipped without its new parent,
 *     whatever commits while extract runs;
 *   - issue 9 item 7: a `changelog` table whose triggers are missing is refused (78).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { afterAll, describe, expect, it } from 'vitest';
import { logLines, runBin } from '../helpers/cli.js';
import {
  openDb,
  servers,
  writeJob,
  type Db,
  type Engine,
  type JobFiles,
} from '../helpers/engines.js';
import { startStep, type StepRun } from '../helpers/invariants.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const REPLICAS: Engine[] = ['pg', 'mysql', 'sqlite'];

const DDL: Record<Engine, { int: string; text: string; suffix: string }> = {
  pg: { int: 'integer', text: 'varchar(200)', suffix: '' },
  mysql: { int: 'int', text: 'varchar(200)', suffix: ' ENGINE=InnoDB' },
  sqlite: { int: 'INTEGER', text: 'TEXT', suffix: '' },
};

/** A small Chinook: albums and genres, and tracks that reference both. */
function schema(engine: Engine): string[] {
  const { int, text, suffix } = DDL[engine];
  return [
    `CREATE TABLE album (album_id ${int} PRIMARY KEY, title ${text} NOT NULL)${suffix}`,
    `CREATE TABLE genre (genre_id ${int} PRIMARY KEY, name ${text} NOT NULL)${suffix}`,
    `CREATE TABLE track (track_id ${int} PRIMARY KEY,
       album_id ${int} NOT NULL REFERENCES album (album_id),
       genre_id ${int} NOT NULL REFERENCES genre (genre_id),
       name ${text} NOT NULL, price_cents ${int} NOT NULL,
       FOREIGN KEY (album_id) REFERENCES album (album_id),
       FOREIGN KEY (genre_id) REFERENCES genre (genre_id))${suffix}`,
  ];
}

const TABLES = `tableOrder: 'foreign-keys',
  tables: [
    { name: 'track', key: ['track_id'], mode: 'changelog' },
    { name: 'album', key: ['album_id'], mode: 'changelog' },
    { name: 'genre', key: ['genre_id'], mode: 'changelog' },
  ]`;

const SEED = [
  `INSERT INTO album VALUES (1, 'For Those About To Rock'), (2, 'Balls to the Wall')`,
  `INSERT INTO genre VALUES (1, 'Rock'), (11, 'Bossa Nova')`,
  `INSERT INTO track VALUES (1, 1, 1, 'For Those About To Rock', 99),
     (2, 2, 1, 'Balls to the Wall', 99), (3503, 1, 11, 'Koyaanisqatsi', 99)`,
];

const SELECTS: Record<string, string> = {
  album: 'SELECT album_id, title FROM album ORDER BY album_id',
  genre: 'SELECT genre_id, name FROM genre ORDER BY genre_id',
  track: 'SELECT track_id, album_id, genre_id, name, price_cents FROM track ORDER BY track_id',
};

/** Rows as text, so that engines compare alike. */
async function rowsOf(db: Db, table: string): Promise<string[][]> {
  return (await db.rows(SELECTS[table]!)).map((r) => r.map((v) => String(v)));
}

async function expectEqual(source: Db, target: Db, why: string): Promise<void> {
  for (const table of Object.keys(SELECTS)) {
    expect(await rowsOf(target, table), `${why}: ${table}`).toEqual(await rowsOf(source, table));
  }
}

/** Tracks on the replica whose album or genre the replica lacks. */
async function orphans(target: Db): Promise<unknown[][]> {
  return target.rows(
    `SELECT track_id FROM track WHERE album_id NOT IN (SELECT album_id FROM album)
       OR genre_id NOT IN (SELECT genre_id FROM genre)`,
  );
}

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

interface Setup {
  source: Db;
  target: Db;
  job: JobFiles;
  url: string;
  /** A connection of its own on the source, for transactions held open. */
  connect(): Promise<mysql.Connection>;
  close(): Promise<void>;
}

async function setup(replica: Engine, label: string, extra = ''): Promise<Setup> {
  const source = await openDb(dbs, 'mysql', `${label}s`);
  const target = await openDb(dbs, replica, `${label}t`);
  const url = String(source.config.connection);
  const job = writeJob(source, target, `${extra}${TABLES}`);
  for (const sql of schema('mysql')) await source.exec(sql);
  for (const sql of schema(replica)) await target.exec(sql);
  run('deltasync', job, 'capture', '--apply');
  for (const sql of SEED) await source.exec(sql);
  cycle(job);
  await expectEqual(source, target, 'seeded');
  const opened: mysql.Connection[] = [];
  return {
    source,
    target,
    job,
    url,
    async connect() {
      const c = await mysql.createConnection(url);
      opened.push(c);
      return c;
    },
    async close() {
      for (const c of opened) await c.end().catch(() => undefined);
      await source.close();
      await target.close();
      job.cleanup();
    },
  };
}

/** Whether the connection's transaction is open, as the server sees it. */
async function running(admin: Db, conn: mysql.Connection): Promise<boolean> {
  const [[me]] = (await conn.query('SELECT CONNECTION_ID() AS id')) as unknown as [
    { id: number }[],
  ];
  const rows = await admin.rows(
    `SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ${me!.id}`,
  );
  return rows.length === 1;
}

describe.skipIf(!dbs.available('mysql'))('exact capture from a MariaDB source', () => {
  describe.each(REPLICAS)('into %s', (replica) => {
    const run_ = it.skipIf(!dbs.available(replica));

    run_(
      'finding 1: a lower change-log id committed after extract ran arrives later, holding nothing back',
      async () => {
        const s = await setup(replica, 'lost', 'capture: { maxWaitSeconds: 1 }, ');
        try {
          const a = await s.connect();
          await a.query('START TRANSACTION');
          // A takes the lower change-log id and stays open ...
          await a.query(`UPDATE genre SET name = CONCAT(name, ' (batch)') WHERE genre_id = 11`);
          // ... while B takes a higher one and commits.
          await s.source.exec('UPDATE track SET price_cents = price_cents + 1 WHERE track_id = 1');
          cycle(s.job);
          // B is on the replica although A is still open; A's change is not.
          expect(await running(s.source, a)).toBe(true);
          expect((await rowsOf(s.target, 'track'))[0]).toEqual([
            '1',
            '1',
            '1',
            'For Those About To Rock',
            '100',
          ]);
          expect((await rowsOf(s.target, 'genre'))[1]).toEqual(['11', 'Bossa Nova']);

          await a.query('COMMIT');
          cycle(s.job);
          await expectEqual(s.source, s.target, 'after A committed');
          cycle(s.job);
          await expectEqual(s.source, s.target, 'a cycle later');
        } finally {
          await s.close();
        }
      },
    );

    run_('finding 2: a child is never shipped without its new parent', async () => {
      const s = await setup(replica, 'cut', 'capture: { maxWaitSeconds: 30 }, ');
      try {
        // The track changes once before the long transaction starts ...
        await s.source.exec(`UPDATE track SET name = 'Koyaanisqatsi (live)' WHERE track_id = 3503`);
        const long = await s.connect();
        await long.query('START TRANSACTION');
        await long.query(`UPDATE genre SET name = 'Bossa Nova!' WHERE genre_id = 11`);
        const short = await s.connect();
        const mine = new Set<number>();
        for (const c of [long, short]) {
          const [[me]] = (await c.query('SELECT CONNECTION_ID() AS id')) as unknown as [
            { id: number }[],
          ];
          mine.add(me!.id);
        }
        const database = new URL(s.url).pathname.slice(1);
        // ... extract starts; once it has a transaction open on the source (its mark is taken), a
        // short transaction adds an album and moves the track onto it, then the long one commits.
        let exited = false;
        const extracting: Promise<StepRun> = startStep('extract', s.job.config, {}, () => {});
        void extracting.then(() => (exited = true));
        for (;;) {
          const rows = await s.source.rows(
            `SELECT t.trx_mysql_thread_id FROM information_schema.INNODB_TRX t
               JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
               WHERE p.DB = '${database}'`,
          );
          if (exited || rows.some((r) => !mine.has(Number(r[0])))) break;
          // Slower than INNODB_TRX's 100 ms cache refill: faster reads would keep it stale for
          // extract's own reads too.
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        await short.query('START TRANSACTION');
        await short.query(`INSERT INTO album VALUES (1001, 'Live')`);
        await short.query('UPDATE track SET album_id = 1001 WHERE track_id = 3503');
        await short.query('COMMIT');
        await long.query('COMMIT');
        const extracted = await extracting;
        expect(extracted.code, extracted.stderr).toBe(0);

        run('deltasync-copy', s.job);
        const load = runBin('deltasync-load', ['-c', s.job.config]);
        expect(load.code, `load: ${load.stderr}`).toBe(0);
        expect(await orphans(s.target)).toEqual([]);
        cycle(s.job);
        expect(await orphans(s.target)).toEqual([]);
        await expectEqual(s.source, s.target, 'a cycle later');
      } finally {
        await s.close();
      }
    });
  });

  describe.each(REPLICAS)('seeding into %s', (replica) => {
    it.skipIf(!dbs.available(replica))(
      'finding 5: rows that exist before capture ship, and so does a table that joins later',
      async () => {
        const source = await openDb(dbs, 'mysql', 'seeds');
        const target = await openDb(dbs, replica, 'seedt');
        const job = writeJob(
          source,
          target,
          `tableOrder: 'foreign-keys', tables: [{ name: 'album', key: ['album_id'], mode: 'changelog' }]`,
        );
        try {
          for (const sql of schema('mysql')) await source.exec(sql);
          for (const sql of schema(replica)) await target.exec(sql);
          for (const sql of SEED) await source.exec(sql);
          run('deltasync', job, 'capture', '--apply');
          await source.exec(`INSERT INTO album VALUES (3, 'Restless and Wild')`);
          cycle(job);
          expect(await rowsOf(target, 'album')).toEqual(await rowsOf(source, 'album'));

          // genre and track join the job, with rows of their own already there.
          const text = readFileSync(job.config, 'utf8');
          writeFileSync(job.config, text.replace(/tables: \[.*\]/, TABLES));
          run('deltasync', job, 'capture', '--apply');
          await source.exec(`UPDATE album SET title = 'Restless & Wild' WHERE album_id = 3`);
          cycle(job);
          await expectEqual(source, target, 'after genre and track joined');
          await source.exec('UPDATE track SET price_cents = 89 WHERE track_id = 2');
          cycle(job);
          await expectEqual(source, target, 'a cycle later');
        } finally {
          await source.close();
          await target.close();
          job.cleanup();
        }
      },
    );
  });

  it('logid mode: a transaction that holds the tables back is named in the log, and its row arrives', async () => {
    const source = await openDb(dbs, 'mysql', 'heldbys');
    const target = await openDb(dbs, 'sqlite', 'heldbyt');
    const job = writeJob(
      source,
      target,
      `capture: { maxWaitSeconds: 1 },
       tables: [{ name: 'ledger', key: ['log_id'], mode: 'logid', logIdColumn: 'log_id' }]`,
    );
    const a = await mysql.createConnection(String(source.config.connection));
    try {
      await source.exec(
        'CREATE TABLE ledger (log_id BIGINT AUTO_INCREMENT PRIMARY KEY, memo VARCHAR(20)) ENGINE=InnoDB',
      );
      await target.exec('CREATE TABLE ledger (log_id INTEGER PRIMARY KEY, memo TEXT)');
      await source.exec(`INSERT INTO ledger (memo) VALUES ('first')`);
      cycle(job);
      await a.query('START TRANSACTION');
      await a.query(`INSERT INTO ledger (memo) VALUES ('slow')`);
      await source.exec(`INSERT INTO ledger (memo) VALUES ('quick')`);
      const [[me]] = (await a.query('SELECT CONNECTION_ID() AS id')) as unknown as [
        { id: number }[],
      ];
      const held = run('deltasync-extract', job);
      const warning = logLines(held.stdout).find((l) => l.heldBy !== undefined);
      expect(warning?.msg).toMatch(/transactions still running/);
      expect(String(warning?.heldBy)).toContain(`thread ${me!.id} `);
      await a.query('COMMIT');
      cycle(job);
      expect(await target.rows('SELECT memo FROM ledger ORDER BY log_id')).toEqual([
        ['first'],
        ['slow'],
        ['quick'],
      ]);
    } finally {
      await a.end();
      await source.close();
      await target.close();
      job.cleanup();
    }
  });

  it('a busy source: transfers commit and roll back in any order while extract runs; every load adds up', async () => {
    const source = await openDb(dbs, 'mysql', 'busys');
    const target = await openDb(dbs, 'sqlite', 'busyt');
    const job = writeJob(
      source,
      target,
      `tables: [
         { name: 'account', key: ['id'], mode: 'changelog' },
         { name: 'history', key: ['id'], mode: 'changelog' },
       ]`,
    );
    const ACCOUNTS = 20;
    const writers: mysql.Connection[] = [];
    let stop = false;
    let loops: Promise<void>[] = [];
    try {
      await source.exec(
        'CREATE TABLE account (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB',
      );
      await source.exec(
        'CREATE TABLE history (id INT AUTO_INCREMENT PRIMARY KEY, account_id INT NOT NULL, delta INT NOT NULL) ENGINE=InnoDB',
      );
      await target.exec('CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)');
      await target.exec(
        'CREATE TABLE history (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, delta INTEGER NOT NULL)',
      );
      run('deltasync', job, 'capture', '--apply');
      await source.exec(
        `INSERT INTO account VALUES ${Array.from({ length: ACCOUNTS }, (_, i) => `(${i + 1}, 0)`).join(', ')}`,
      );
      const url = String(source.config.connection);
      for (let i = 0; i < 4; i++) writers.push(await mysql.createConnection(url));
      const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      let committed = 0;
      let rolledBack = 0;
      // Each transfer keeps the balances' sum at 0 and logs both legs in history.
      const transfer = async (c: mysql.Connection, n: number) => {
        const a = 1 + (n % ACCOUNTS);
        const b = 1 + ((n * 7 + 3) % ACCOUNTS);
        if (a === b) return;
        const amount = 1 + (n % 50);
        await c.query('START TRANSACTION');
        for (const [id, d] of [
          [Math.min(a, b), a < b ? -amount : amount],
          [Math.max(a, b), a < b ? amount : -amount],
        ] as const) {
          await c.query('UPDATE account SET balance = balance + ? WHERE id = ?', [d, id]);
          await c.query('INSERT INTO history (account_id, delta) VALUES (?, ?)', [id, d]);
          await pause(n % 3 === 0 ? 40 : 2); // some transactions stay open across an extract
        }
        if (n % 10 === 9) {
          await c.query('ROLLBACK');
          rolledBack++;
        } else {
          await c.query('COMMIT');
          committed++;
        }
      };
      loops = writers.map(async (c, w) => {
        for (let n = w; !stop; n += writers.length) await transfer(c, n);
      });
      const sums = async () =>
        (
          await target.rows(
            'SELECT (SELECT COALESCE(SUM(balance), 0) FROM account), (SELECT COALESCE(SUM(delta), 0) FROM history), (SELECT COUNT(*) FROM account)',
          )
        )[0]!.map(Number);
      for (let i = 0; i < 12; i++) {
        const extracted = await startStep('extract', job.config, {}, () => {});
        expect(extracted.code, extracted.stderr).toBe(0);
        run('deltasync-copy', job);
        run('deltasync-load', job);
        // One consistent cut after every load: no transfer is half there.
        expect(await sums(), `load ${i + 1}`).toEqual([0, 0, ACCOUNTS]);
      }
      stop = true;
      await Promise.all(loops);
      expect(committed).toBeGreaterThan(10);
      expect(rolledBack).toBeGreaterThan(0);
      cycle(job);
      cycle(job);
      for (const sql of [
        'SELECT id, balance FROM account ORDER BY id',
        'SELECT id, account_id, delta FROM history ORDER BY id',
      ]) {
        const text = (rows: unknown[][]) => rows.map((r) => r.map(String));
        expect(text(await target.rows(sql)), sql).toEqual(text(await source.rows(sql)));
      }
    } finally {
      stop = true;
      await Promise.allSettled(loops); // a failed assertion must not leave writers mid-query
      for (const c of writers) await c.end().catch(() => undefined);
      await source.close();
      await target.close();
      job.cleanup();
    }
  });

  it('finding 1 without the PROCESS privilege: the late change still arrives', async () => {
    const s = await setup('sqlite', 'noproc', 'capture: { maxWaitSeconds: 1 }, ');
    const user = `ds_${randomBytes(4).toString('hex')}`;
    const database = new URL(s.url).pathname.slice(1);
    try {
      for (const host of ['%', 'localhost']) {
        await s.source.exec(`CREATE USER '${user}'@'${host}' IDENTIFIED BY 'pw'`);
        await s.source.exec(`GRANT SELECT ON \`${database}\`.* TO '${user}'@'${host}'`);
      }
      const limited = new URL(s.url);
      limited.username = user;
      limited.password = 'pw';
      const text = readFileSync(s.job.config, 'utf8');
      writeFileSync(
        s.job.config,
        text.replace(JSON.stringify(s.url), JSON.stringify(limited.toString())),
      );

      const a = await s.connect();
      await a.query('START TRANSACTION');
      await a.query(`UPDATE genre SET name = 'Bossa Nova (late)' WHERE genre_id = 11`);
      await s.source.exec('UPDATE track SET price_cents = 250 WHERE track_id = 2');
      cycle(s.job);
      expect((await rowsOf(s.target, 'track'))[1]![4]).toBe('250');
      await a.query('COMMIT');
      cycle(s.job);
      await expectEqual(s.source, s.target, 'after the late commit');
    } finally {
      for (const host of ['%', 'localhost']) {
        await s.source.exec(`DROP USER IF EXISTS '${user}'@'${host}'`);
      }
      await s.close();
    }
  });

  it('refuses (78) a changelog table whose triggers are missing', async () => {
    const s = await setup('sqlite', 'notrig');
    try {
      await s.source.exec('DROP TRIGGER deltasync_changelog_album_upd');
      await s.source.exec(`UPDATE album SET title = 'changed' WHERE album_id = 2`);
      const r = runBin('deltasync-extract', ['-c', s.job.config]);
      expect(r.code, r.stderr).toBe(78);
      expect(r.stderr).toMatch(/album/);
      expect(r.stderr).toContain('run deltasync capture --apply');
      run('deltasync', s.job, 'capture', '--apply');
      cycle(s.job);
      // Writes made while the trigger was missing are not in the change log: the row is shipped
      // once it changes again (or by a resync).
      await s.source.exec(`UPDATE album SET title = 'changed again' WHERE album_id = 2`);
      cycle(s.job);
      await expectEqual(s.source, s.target, 'after capture --apply');
    } finally {
      await s.close();
    }
  });
});
