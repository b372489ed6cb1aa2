/**
 * lockTimeoutSeconds: a load (or an extract) that finds a table locked by another session waits
 * at most that long, then exits 69 naming the table and the blocking session, with nothing
 * applied; once the blocker is gone the next run carries on. Real blocking sessions on PostgreSQL
 * and MariaDB; the assertions are on exit codes, messages and rows, never on elapsed time.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob, type Db, type Engine } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const DDL: Record<'pg' | 'mysql', string> = {
  pg: 'CREATE TABLE items (id bigint PRIMARY KEY, name text, log_id bigint NOT NULL)',
  mysql:
    'CREATE TABLE items (id bigint PRIMARY KEY, name varchar(50), log_id bigint NOT NULL) ENGINE=InnoDB',
};

/** A second session on `db` that the test holds open with a lock. */
async function blocker(db: Db): Promise<{
  exec(sql: string): Promise<void>;
  begin(sql: string): Promise<void>;
  end(): Promise<void>;
}> {
  const same = await reopen(db);
  return {
    exec: (sql) => same.exec(sql),
    async begin(sql) {
      await same.exec(db.engine === 'pg' ? 'BEGIN' : 'START TRANSACTION');
      await same.exec(sql);
    },
    async end() {
      await same.exec('ROLLBACK');
      await same.close();
    },
  };
}

/** Another connection to the same database as `db`. */
async function reopen(db: Db): Promise<Db> {
  const url = db.config.connection as string;
  if (db.engine === 'pg') {
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: url, application_name: 'nightly-report' });
    await client.connect();
    return {
      ...db,
      exec: async (sql) => void (await client.query(sql)),
      rows: async (sql) =>
        (await client.query({ text: sql, rowMode: 'array' })).rows as unknown[][],
      close: () => client.end(),
    };
  }
  const mysql = (await import('mysql2/promise')).default;
  const conn = await mysql.createConnection({ uri: url });
  return {
    ...db,
    exec: async (sql) => void (await conn.query(sql)),
    rows: async (sql) => (await conn.query({ sql, rowsAsArray: true }))[0] as unknown[][],
    close: () => conn.end(),
  };
}

describe.each(['pg', 'mysql'] as const)('%s replica', (engine: Engine & ('pg' | 'mysql')) => {
  it.skipIf(!dbs.available(engine))(
    'load gives up on a locked replica row with 69, names the table and the blocker, applies nothing',
    async () => {
      const source = await openDb(dbs, engine, 'lksrc');
      const target = await openDb(dbs, engine, 'lkdst');
      const job = writeJob(
        source,
        target,
        `lockTimeoutSeconds: 1, tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      const run = (bin: string) => runBin(bin, ['-c', job.config]);
      try {
        await source.exec(DDL[engine]);
        await target.exec(DDL[engine]);
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2)`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          expect(run(bin).code).toBe(0);
        }
        await source.exec(`UPDATE items SET name = 'uno', log_id = 3 WHERE id = 1`);
        expect(run('deltasync-extract').code).toBe(0);
        expect(run('deltasync-copy').code).toBe(0);

        // A report holds row 1 of the replica in an open transaction.
        const report = await blocker(target);
        await report.begin(`UPDATE items SET name = 'held' WHERE id = 1`);
        const blocked = run('deltasync-load');
        expect(blocked.code, blocked.stderr).toBe(69);
        expect(blocked.stderr).toContain("lock on table 'items'");
        expect(blocked.stderr).toContain('lockTimeoutSeconds');
        expect(blocked.stderr).toMatch(
          engine === 'pg'
            ? /blocked by session pid \d+ \(user \w+, application 'nightly-report'/
            : /blocked by connection id \d+ \(user root@[\w.]+, .*transaction started/,
        );
        expect(blocked.stderr).not.toContain('internal error');
        const applied = await target.rows(`SELECT log_id FROM deltasync_applied`);
        await report.end();
        // Nothing of the blocked delta was applied: the replica still has the old name.
        expect(await target.rows('SELECT name FROM items WHERE id = 1')).toEqual([['one']]);
        expect(applied.map((r) => String(r[0]))).toEqual(['2']);

        expect(run('deltasync-load').code).toBe(0);
        expect(await target.rows('SELECT name FROM items WHERE id = 1')).toEqual([['uno']]);
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );

  it.skipIf(!dbs.available(engine))(
    'a table locked by another transaction: load exits 69 naming the table and the session holding it',
    async () => {
      const source = await openDb(dbs, engine, 'lktsrc');
      const target = await openDb(dbs, engine, 'lktdst');
      const job = writeJob(
        source,
        target,
        `lockTimeoutSeconds: 1, tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      const run = (bin: string) => runBin(bin, ['-c', job.config]);
      try {
        await source.exec(DDL[engine]);
        await target.exec(DDL[engine]);
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1)`);
        expect(run('deltasync-extract').code).toBe(0);
        expect(run('deltasync-copy').code).toBe(0);
        const dba = await blocker(target);
        // PostgreSQL: an explicit table lock; MariaDB: a metadata lock held by an open
        // transaction that is altering nothing yet but has the table locked for writing.
        await dba.begin(
          engine === 'pg'
            ? 'LOCK TABLE items IN ACCESS EXCLUSIVE MODE'
            : 'SELECT * FROM items FOR UPDATE',
        );
        if (engine === 'mysql') await dba.exec(`INSERT INTO items VALUES (1, 'held', 9)`);
        const blocked = run('deltasync-load');
        await dba.end();
        expect(blocked.code, blocked.stderr).toBe(69);
        expect(blocked.stderr).toMatch(/table 'items'/);
        expect(blocked.stderr).toMatch(/blocked by (session pid|connection id) \d+/);
        const loaded = run('deltasync-load');
        expect(loaded.code, loaded.stderr).toBe(0);
        expect((await target.rows('SELECT id FROM items')).length).toBe(1);
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});

describe('pg source', () => {
  it.skipIf(!dbs.available('pg'))(
    'extract gives up on a source table locked by an ALTER-like lock with 69 and writes no delta',
    async () => {
      const source = await openDb(dbs, 'pg', 'lkxsrc');
      const target = await openDb(dbs, 'pg', 'lkxdst');
      const job = writeJob(
        source,
        target,
        `lockTimeoutSeconds: 1, tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      try {
        await source.exec(DDL.pg);
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1)`);
        const dba = await blocker(source);
        await dba.begin('LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
        const blocked = runBin('deltasync-extract', ['-c', job.config]);
        await dba.end();
        expect(blocked.code, blocked.stderr).toBe(69);
        expect(blocked.stderr).toMatch(/table 'items'/);
        expect(blocked.stderr).toMatch(/blocked by session pid \d+ .*application 'nightly-report'/);
        const { readdirSync, existsSync } = await import('node:fs');
        const outbox = `${job.dir}/outbox`;
        expect(existsSync(outbox) ? readdirSync(outbox) : []).toEqual([]);
        expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
        expect(readdirSync(outbox).some((f) => f.endsWith('MANIFEST.json'))).toBe(true);
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});

describe('sqlite replica', () => {
  it('a replica file another process keeps write-locked: load exits 69, nothing applied', async () => {
    const source = await openDb(dbs, 'sqlite', 'lkssrc');
    const target = await openDb(dbs, 'sqlite', 'lksdst');
    const job = writeJob(
      source,
      target,
      `lockTimeoutSeconds: 1, tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
    );
    const ddl = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, log_id INTEGER NOT NULL)';
    try {
      await source.exec(ddl);
      await target.exec(ddl);
      await source.exec(`INSERT INTO items VALUES (1, 'one', 1)`);
      expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
      expect(runBin('deltasync-copy', ['-c', job.config]).code).toBe(0);
      await target.exec('BEGIN EXCLUSIVE');
      const blocked = runBin('deltasync-load', ['-c', job.config]);
      await target.exec('ROLLBACK');
      expect(blocked.code, blocked.stderr).toBe(69);
      expect(blocked.stderr).toContain('kept the database file locked for lockTimeoutSeconds');
      expect(await target.rows('SELECT count(*) FROM items')).toEqual([[0]]);
      const loaded = runBin('deltasync-load', ['-c', job.config]);
      expect(loaded.code, loaded.stderr).toBe(0);
      expect(await target.rows('SELECT count(*) FROM items')).toEqual([[1]]);
    } finally {
      await source.close();
      await target.close();
      job.cleanup();
    }
  });
});

describe('mysql source', () => {
  it.skipIf(!dbs.available('mysql'))(
    'extract gives up behind an ALTER waiting for its metadata lock with 69 and writes no delta',
    async () => {
      const source = await openDb(dbs, 'mysql', 'lkmsrc');
      const target = await openDb(dbs, 'mysql', 'lkmdst');
      const job = writeJob(
        source,
        target,
        `lockTimeoutSeconds: 1, tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`,
      );
      const reader = await reopen(source);
      const alterer = await reopen(source);
      try {
        await source.exec(DDL.mysql);
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1)`);
        // A long report keeps a transaction open on the table; an ALTER queues behind it for
        // its exclusive metadata lock, and every new reader of the table queues behind the ALTER.
        await reader.exec('START TRANSACTION');
        await reader.exec('SELECT * FROM items');
        const altered = alterer.exec('ALTER TABLE items ADD COLUMN note varchar(10)');
        for (let tries = 0; ; tries++) {
          if (tries > 600) throw new Error('the ALTER never queued for its metadata lock');
          const waiting = await source.rows(
            `SELECT COUNT(*) FROM information_schema.PROCESSLIST
              WHERE DB = DATABASE() AND INFO LIKE 'ALTER TABLE items%' AND STATE LIKE '%metadata lock%'`,
          );
          if (Number(waiting[0]![0]) > 0) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const blocked = runBin('deltasync-extract', ['-c', job.config]);
        await reader.exec('ROLLBACK');
        await altered;
        expect(blocked.code, blocked.stderr).toBe(69);
        expect(blocked.stderr).toContain('lockTimeoutSeconds');
        expect(blocked.stderr).toMatch(/blocked by connection id \d+ .*running: ALTER TABLE items/);
        const { readdirSync, existsSync } = await import('node:fs');
        const outbox = `${job.dir}/outbox`;
        expect(existsSync(outbox) ? readdirSync(outbox) : []).toEqual([]);
        const again = runBin('deltasync-extract', ['-c', job.config]);
        expect(again.code, again.stderr).toBe(0);
      } finally {
        await reader.close();
        await alterer.close();
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});
