/**
 * The PostgreSQL adapter against a real server: reflection, streaming reads inside one snapshot,
 * upserts through COPY + staging, and every failure an operator must be able to tell apart.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../src/db/index.js';
import type { ColumnInfo, SourceReader, TargetWriter, WireRow } from '../../src/db/types.js';
import type { HighWaterSource } from '../../src/db/window.js';
import { ConfigError, DeltaError, UnavailableError } from '../../src/errors.js';
import { pgServer } from '../helpers/databases.js';

const server = await pgServer();

async function* fromArray(rows: WireRow[]): AsyncGenerator<WireRow> {
  yield* rows;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

describe.skipIf(!server.available)(`PostgreSQL adapter ${server.reason ?? ''}`, () => {
  let url: string;
  let admin: pg.Client;
  const config = () => ({ client: 'pg', connection: url });
  const sql = (text: string, params?: unknown[]) => admin.query(text, params);

  beforeAll(async () => {
    url = await server.fresh('pgadapter');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await sql(`CREATE DOMAIN money_amount AS numeric(12,2)`);
    await sql(`CREATE TYPE mood AS ENUM ('sad', 'happy')`);
    await sql(`CREATE TABLE kinds (
      id int PRIMARY KEY, s smallint, b bigint, n numeric(38,10), r real, d double precision,
      f boolean, t text, v varchar(20), c char(3), by bytea, dt date, tm time(3), ts timestamp,
      tz timestamptz, j json, jb jsonb, u uuid, amount money_amount, m mood, a int[],
      iv interval, "Mixed Case" text)`);
    await sql(`CREATE TABLE events (log_id bigint PRIMARY KEY, payload text)`);
    await sql(`INSERT INTO events SELECT g, 'row ' || g FROM generate_series(1, 25000) g`);
  });

  afterAll(async () => {
    await admin?.end();
    await server.cleanup();
  });

  describe('source', () => {
    it('reflects columns as logical types with their native names', async () => {
      const source = await openSource(config());
      try {
        const columns = await source.columns('kinds');
        const byName = Object.fromEntries(columns.map((c) => [c.name, c]));
        // prettier-ignore
        expect(columns.map((c) => c.type)).toEqual([
          'int', 'int', 'bigint', 'decimal', 'float', 'float', 'bool', 'text', 'text', 'text',
          'binary', 'date', 'time', 'timestamp', 'timestamptz', 'json', 'json', 'uuid',
          'decimal', 'text', 'text', 'text', 'text',
        ]);
        expect(byName.n?.nativeType).toBe('numeric(38,10)');
        expect(byName.tm?.nativeType).toBe('time(3) without time zone');
        expect(byName['Mixed Case']?.type).toBe('text');
      } finally {
        await source.close();
      }
    });

    it('names a missing table in a ConfigError', async () => {
      const source = await openSource(config());
      try {
        const err = await source.columns('no_such_table').catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as Error).message).toContain('no_such_table');
      } finally {
        await source.close();
      }
    });

    it('streams more than 10k rows in logId order, within (after, upTo]', async () => {
      const source = await openSource(config());
      try {
        const columns = await source.columns('events');
        expect(await source.maxLogId('events', 'log_id')).toBe('25000');
        const rows = await collect(
          source.readChanges({
            table: 'events',
            columns,
            logIdColumn: 'log_id',
            after: '100',
            upTo: '20100',
          }),
        );
        expect(rows).toHaveLength(20000);
        expect(rows[0]).toEqual(['101', 'row 101']);
        expect(rows.at(-1)).toEqual(['20100', 'row 20100']);
        expect(rows.every((r, i) => r[0] === String(101 + i))).toBe(true);
      } finally {
        await source.close();
      }
    });

    it('keeps memory flat while streaming ~100 MB of rows', async () => {
      await sql(`CREATE TABLE big (log_id bigint PRIMARY KEY, filler text)`);
      await sql(
        `INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 100000) g`,
      );
      const source = await openSource(config());
      try {
        const columns = await source.columns('big');
        const start = process.memoryUsage().heapUsed;
        let peak = 0;
        let count = 0;
        for await (const row of source.readChanges({
          table: 'big',
          columns,
          logIdColumn: 'log_id',
          after: '0',
          upTo: '100000',
        })) {
          if ((row[1] as string).length !== 1024) throw new Error('bad row');
          if (++count % 5000 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - start);
        }
        expect(count).toBe(100000);
        expect(peak).toBeLessThan(60 * 1024 * 1024);
      } finally {
        await source.close();
      }
    });

    it('reads every table of one reader in one snapshot', async () => {
      await sql(`CREATE TABLE snap_a (log_id bigint PRIMARY KEY)`);
      await sql(`CREATE TABLE snap_b (log_id bigint PRIMARY KEY)`);
      await sql(`INSERT INTO snap_a VALUES (1), (2); INSERT INTO snap_b VALUES (1)`);
      const source = await openSource(config());
      const read = async (table: string) =>
        collect(
          source.readChanges({
            table,
            columns: await source.columns(table),
            logIdColumn: 'log_id',
            after: '0',
            upTo: '9',
          }),
        );
      try {
        expect(await read('snap_a')).toEqual([['1'], ['2']]);
        await sql(`INSERT INTO snap_b VALUES (2)`);
        expect(await read('snap_b')).toEqual([['1']]);
      } finally {
        await source.close();
      }
    });

    it('logid window: waits for every transaction open at the mark, xid or not', async () => {
      await sql(`CREATE TABLE hw (log_id bigserial PRIMARY KEY, v text)`);
      await sql(`INSERT INTO hw (v) VALUES ('a')`); // log_id 1
      const slow = new pg.Client({ connectionString: url });
      await slow.connect();
      try {
        // logId 2 is taken by a transaction with no xid yet (nextval is not transactional):
        // no snapshot lists it, and it writes its row only after logId 3 committed.
        await slow.query(`BEGIN`);
        const id = (await slow.query(`SELECT nextval('hw_log_id_seq')::text AS id`)).rows[0].id;
        expect(id).toBe('2');
        expect((await slow.query(`SELECT pg_current_xact_id_if_assigned() AS x`)).rows[0].x).toBe(
          null,
        );
        await sql(`INSERT INTO hw (v) VALUES ('fast')`); // log_id 3, committed
        const source = await openSource(config());
        try {
          const tables = [{ table: 'hw', logIdColumn: 'log_id', after: '1' }];
          const held = await source.logIdWindow({ tables, maxWaitSeconds: 0.3 });
          expect(held.upTo).toBeNull();
          const pid = (await slow.query(`SELECT pg_backend_pid() AS p`)).rows[0].p;
          expect(held.heldBy).toContain(`session pid ${pid}`);
          await slow.query(`INSERT INTO hw (log_id, v) VALUES (2, 'slow')`);
          setTimeout(() => void slow.query('COMMIT'), 300);
          expect(await source.logIdWindow({ tables, maxWaitSeconds: 30 })).toEqual({
            upTo: '3',
            limited: false,
          });
          const columns = await source.columns('hw');
          const rows = await collect(
            source.readChanges({
              table: 'hw',
              columns,
              logIdColumn: 'log_id',
              after: '1',
              upTo: '3',
            }),
          );
          expect(rows).toEqual([
            ['2', 'slow'],
            ['3', 'fast'],
          ]);
        } finally {
          await source.close();
        }
      } finally {
        await slow.end();
      }
    });

    it('finds the n-th logId across tables after their cursors', async () => {
      await sql(`CREATE TABLE nth_int (log_id int PRIMARY KEY)`); // an int among bigints
      await sql(`INSERT INTO nth_int VALUES (5), (24999)`);
      const source = (await openSource(config())) as SourceReader & HighWaterSource;
      try {
        const nth = (n: number) =>
          source.nthLogId({
            tables: [
              { table: 'snap_a', logIdColumn: 'log_id', after: '0' }, // 1, 2
              { table: 'events', logIdColumn: 'log_id', after: '24998' }, // 24999, 25000
              { table: 'nth_int', logIdColumn: 'log_id', after: '0' }, // 5, 24999
            ],
            upTo: '25000',
            n,
          });
        expect(await nth(1)).toBe('1');
        expect(await nth(3)).toBe('5');
        expect(await nth(5)).toBe('24999');
        expect(await nth(6)).toBe('25000');
        expect(await nth(7)).toBeNull();
      } finally {
        await source.close();
      }
    });

    it('returns null as maxLogId of an empty table', async () => {
      await sql(`CREATE TABLE empty_t (log_id bigint)`);
      const source = await openSource(config());
      try {
        expect(await source.maxLogId('empty_t', 'log_id')).toBeNull();
      } finally {
        await source.close();
      }
    });

    it('reads rows wider than json_build_array allows (150 columns)', async () => {
      const names = Array.from({ length: 150 }, (_, i) => `c${i}`);
      await sql(`CREATE TABLE wide (log_id bigint, ${names.map((n) => `${n} int`).join(', ')})`);
      await sql(`INSERT INTO wide VALUES (1, ${names.map((_, i) => i).join(', ')})`);
      const source = await openSource(config());
      try {
        const columns = await source.columns('wide');
        const rows = await collect(
          source.readChanges({
            table: 'wide',
            columns,
            logIdColumn: 'log_id',
            after: '0',
            upTo: '1',
          }),
        );
        expect(rows).toEqual([['1', ...names.map((_, i) => i)]]);
      } finally {
        await source.close();
      }
    });

    it('stops a read half-way and goes on reading in the same snapshot', async () => {
      const source = await openSource(config());
      try {
        const columns = await source.columns('events');
        const request = {
          table: 'events',
          columns,
          logIdColumn: 'log_id',
          after: '0',
          upTo: '25000',
        };
        let seen = 0;
        for await (const _row of source.readChanges(request)) {
          if (++seen === 10) break;
        }
        expect(seen).toBe(10);
        await sql(`INSERT INTO events VALUES (25001, 'after the snapshot')`);
        expect(await source.maxLogId('events', 'log_id')).toBe('25000');
        expect(await collect(source.readChanges(request))).toHaveLength(25000);
      } finally {
        await source.close();
        await sql(`DELETE FROM events WHERE log_id > 25000`);
      }
    });

    it('keeps the reader usable after a read fails on the server', async () => {
      const source = await openSource(config());
      try {
        const columns = [{ name: 'no_such_column', type: 'text' as const }];
        const request = { table: 'events', columns, logIdColumn: 'log_id', after: '0', upTo: '9' };
        await expect(collect(source.readChanges(request))).rejects.toBeInstanceOf(ConfigError);
        expect(await source.maxLogId('events', 'log_id')).toBe('25000');
      } finally {
        await source.close();
      }
    });
  });

  describe('capture modes', () => {
    it('installs change capture and reads keys through the change log', async () => {
      await sql(`CREATE TABLE cl_parent (id bigint PRIMARY KEY, name text)`);
      await sql(
        `CREATE TABLE cl_child (a int, b text, parent bigint REFERENCES cl_parent, PRIMARY KEY (a, b))`,
      );
      const source = await openSource(config());
      try {
        const tables = await Promise.all(
          ['cl_parent', 'cl_child'].map(async (table) => {
            const columns = await source.columns(table);
            const key = table === 'cl_parent' ? ['id'] : ['a', 'b'];
            return { table, columns, key, keyColumns: columns.filter((c) => key.includes(c.name)) };
          }),
        );
        const ddl = await source.captureDdl({
          changelog: 'ds_log',
          tables: tables.map((t) => ({ table: t.table, key: t.keyColumns })),
        });
        await source.executeDdl!(ddl.install);
        await source.executeDdl!(ddl.install); // idempotent
        expect(await source.referencedTables!('cl_child')).toEqual(['cl_parent']);

        await sql(`INSERT INTO cl_parent VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
        await sql(`INSERT INTO cl_child VALUES (1, 'x', 1), (2, 'y', 2)`);
        await sql(`UPDATE cl_parent SET name = 'ONE' WHERE id = 1`);
        await sql(`UPDATE cl_parent SET id = 4 WHERE id = 3`); // a key change
        await sql(`DELETE FROM cl_child WHERE a = 2`);
        await source.beginSnapshot();
        const window = await source.changelogWindow({
          changelog: 'ds_log',
          after: '0', // a plain logId, as stored before exact capture
          maxWaitSeconds: 5,
        });
        expect(window.cursor).toMatch(/^pg:\d+:\d+:/);
        const read = (t: (typeof tables)[number]) =>
          collect(
            source.readChangelog({
              changelog: 'ds_log',
              ...t,
              after: window.after,
              upTo: window.cursor,
            }),
          );
        expect(await read(tables[0]!)).toEqual([
          { op: 'upsert', row: ['2', 'two'] },
          { op: 'upsert', row: ['1', 'ONE'] },
          { op: 'delete', key: ['3'] },
          { op: 'upsert', row: ['4', 'three'] },
        ]);
        expect(await read(tables[1]!)).toEqual([
          { op: 'upsert', row: [1, 'x', '1'] },
          { op: 'delete', key: [2, 'y'] },
        ]);
        await source.executeDdl!(ddl.remove);
        expect((await sql(`SELECT to_regclass('ds_log') IS NULL AS gone`)).rows[0].gone).toBe(true);
      } finally {
        await source.close();
      }
    });

    it('reads by (timestamp, key) cursor, and whole tables by key', async () => {
      await sql(`CREATE TABLE ts_t (id int PRIMARY KEY, at timestamptz, v text)`);
      await sql(`INSERT INTO ts_t VALUES (1, '2024-01-01 10:00:00+00', 'a'), (2, '2024-01-01 10:00:00+00', 'b'),
                 (3, '2024-01-01 10:00:00.5+00', 'c'), (4, '2024-01-01 11:00:00+00', 'd')`);
      const source = await openSource(config());
      try {
        const columns = await source.columns('ts_t');
        const keyset = (after: { ts: string; key: number[] } | null, limit?: number) =>
          collect(
            source.readKeyset!({
              table: 'ts_t',
              columns,
              tsColumn: 'at',
              key: ['id'],
              after,
              upTo: '2024-01-01T10:30:00Z',
              limit,
            }),
          );
        expect((await keyset(null, 2)).map((r) => r[0])).toEqual([1, 2]);
        expect(await keyset({ ts: '2024-01-01T10:00:00Z', key: [2] })).toEqual([
          [3, '2024-01-01T10:00:00.500000Z', 'c'],
        ]);
        expect((await keyset({ ts: '2024-01-01T10:00:00.5Z', key: [] })).map((r) => r[0])).toEqual([
          3,
        ]);
        const all = await collect(source.readAll!({ table: 'ts_t', columns, key: ['id'] }));
        expect(all.map((r) => r[0])).toEqual([1, 2, 3, 4]);
        expect(await source.serverTime!('timestamptz')).toMatch(
          /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$/,
        );
        expect(await source.serverTime!('timestamp')).toMatch(
          /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$/,
        );
      } finally {
        await source.close();
      }
    });

    it('deletes rows by key, reads the target back, and runs a hook statement', async () => {
      await sql(`CREATE TABLE del_t (a int, b text, v text, PRIMARY KEY (a, b))`);
      await sql(
        `INSERT INTO del_t VALUES (1, 'x', 'keep'), (2, 'y', 'drop'), (3, 'z\ttab', 'drop')`,
      );
      const target = await openTarget(config());
      try {
        const key: ColumnInfo[] = [
          { name: 'a', type: 'int' },
          { name: 'b', type: 'text' },
        ];
        const deleted = await target.transaction((tx) =>
          tx.deleteRows!({
            table: 'del_t',
            key,
            rows: fromArray([
              [2, 'y'],
              [3, 'z\ttab'],
              [9, 'none'],
            ]),
          }),
        );
        expect(deleted).toBe(2);
        const columns = (await target.columns('del_t'))!;
        expect(
          await collect(target.readAll!({ table: 'del_t', columns, key: ['a', 'b'] })),
        ).toEqual([[1, 'x', 'keep']]);
        await target.execute!(`UPDATE del_t SET v = 'hooked'`);
        expect((await sql(`SELECT v FROM del_t`)).rows).toEqual([{ v: 'hooked' }]);
      } finally {
        await target.close();
      }
    });
  });

  describe('connections', () => {
    it('reports a refused connection as UnavailableError naming the host, not the password', async () => {
      const err = await openSource({
        client: 'pg',
        connection: 'postgres://someone:s3cret@127.0.0.1:1/somedb',
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnavailableError);
      const message = (err as Error).message;
      expect(message).toContain('127.0.0.1:1/somedb');
      expect(message).not.toContain('s3cret');
      expect(message).not.toContain('\n');
    });

    it('reports an unknown database as UnavailableError', async () => {
      const u = new URL(url);
      u.pathname = '/dstest_no_such_database';
      const err = await openTarget({ client: 'pg', connection: u.toString() }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as UnavailableError).hint).toMatch(/create the database/);
    });

    it('reports a connection lost mid-transaction as UnavailableError', async () => {
      const target = await openTarget(config());
      try {
        await target.prepare();
        const err = await target
          .transaction(async (tx) => {
            await sql(
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'deltasync'`,
            );
            await tx.appliedLogId('job');
          })
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(UnavailableError);
      } finally {
        await target.close();
      }
    });
  });

  describe('target', () => {
    let target: TargetWriter;
    const cols: ColumnInfo[] = [
      { name: 'id', type: 'bigint' },
      { name: 'name', type: 'text' },
      { name: 'doc', type: 'json' },
    ];
    const apply = (rows: WireRow[], table = 'synced') =>
      target.transaction((tx) =>
        tx.applyRows({ table, key: ['id'], columns: cols, rows: fromArray(rows) }),
      );
    const table = async (t = 'synced') =>
      (await sql(`SELECT id::text, name, doc::text, note FROM ${t} ORDER BY ${t}.id`)).rows;

    beforeAll(async () => {
      await sql(
        `CREATE TABLE synced (id bigint PRIMARY KEY, name text, doc json, note text DEFAULT 'user')`,
      );
      target = await openTarget(config());
      await target.prepare();
      await target.prepare(); // idempotent
    });

    afterAll(async () => {
      await target?.close();
    });

    it('reflects target columns, and null for a missing table', async () => {
      expect((await target.columns('synced'))?.map((c) => c.type)).toEqual([
        'bigint',
        'text',
        'json',
        'text',
      ]);
      expect(await target.columns('nope')).toBeNull();
    });

    it('inserts, updates, and leaves columns outside the delta alone', async () => {
      expect(
        await apply([
          ['1', 'one', '{"a": 1}'],
          ['2', 'two', null],
        ]),
      ).toBe(2);
      await sql(`UPDATE synced SET note = 'edited by a user' WHERE id = 1`);
      expect(
        await apply([
          ['1', 'ONE', '{"a": 2}'],
          ['3', '', '[]'],
        ]),
      ).toBe(2);
      expect(await table()).toEqual([
        { id: '1', name: 'ONE', doc: '{"a": 2}', note: 'edited by a user' },
        { id: '2', name: 'two', doc: null, note: 'user' },
        { id: '3', name: '', doc: '[]', note: 'user' },
      ]);
    });

    it('does not rewrite rows that did not change', async () => {
      const before = (await sql(`SELECT id, xmin::text FROM synced ORDER BY id`)).rows;
      await apply([
        ['1', 'ONE', '{"a": 2}'],
        ['2', 'two', null],
      ]);
      expect((await sql(`SELECT id, xmin::text FROM synced ORDER BY id`)).rows).toEqual(before);
    });

    it('lets the last row win when a key repeats in one delta', async () => {
      expect(
        await apply([
          ['4', 'first', null],
          ['5', 'x', null],
          ['4', 'last', null],
        ]),
      ).toBe(3);
      expect((await table()).find((r) => r.id === '4')?.name).toBe('last');
      // Across staging batches too (20 MB of rows between the two versions of key 5).
      const big = 'y'.repeat(1 << 20);
      const rows: WireRow[] = [['5', 'early', null]];
      for (let i = 0; i < 20; i++) rows.push([String(100 + i), big, null]);
      rows.push(['5', 'late', null]);
      expect(await apply(rows)).toBe(22);
      expect((await table()).find((r) => r.id === '5')?.name).toBe('late');
      await sql(`DELETE FROM synced WHERE id >= 100`);
    });

    it('loads an empty table directly, and still lets the last row win', async () => {
      await sql(
        `CREATE TABLE fresh (id bigint PRIMARY KEY, name text, doc json, note text DEFAULT 'user')`,
      );
      const big = 'w'.repeat(1 << 20);
      const rows: WireRow[] = [
        ['1', 'first', null],
        ['2', 'two', null],
        ['1', 'second', null],
      ];
      for (let i = 0; i < 12; i++) rows.push([String(100 + i), big, null]); // next batch
      rows.push(['2', 'TWO', '{}']);
      expect(await apply(rows, 'fresh')).toBe(rows.length);
      const loaded = await table('fresh');
      expect(loaded).toHaveLength(14);
      expect(loaded.slice(0, 2)).toEqual([
        { id: '1', name: 'second', doc: null, note: 'user' },
        { id: '2', name: 'TWO', doc: '{}', note: 'user' },
      ]);
    });

    it('rolls back a direct load into an empty table', async () => {
      await sql(`CREATE TABLE fresh2 (id bigint PRIMARY KEY, name text, doc json)`);
      const big = 'v'.repeat(1 << 20);
      async function* failing(): AsyncGenerator<WireRow> {
        for (let i = 0; i < 30; i++) yield [String(i), big, null];
        throw new Error('truncated part file');
      }
      await expect(
        target.transaction((tx) =>
          tx.applyRows({ table: 'fresh2', key: ['id'], columns: cols, rows: failing() }),
        ),
      ).rejects.toThrow('truncated part file');
      expect((await sql(`SELECT count(*)::int AS n FROM fresh2`)).rows[0].n).toBe(0);
    });

    it('escapes text that COPY treats specially, and loads an empty delta', async () => {
      const nasty = 'tab\there\nnew line\r\\N back\\slash \\x00 ünï 😀';
      await apply([['6', nasty, '{"s": "a\\"b\\\\c\\n"}']]);
      const row = (await table()).find((r) => r.id === '6');
      expect(row?.name).toBe(nasty);
      expect(row?.doc).toBe('{"s": "a\\"b\\\\c\\n"}');
      expect(await apply([])).toBe(0);
    });

    it('records the applied logId inside the transaction', async () => {
      expect(await target.appliedLogId('jobA')).toBeNull();
      await target.transaction(async (tx) => {
        expect(await tx.appliedLogId('jobA')).toBeNull();
        await tx.recordApplied({ job: 'jobA', logId: '100', delta: 'delta-100.manifest' });
        expect(await tx.appliedLogId('jobA')).toBe('100');
      });
      expect(await target.appliedLogId('jobA')).toBe('100');
      await expect(
        target.transaction(async (tx) => {
          await tx.recordApplied({ job: 'jobA', logId: '200', delta: 'delta-200.manifest' });
          throw new Error('crash before commit');
        }),
      ).rejects.toThrow('crash before commit');
      expect(await target.appliedLogId('jobA')).toBe('100');
    });

    it('rolls everything back when the rows fail half-way, with the rows error', async () => {
      const before = await table();
      const failure = new DeltaError('checksum mismatch in part 2');
      const big = 'x'.repeat(1 << 20);
      async function* failing(): AsyncGenerator<WireRow> {
        // 40 MB: several staging batches are applied inside the transaction before the failure.
        for (let i = 0; i < 40; i++) yield [String(1000 + i), big, null];
        throw failure;
      }
      const err = await target
        .transaction(async (tx) => {
          await tx.applyRows({
            table: 'synced',
            key: ['id'],
            columns: cols,
            rows: fromArray([['1', 'changed', null]]),
          });
          await tx.recordApplied({ job: 'jobB', logId: '5', delta: 'd' });
          return tx.applyRows({ table: 'synced', key: ['id'], columns: cols, rows: failing() });
        })
        .catch((e: unknown) => e);
      expect(err).toBe(failure);
      expect(await table()).toEqual(before);
      expect(await target.appliedLogId('jobB')).toBeNull();
      expect(await apply([['7', 'after the failure', null]])).toBe(1); // connection still usable
    });

    it('refuses a row of the wrong width with a DeltaError', async () => {
      await expect(apply([['8', 'two values only']])).rejects.toBeInstanceOf(DeltaError);
    });

    it('raises ConfigError for a missing table, a missing column, and a key without index', async () => {
      await expect(apply([['1', 'x', null]], 'nope')).rejects.toThrow(/'nope' does not exist/);
      await sql(`CREATE TABLE nokey (id bigint, name text)`);
      await expect(
        target.transaction((tx) =>
          tx.applyRows({ table: 'nokey', key: ['id'], columns: cols, rows: fromArray([]) }),
        ),
      ).rejects.toThrow(/no column doc/);
      await sql(`ALTER TABLE nokey ADD COLUMN doc json`);
      const err = await apply([['1', 'x', null]], 'nokey').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/unique index on \(id\)/);
    });
  });
});
