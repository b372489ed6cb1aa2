/**
 * The MySQL/MariaDB engine members of the capture modes against a real server: change-log
 * triggers and readChangelog, keyset reads, whole-table reads, nthLogId, foreign keys, server
 * time, deletes and verify reads on the target, the after-load hook's execute, and the stable
 * high-water mark (late commits, idle readers, the missing PROCESS privilege, fresh snapshots).
 */
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changelogSql } from '../../src/db/mysql/capture.js';
import { MysqlSource } from '../../src/db/mysql/source.js';
import { positionWindowSql } from '../../src/db/mysql/sql.js';
import { MysqlTarget } from '../../src/db/mysql/target.js';
import type { ChangelogRow, ColumnInfo, DbConfig, WireRow } from '../../src/db/types.js';
import { ConfigError } from '../../src/errors.js';
import { mysqlServer } from '../helpers/databases.js';

const server = await mysqlServer();

async function collect<T>(rows: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

async function* rowsOf(rows: WireRow[]): AsyncIterable<WireRow> {
  yield* rows;
}

describe.skipIf(!server.available)('MySQL/MariaDB capture members', () => {
  let url: string;
  let database: string;
  let admin: mysql.Connection;
  const config = (): DbConfig => ({ client: 'mariadb', connection: url });
  const exec = async (sql: string, values?: unknown[]) => (await admin.query(sql, values))[0];
  /** A second connection of its own, for transactions that must stay open. */
  const connect = () =>
    mysql.createConnection({ uri: url, dateStrings: true, supportBigNumbers: true });
  /** Whether the connection's transaction is still open, as the server sees it. */
  const running = async (conn: mysql.Connection) => {
    const [[me]] = (await conn.query('SELECT CONNECTION_ID() AS id')) as unknown as [
      { id: number }[],
    ];
    const rows = (await exec(
      'SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?',
      [me!.id],
    )) as unknown[];
    return rows.length === 1;
  };

  beforeAll(async () => {
    url = await server.fresh('mysqlcapture');
    database = new URL(url).pathname.slice(1);
    admin = await mysql.createConnection({
      uri: url,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    await exec("SET time_zone = '+00:00'");
  });

  afterAll(async () => {
    await admin?.end();
    await server.cleanup();
  });

  describe('changelog mode', () => {
    const changelog = 'deltasync_changelog';
    // A composite key of awkward types: a case-insensitive string, a TIMESTAMP (written from a
    // session two hours east of UTC), binary and BIT.
    const columns: ColumnInfo[] = [
      { name: 'code', type: 'text' },
      { name: 'at', type: 'timestamptz' },
      { name: 'tag', type: 'binary' },
      { name: 'flag', type: 'bool' },
      { name: 'label', type: 'text' },
    ];
    const key = ['code', 'at', 'tag', 'flag'];
    const tag = (hex: string) => Buffer.from(hex, 'hex').toString('base64');
    let source: MysqlSource;
    let install: string[];
    let remove: string[];

    beforeAll(async () => {
      await exec(`CREATE TABLE items (
        code VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, at TIMESTAMP(6) NOT NULL,
        tag VARBINARY(4) NOT NULL, flag BIT(1) NOT NULL, label VARCHAR(50),
        PRIMARY KEY (code, at, tag, flag)) ENGINE=InnoDB`);
      await exec('CREATE TABLE simple (id BIGINT UNSIGNED PRIMARY KEY, v INT) ENGINE=InnoDB');
      source = await MysqlSource.open(config());
      const itemColumns = await source.columns('items');
      const ddl = await source.captureDdl({
        changelog,
        tables: [
          { table: 'items', key: key.map((k) => itemColumns.find((c) => c.name === k)!) },
          { table: 'simple', key: [(await source.columns('simple'))[0]!] },
        ],
      });
      install = ddl.install;
      remove = ddl.remove;
    });

    afterAll(async () => {
      await source?.close();
    });

    const read = (after: string, upTo: string, table = 'items', cols = columns, k = key) =>
      collect<ChangelogRow>(
        source.readChangelog({ changelog, table, columns: cols, key: k, after, upTo }),
      );

    it('installs idempotently, captures inserts, updates, key changes and deletes', async () => {
      expect(install[1]).toMatch(/^CREATE OR REPLACE TRIGGER/);
      await source.executeDdl(install);
      await source.executeDdl(install); // again: replaces, does not fail

      const writer = await connect();
      try {
        await writer.query("SET time_zone = '+02:00'");
        await writer.query(
          `INSERT INTO items VALUES
             ('Abc', '2026-03-29 03:30:00.250000', x'00ff', b'1', 'one'),
             ('x"y\\\\z', '2026-01-01 02:00:00', x'', b'0', 'two'),
             ('gone', '2026-01-01 02:00:00', x'01', b'0', 'three')`,
        );
        expect(
          (
            await source.stableHighWater({
              tables: [{ table: changelog, logIdColumn: 'log_id' }],
              maxWaitSeconds: 30,
            })
          ).high,
        ).toBe('3');
        expect(await read('0', '3')).toEqual([
          { op: 'upsert', row: ['Abc', '2026-03-29T01:30:00.250000Z', tag('00ff'), true, 'one'] },
          { op: 'upsert', row: ['x"y\\z', '2026-01-01T00:00:00Z', '', false, 'two'] },
          { op: 'upsert', row: ['gone', '2026-01-01T00:00:00Z', tag('01'), false, 'three'] },
        ]);

        await writer.query("UPDATE items SET label = 'ONE' WHERE code = 'abc'");
        await writer.query("UPDATE items SET code = 'moved' WHERE label = 'two'");
        await writer.query("DELETE FROM items WHERE code = 'gone'");
      } finally {
        await writer.end();
      }
      const rows = (await exec(
        'SELECT log_id, table_name, op, key_values FROM deltasync_changelog WHERE log_id > 3 ORDER BY log_id',
      )) as { op: string; key_values: string }[];
      expect(rows.map((r) => [r.op, JSON.parse(r.key_values)])).toEqual([
        ['U', ['Abc', '2026-03-29 01:30:00.250000', '00FF', '1']],
        ['U', ['moved', '2026-01-01 00:00:00.000000', '', '0']],
        ['D', ['x"y\\z', '2026-01-01 00:00:00.000000', '', '0']],
        ['D', ['gone', '2026-01-01 00:00:00.000000', '01', '0']],
      ]);

      const high = (
        await source.stableHighWater({
          tables: [{ table: changelog, logIdColumn: 'log_id' }],
          maxWaitSeconds: 30,
        })
      ).high;
      expect(high).toBe('7');
      expect(await read('3', high!)).toEqual([
        { op: 'upsert', row: ['Abc', '2026-03-29T01:30:00.250000Z', tag('00ff'), true, 'ONE'] },
        { op: 'upsert', row: ['moved', '2026-01-01T00:00:00Z', '', false, 'two'] },
        { op: 'delete', key: ['x"y\\z', '2026-01-01T00:00:00Z', '', false] },
        { op: 'delete', key: ['gone', '2026-01-01T00:00:00Z', tag('01'), false] },
      ]);
      // Each key once, at its latest change; only the range asked for.
      expect((await read('0', high!)).length).toBe(4);
      expect(await read('6', '6')).toEqual([]);
    });

    it('reads back integer keys beyond 2^53 exactly and uses the key index', async () => {
      await exec('INSERT INTO simple VALUES (18446744073709551615, 1), (9007199254740993, 2)');
      await exec('DELETE FROM simple WHERE v = 2');
      const cols: ColumnInfo[] = [
        { name: 'id', type: 'bigint' },
        { name: 'v', type: 'int' },
      ];
      // A new high-water mark, so that the reads see what was written since the last ones.
      const m = (
        await source.stableHighWater({
          tables: [{ table: changelog, logIdColumn: 'log_id' }],
          maxWaitSeconds: 30,
        })
      ).high!;
      expect(m).toBe('10');
      expect(await read('7', m, 'simple', cols, ['id'])).toEqual([
        { op: 'upsert', row: ['18446744073709551615', 1] },
        { op: 'delete', key: ['9007199254740993'] },
      ]);
      // The join reaches the table through its key, one row per logged key.
      const sql = changelogSql({
        changelog,
        table: 'simple',
        key: [
          { name: 'id', dataType: 'bigint', columnType: 'bigint(20) unsigned', jsonChecked: false },
        ],
        selects: ['t.`id`', 't.`v`'],
        window: positionWindowSql({ high: '0', gaps: [] }, { high: m, gaps: [] }, changelog),
      });
      const plan = (await exec(`EXPLAIN ${sql}`)) as {
        table: string;
        type: string;
        key: string | null;
      }[];
      expect(plan.find((p) => p.table === 't')).toMatchObject({ type: 'eq_ref', key: 'PRIMARY' });
    });

    it('removes every trigger and the change log', async () => {
      await source.executeDdl(remove);
      await source.executeDdl(remove); // again: nothing left to drop, no error
      const triggers = (await exec(
        'SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?',
        [database],
      )) as unknown[];
      expect(triggers).toEqual([]);
      await expect(exec('SELECT 1 FROM deltasync_changelog')).rejects.toThrow(/doesn't exist/);
      await exec("INSERT INTO items VALUES ('later', NOW(), x'', b'0', NULL)"); // no trigger left to fail
    });
  });

  describe('reads', () => {
    const columns: ColumnInfo[] = [
      { name: 'id', type: 'int' },
      { name: 'changed', type: 'timestamptz' },
      { name: 'payload', type: 'text' },
    ];
    let source: MysqlSource;

    beforeAll(async () => {
      await exec(`CREATE TABLE events (id INT PRIMARY KEY, changed TIMESTAMP(6) NULL,
        payload VARCHAR(50), KEY (changed, id)) ENGINE=InnoDB`);
      const values = Array.from(
        { length: 25 },
        (_, i) => `(${i + 1}, '2026-01-01 10:00:00', 'same ${i + 1}')`,
      );
      values.push(`(100, '2026-01-01 09:59:59.999999', 'earlier')`);
      values.push(`(101, '2026-01-02 08:00:00', 'later')`);
      values.push(`(102, '2030-01-01 00:00:00', 'beyond the horizon')`);
      await exec(`INSERT INTO events VALUES ${values.join(', ')}`);
      // Tables a snapshot opened earlier could not read: created before any read.
      await exec('CREATE TABLE la (id INT PRIMARY KEY, log_id BIGINT NOT NULL, KEY (log_id))');
      await exec('CREATE TABLE lb (id INT PRIMARY KEY, lid BIGINT NOT NULL, KEY (lid))');
      await exec('INSERT INTO la VALUES (1, 1), (2, 4), (3, 9), (4, 12)');
      await exec('INSERT INTO lb VALUES (1, 2), (2, 3), (3, 10)');
      await exec('CREATE TABLE parent_a (id INT PRIMARY KEY) ENGINE=InnoDB');
      await exec('CREATE TABLE parent_b (id INT PRIMARY KEY) ENGINE=InnoDB');
      await exec(`CREATE TABLE child (id INT PRIMARY KEY, a INT, b INT, a2 INT, up INT,
        FOREIGN KEY (a) REFERENCES parent_a (id), FOREIGN KEY (a2) REFERENCES parent_a (id),
        FOREIGN KEY (b) REFERENCES parent_b (id), FOREIGN KEY (up) REFERENCES child (id)) ENGINE=InnoDB`);
      source = await MysqlSource.open(config());
    });

    afterAll(async () => {
      await source?.close();
    });

    it('splits rows sharing one timestamp by the limit without losing or repeating one', async () => {
      const upTo = '2026-06-01T00:00:00Z';
      const seen: WireRow[] = [];
      let after: { ts: string; key: number[] } | null = null;
      for (let call = 0; call < 10; call++) {
        const rows: WireRow[] = await collect(
          source.readKeyset({
            table: 'events',
            columns,
            tsColumn: 'changed',
            key: ['id'],
            after,
            upTo,
            limit: 10,
          }),
        );
        if (rows.length === 0) break;
        seen.push(...rows);
        const last: WireRow = rows[rows.length - 1]!;
        after = { ts: last[1] as string, key: [last[0] as number] };
      }
      expect(seen.map((r) => r[0])).toEqual([
        100,
        ...Array.from({ length: 25 }, (_, i) => i + 1),
        101,
      ]);
      expect(seen[0]).toEqual([100, '2026-01-01T09:59:59.999999Z', 'earlier']);
    });

    it('reads from a configured start (a cursor with no key) inclusively', async () => {
      const rows = await collect(
        source.readKeyset({
          table: 'events',
          columns,
          tsColumn: 'changed',
          key: ['id'],
          after: { ts: '2026-01-01T10:00:00Z', key: [] },
          upTo: '2026-01-01T10:00:00Z',
        }),
      );
      expect(rows.map((r) => r[0])).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    });

    it('reads a whole table in key order', async () => {
      const rows = await collect(source.readAll({ table: 'events', columns, key: ['id'] }));
      expect(rows.map((r) => r[0])).toEqual([
        ...Array.from({ length: 25 }, (_, i) => i + 1),
        100,
        101,
        102,
      ]);
    });

    it('finds the n-th logId across tables', async () => {
      const tables = [
        { table: 'la', logIdColumn: 'log_id', after: '1' },
        { table: 'lb', logIdColumn: 'lid', after: '2' },
      ];
      // After the cursors: 3, 4, 9, 10, 12.
      expect(await source.nthLogId({ tables, upTo: '12', n: 1 })).toBe('3');
      expect(await source.nthLogId({ tables, upTo: '12', n: 3 })).toBe('9');
      expect(await source.nthLogId({ tables, upTo: '12', n: 5 })).toBe('12');
      expect(await source.nthLogId({ tables, upTo: '10', n: 5 })).toBeNull();
    });

    it('lists the tables a table references, in the same database', async () => {
      expect(await source.referencedTables('child')).toEqual(['parent_a', 'parent_b']);
      expect(await source.referencedTables(`${database}.child`)).toEqual([
        `${database}.parent_a`,
        `${database}.parent_b`,
      ]);
      expect(await source.referencedTables('parent_a')).toEqual([]);
    });

    it('tells the server time as wire values', async () => {
      const utc = await source.serverTime('timestamptz');
      expect(utc).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      expect(Math.abs(Date.parse(utc) - Date.now())).toBeLessThan(60_000);
      expect(await source.serverTime('timestamp')).toMatch(
        /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/,
      );
    });
  });

  describe('stable high-water mark', () => {
    let source: MysqlSource;
    const tables = [{ table: 'orders', logIdColumn: 'log_id' }];
    const columns: ColumnInfo[] = [
      { name: 'log_id', type: 'bigint' },
      { name: 'who', type: 'text' },
    ];

    beforeAll(async () => {
      await exec(
        'CREATE TABLE orders (log_id BIGINT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(10)) ENGINE=InnoDB',
      );
      await exec('CREATE TABLE quiet (log_id BIGINT PRIMARY KEY) ENGINE=InnoDB');
      source = await MysqlSource.open(config());
    });

    afterAll(async () => {
      await source?.close();
    });

    it('is null for empty tables', async () => {
      expect(
        (
          await source.stableHighWater({
            tables: [{ table: 'quiet', logIdColumn: 'log_id' }],
            maxWaitSeconds: 1,
          })
        ).high,
      ).toBeNull();
    });

    it('waits for a transaction that took a lower logId and commits late', async () => {
      const a = await connect();
      const b = await connect();
      try {
        // A mark taken just before leaves INNODB_TRX's cache filled, listing this connection: it
        // must not be mistaken for a view taken after the next mark's maximum.
        await exec('INSERT INTO quiet VALUES (1)');
        const quiet = [{ table: 'quiet', logIdColumn: 'log_id' }];
        expect((await source.stableHighWater({ tables: quiet, maxWaitSeconds: 30 })).high).toBe(
          '1',
        );
        await a.query('START TRANSACTION');
        await a.query("INSERT INTO orders (who) VALUES ('A')"); // takes logId 1, stays open
        await b.query("INSERT INTO orders (who) VALUES ('B')"); // takes logId 2, commits
        const high = (await source.stableHighWater({ tables, maxWaitSeconds: 1 })).high;
        // It gave up because A is still open, not for another reason: A is still running now.
        expect(high).toBeNull();
        expect(await running(a)).toBe(true);

        await a.query('COMMIT');
        expect((await source.stableHighWater({ tables, maxWaitSeconds: 30 })).high).toBe('2');
        expect(
          await collect(
            source.readChanges({
              table: 'orders',
              columns,
              logIdColumn: 'log_id',
              after: '0',
              upTo: '2',
            }),
          ),
        ).toEqual([
          ['1', 'A'],
          ['2', 'B'],
        ]);
      } finally {
        await a.end();
        await b.end();
      }
    });

    it('returns once the late transaction commits, within the wait', async () => {
      const a = await connect();
      try {
        await a.query('START TRANSACTION');
        await a.query("INSERT INTO orders (who) VALUES ('late')");
        await exec("INSERT INTO orders (who) VALUES ('early')");
        let commitSent = false;
        const commit = setTimeout(() => {
          commitSent = true;
          void a.query('COMMIT');
        }, 700);
        const high = (await source.stableHighWater({ tables, maxWaitSeconds: 30 })).high;
        clearTimeout(commit);
        // It returned the mark over the late row, and only after that row's COMMIT was sent.
        expect(high).toBe('4');
        expect(commitSent).toBe(true);
        const rows = await collect(
          source.readChanges({
            table: 'orders',
            columns,
            logIdColumn: 'log_id',
            after: '2',
            upTo: high!,
          }),
        );
        expect(rows).toEqual([
          ['3', 'late'],
          ['4', 'early'],
        ]);
      } finally {
        await a.end();
      }
    });

    it('does not wait for transactions that only read', async () => {
      const reader = await connect();
      try {
        await reader.query('START TRANSACTION');
        await reader.query('SELECT COUNT(*) FROM orders');
        // Had it waited for the reader it would have given up (null): the reader is still open.
        expect((await source.stableHighWater({ tables, maxWaitSeconds: 5 })).high).toBe('4');
        expect(await running(reader)).toBe(true);
      } finally {
        await reader.end();
      }
    });

    it('reads after it see rows committed after the previous reads', async () => {
      const read = () =>
        collect(
          source.readChanges({
            table: 'orders',
            columns,
            logIdColumn: 'log_id',
            after: '0',
            upTo: '100',
          }),
        );
      expect(await read()).toHaveLength(4);
      await exec("INSERT INTO orders (who) VALUES ('fresh')");
      // Same delta, same snapshot.
      expect(await read()).toHaveLength(4);
      expect((await source.stableHighWater({ tables, maxWaitSeconds: 30 })).high).toBe('5');
      expect(await read()).toHaveLength(5);
      await exec("INSERT INTO orders (who) VALUES ('again')");
      expect(await source.maxLogId('orders', 'log_id')).toBe('6');
      expect(await read()).toHaveLength(6);
    });

    it('falls back to the plain maximum, with one warning, without the PROCESS privilege', async () => {
      const user = `ds_${randomBytes(4).toString('hex')}`;
      await exec(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw'`);
      await exec(`CREATE USER '${user}'@'localhost' IDENTIFIED BY 'pw'`);
      try {
        for (const host of ['%', 'localhost']) {
          await exec(`GRANT SELECT ON \`${database}\`.* TO '${user}'@'${host}'`);
        }
        const u = new URL(url);
        u.username = user;
        u.password = 'pw';
        const warnings: string[] = [];
        const limited = await MysqlSource.open(
          { client: 'mysql', connection: u.toString() },
          { warn: (m) => warnings.push(m) },
        );
        const a = await connect();
        try {
          await a.query('START TRANSACTION');
          await a.query("INSERT INTO orders (who) VALUES ('open')");
          // Without INNODB_TRX the open transaction cannot be seen: the plain maximum.
          expect((await limited.stableHighWater({ tables, maxWaitSeconds: 1 })).high).toBe('6');
          expect((await limited.stableHighWater({ tables, maxWaitSeconds: 1 })).high).toBe('6');
          expect(warnings).toHaveLength(1);
          expect(warnings[0]).toMatch(/PROCESS/);
          // Nor may this user install triggers: a ConfigError says what to grant.
          const ddl = await limited.captureDdl({
            changelog: 'cl',
            tables: [{ table: 'orders', key: columns.slice(0, 1) }],
          });
          const refused = await limited.executeDdl(ddl.install).catch((err: unknown) => err);
          expect(refused).toBeInstanceOf(ConfigError);
          expect((refused as ConfigError).hint).toMatch(/grant CREATE/);
        } finally {
          await a.query('ROLLBACK');
          await a.end();
          await limited.close();
        }
      } finally {
        await exec(`DROP USER '${user}'@'%'`);
        await exec(`DROP USER '${user}'@'localhost'`);
      }
    });
  });

  describe('change-log windows (gap tracking)', () => {
    const changelog = 'gapcl';
    const columns: ColumnInfo[] = [
      { name: 'id', type: 'int' },
      { name: 'v', type: 'text' },
    ];
    let source: MysqlSource;

    beforeAll(async () => {
      await exec('CREATE TABLE notes (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB');
      source = await MysqlSource.open(config());
      const ddl = await source.captureDdl({
        changelog,
        tables: [{ table: 'notes', key: (await source.columns('notes')).slice(0, 1) }],
      });
      await source.executeDdl(ddl.install);
    });

    afterAll(async () => {
      await source?.close();
    });

    const window = async (after: string | null) => {
      await source.beginSnapshot();
      return source.changelogWindow({ changelog, after, maxWaitSeconds: 30 });
    };
    const read = async (w: { after: string; cursor: string }) =>
      (
        await collect(
          source.readChangelog({
            changelog,
            table: 'notes',
            columns,
            key: ['id'],
            after: w.after,
            upTo: w.cursor,
          }),
        )
      ).map((c) => (c.op === 'upsert' ? c.row[1] : c.key));
    /** The InnoDB transaction id of a connection's open transaction. */
    const trxOf = async (conn: mysql.Connection) => {
      const [[me]] = (await conn.query('SELECT CONNECTION_ID() AS id')) as unknown as [
        { id: number }[],
      ];
      // INNODB_TRX is a cache refilled only after 100 ms without readers: look until it lists it.
      for (let i = 0; i < 50; i++) {
        const [row] = (await exec(
          'SELECT CAST(trx_id AS CHAR) AS id FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?',
          [me!.id],
        )) as { id: string }[];
        if (row) return row.id;
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      throw new Error('the transaction never showed in INNODB_TRX');
    };

    it('ships what the snapshot shows, keeps the gap of a running transaction, ships it once committed', async () => {
      const start = await window(null);
      expect(start.cursor).toBe(start.after);
      const a = await connect();
      try {
        await a.query('START TRANSACTION');
        await a.query("INSERT INTO notes VALUES (1, 'slow')"); // the lower change-log id
        await exec("INSERT INTO notes VALUES (2, 'quick')");
        const w1 = await window(start.cursor);
        expect(await read(w1)).toEqual(['quick']);
        const [, gaps] = w1.cursor.split(';');
        const [ids, watchers] = gaps!.split('@');
        expect(watchers!.split('.')).toContain(await trxOf(a));
        await a.query('COMMIT');
        const w2 = await window(w1.cursor);
        expect(await read(w2)).toEqual(['slow']);
        expect(w2.highLogId).toBe(ids);
        expect(w2.cursor).toBe(`mysql:${w2.cursor.slice(6).split(';')[0]}`); // no gap left
        const w3 = await window(w2.cursor);
        expect(w3.cursor).toBe(w3.after);
        expect(await read(w3)).toEqual([]);
      } finally {
        await a.end();
      }
    });

    it('closes the gap of a rolled-back transaction only after seeing it gone, shipping nothing', async () => {
      let position = (await window(null)).cursor;
      const a = await connect();
      try {
        await a.query('START TRANSACTION');
        await a.query("INSERT INTO notes VALUES (3, 'undone')");
        const trx = await trxOf(a);
        await exec("INSERT INTO notes VALUES (4, 'kept')");
        const w1 = await window(position);
        expect(await read(w1)).toEqual(['kept']);
        expect(w1.cursor).toContain(trx);
        await a.query('ROLLBACK');
        position = w1.cursor;
        // The next window sees the watcher gone but keeps the gap (it may have committed just
        // after that window's snapshot); one later closes it. Other sessions' transactions on the
        // server may watch it a little longer: look until it closes.
        const shipped: unknown[] = [];
        for (let i = 0; i < 50 && position.includes(';'); i++) {
          const w = await window(position);
          shipped.push(...(await read(w)));
          expect(w.cursor).not.toContain(trx);
          position = w.cursor;
        }
        expect(position).toMatch(/^mysql:\d+$/);
        expect(shipped).toEqual([]);
      } finally {
        await a.end();
      }
    });

    it('refuses a change log whose trigger is gone, naming it (78)', async () => {
      const request = {
        changelog,
        tables: [{ table: 'notes', key: (await source.columns('notes')).slice(0, 1) }],
      };
      await source.checkCapture(request);
      // The reader's snapshot holds the table's metadata lock, which DROP TRIGGER waits for.
      await source.close();
      source = await MysqlSource.open(config());
      await exec('DROP TRIGGER gapcl_notes_del');
      const refused = await source.checkCapture(request).catch((err: unknown) => err);
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as ConfigError).message).toMatch(/notes \(delete\)/);
      expect((refused as ConfigError).hint).toBe('run deltasync capture --apply');
    });
  });

  describe('target', () => {
    const keyColumns: ColumnInfo[] = [
      { name: 'a', type: 'int' },
      { name: 'b', type: 'text' },
    ];
    const columns: ColumnInfo[] = [...keyColumns, { name: 'v', type: 'bigint' }];
    let target: MysqlTarget;
    const ids = async () =>
      ((await exec('SELECT a, b FROM pairs ORDER BY a, b')) as { a: number; b: string }[]).map(
        (r) => `${r.a}${r.b}`,
      );

    beforeAll(async () => {
      await exec(
        'CREATE TABLE pairs (a INT, b VARCHAR(10), v BIGINT, note VARCHAR(10), PRIMARY KEY (a, b)) ENGINE=InnoDB',
      );
      await exec('CREATE TABLE singles (id BIGINT PRIMARY KEY) ENGINE=InnoDB');
      const values = Array.from({ length: 2500 }, (_, i) => `(${i + 1})`);
      await exec(`INSERT INTO singles VALUES ${values.join(', ')}`);
      await exec(
        "INSERT INTO pairs VALUES (1, 'x', 1, NULL), (1, 'y', 2, NULL), (2, 'x', 3, NULL), (3, 'it''s', 4, NULL)",
      );
      target = await MysqlTarget.open(config());
      await target.prepare();
    });

    afterAll(async () => {
      await target?.close();
    });

    it('deletes by composite key inside the transaction, and rolls back with it', async () => {
      await expect(
        target.transaction(async (tx) => {
          const n = await tx.deleteRows!({
            table: 'pairs',
            key: keyColumns,
            rows: rowsOf([[1, 'y']]),
          });
          expect(n).toBe(1);
          throw new Error('injected after the delete');
        }),
      ).rejects.toThrow('injected');
      expect(await ids()).toEqual(['1x', '1y', '2x', "3it's"]);

      const n = await target.transaction((tx) =>
        tx.deleteRows!({
          table: 'pairs',
          key: keyColumns,
          rows: rowsOf([
            [1, 'y'],
            [3, "it's"],
            [9, 'missing'],
          ]),
        }),
      );
      expect(n).toBe(2);
      expect(await ids()).toEqual(['1x', '2x']);
    });

    it('deletes in batches', async () => {
      const keys: WireRow[] = Array.from({ length: 2400 }, (_, i) => [String(i + 1)]);
      const n = await target.transaction((tx) =>
        tx.deleteRows!({
          table: 'singles',
          key: [{ name: 'id', type: 'bigint' }],
          rows: rowsOf(keys),
        }),
      );
      expect(n).toBe(2400);
      expect(await exec('SELECT COUNT(*) AS n FROM singles')).toEqual([{ n: '100' }]);
    });

    it('reads the replica in key order for verify', async () => {
      expect(await collect(target.readAll!({ table: 'pairs', columns, key: ['a', 'b'] }))).toEqual([
        [1, 'x', '1'],
        [2, 'x', '3'],
      ]);
      await expect(
        collect(target.readAll!({ table: 'nope', columns, key: ['a'] })),
      ).rejects.toThrow(ConfigError);
    });

    it('runs a hook statement in autocommit', async () => {
      await target.execute!("UPDATE pairs SET note = 'hooked' WHERE a = 1");
      expect(await exec('SELECT note FROM pairs WHERE a = 1')).toEqual([{ note: 'hooked' }]);
      await expect(target.execute!('SELEKT 1')).rejects.toThrow(/syntax/);
    });
  });
});
