/**
 * SourceReader conformance: reflection, logId reads inside one snapshot, streaming without
 * buffering, keyset and whole-table reads, the change log, and a reader that stays usable after a
 * failed or abandoned read. The same expectations for every engine; what only one engine does is
 * in a case labelled with its name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource } from '../../../src/db/index.js';
import type { NthLogIdRequest, SourceReader } from '../../../src/db/types.js';
import { ConfigError } from '../../../src/errors.js';
import { cleanup, collect, engines, type TestDb } from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));

describe.each(ENGINES.map((e) => [e.name, e] as const))('SourceReader on %s', (_name, engine) => {
  const d = engine.dialect;
  let db: TestDb;
  let source: SourceReader;
  const read = (table: string, after: string, upTo: string) =>
    (async () =>
      collect(
        source.readChanges({
          table,
          columns: await source.columns(table),
          logIdColumn: 'log_id',
          after,
          upTo,
        }),
      ))();

  beforeAll(async () => {
    if (!engine.available) return;
    db = await engine.fresh(`src${engine.id}`);
    await db.exec(
      `CREATE TABLE events (log_id ${d.bigint} PRIMARY KEY, payload ${d.varchar(40)})${d.tableSuffix}`,
    );
    await db.exec(
      `INSERT INTO events (log_id, payload) SELECT g, ${d.concat("'row '", 'g')} FROM ${d.series(25000)}`,
    );
    source = await openSource(db.config);
  });

  afterAll(async () => {
    await source?.close();
    await db?.close();
  });

  describe.skipIf(!engine.available)(engine.server?.reason ?? '', () => {
    it('reflects columns as logical types, and names a missing table in a ConfigError', async () => {
      await db.exec(
        `CREATE TABLE kinds (id ${d.bigint} PRIMARY KEY, name ${d.varchar(20)}, body ${d.text},
          price ${d.decimal}, ok ${d.bool}, seen ${d.timestamptz})${d.tableSuffix}`,
      );
      await source.beginSnapshot();
      const columns = await source.columns('kinds');
      expect(columns.map((c) => [c.name, c.type])).toEqual([
        ['id', 'bigint'],
        ['name', 'text'],
        ['body', 'text'],
        ['price', 'decimal'],
        ['ok', 'bool'],
        ['seen', 'timestamptz'],
      ]);
      const err = await source.columns('no_such_table').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain('no_such_table');
      await expect(source.maxLogId('no_such_table', 'log_id')).rejects.toBeInstanceOf(ConfigError);
    });

    it('gives the highest logId as a decimal string, or null for an empty table', async () => {
      await db.exec(`CREATE TABLE empty_t (log_id ${d.bigint})${d.tableSuffix}`);
      await source.beginSnapshot();
      expect(await source.maxLogId('empty_t', 'log_id')).toBeNull();
      expect(await source.maxLogId('events', 'log_id')).toBe('25000');
    });

    it('streams more than 10k rows in logId order, within (after, upTo]', async () => {
      const rows = await read('events', '100', '20100');
      expect(rows).toHaveLength(20000);
      expect(rows[0]).toEqual(['101', 'row 101']);
      expect(rows.at(-1)).toEqual(['20100', 'row 20100']);
      expect(rows.every((r, i) => r[0] === String(101 + i))).toBe(true);
    });

    it('keeps memory flat while streaming ~100 MB of rows', async () => {
      await db.exec(
        `CREATE TABLE big (log_id ${d.bigint} PRIMARY KEY, filler ${d.text})${d.tableSuffix}`,
      );
      await db.exec(
        `INSERT INTO big (log_id, filler) SELECT g, ${d.repeat('f', 1024)} FROM ${d.series(100000)}`,
      );
      await source.beginSnapshot();
      const columns = await source.columns('big');
      const start = process.memoryUsage().heapUsed;
      let peak = 0;
      let count = 0;
      const request = { table: 'big', columns, logIdColumn: 'log_id', after: '0', upTo: '100000' };
      for await (const row of source.readChanges(request)) {
        if ((row[1] as string).length !== 1024) throw new Error(`bad row ${row[0]}`);
        if (++count % 5000 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - start);
      }
      expect(count).toBe(100000);
      expect(peak).toBeLessThan(60 * 1024 * 1024);
    });

    it('reads every table in the snapshot of the last beginSnapshot', async () => {
      await db.exec(`CREATE TABLE snap_a (log_id ${d.bigint} PRIMARY KEY)${d.tableSuffix}`);
      await db.exec(`CREATE TABLE snap_b (log_id ${d.bigint} PRIMARY KEY)${d.tableSuffix}`);
      await db.exec(`INSERT INTO snap_a (log_id) VALUES (1), (2)`);
      await db.exec(`INSERT INTO snap_b (log_id) VALUES (1)`);
      await source.beginSnapshot();
      expect(await read('snap_a', '0', '9')).toEqual([['1'], ['2']]);
      await db.exec(`INSERT INTO snap_b (log_id) VALUES (2)`);
      expect(await read('snap_b', '0', '9')).toEqual([['1']]);
      await source.beginSnapshot();
      expect(await read('snap_b', '0', '9')).toEqual([['1'], ['2']]);
    });

    it('stops a read half-way and goes on reading in the same snapshot', async () => {
      await source.beginSnapshot();
      const request = {
        table: 'events',
        columns: await source.columns('events'),
        logIdColumn: 'log_id',
        after: '0',
        upTo: '25000',
      };
      let seen = 0;
      for await (const _row of source.readChanges(request)) if (++seen === 10) break;
      expect(seen).toBe(10);
      expect(await collect(source.readChanges(request))).toHaveLength(25000);
    });

    // A caller that fails elsewhere may leave a read paused without returning it. The read is
    // larger than the socket buffers, so the server is still sending when close() comes.
    it('closes promptly in the middle of a paused read', async () => {
      await db.exec(
        `CREATE TABLE paused (log_id ${d.bigint} PRIMARY KEY, payload ${d.varchar(40)})${d.tableSuffix}`,
      );
      await db.exec(
        `INSERT INTO paused (log_id, payload) SELECT g, ${d.concat("'a paused row '", 'g')} FROM ${d.series(600000)}`,
      );
      const other = await openSource(db.config);
      const rows = other.readChanges({
        table: 'paused',
        columns: await other.columns('paused'),
        logIdColumn: 'log_id',
        after: '0',
        upTo: '600000',
      });
      expect((await rows[Symbol.asyncIterator]().next()).value).toEqual(['1', 'a paused row 1']);
      await other.close();
    });

    it('refuses a missing column with a ConfigError and stays usable', async () => {
      await source.beginSnapshot();
      const columns = [{ name: 'no_such_column', type: 'text' as const }];
      const request = { table: 'events', columns, logIdColumn: 'log_id', after: '0', upTo: '9' };
      const err = await collect(source.readChanges(request)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain('no_such_column');
      expect(await source.maxLogId('events', 'log_id')).toBe('25000');
    });

    it('reads rows 150 columns wide', async () => {
      const names = Array.from({ length: 150 }, (_, i) => `c${i}`);
      await db.exec(
        `CREATE TABLE wide (log_id ${d.bigint}, ${names.map((n) => `${n} ${d.bigint}`).join(', ')})${d.tableSuffix}`,
      );
      await db.exec(`INSERT INTO wide VALUES (1, ${names.map((_, i) => i).join(', ')})`);
      await source.beginSnapshot();
      expect(await read('wide', '0', '1')).toEqual([['1', ...names.map((_, i) => String(i))]]);
    });

    it('finds the n-th logId across tables after their cursors (engines with nthLogId)', async () => {
      const withNth = source as SourceReader & {
        nthLogId?: (r: NthLogIdRequest) => Promise<string | null>;
      };
      if (!withNth.nthLogId) return; // engine-internal: SQL Server's windows need no n-th logId
      await db.exec(`CREATE TABLE nth_t (log_id ${d.bigint} PRIMARY KEY)${d.tableSuffix}`);
      await db.exec(`INSERT INTO nth_t (log_id) VALUES (5), (24999)`);
      await source.beginSnapshot();
      const nth = (n: number) =>
        withNth.nthLogId!({
          tables: [
            { table: 'snap_a', logIdColumn: 'log_id', after: '0' }, // 1, 2
            { table: 'events', logIdColumn: 'log_id', after: '24998' }, // 24999, 25000
            { table: 'nth_t', logIdColumn: 'log_id', after: '0' }, // 5, 24999
          ],
          upTo: '25000',
          n,
        });
      expect(await nth(1)).toBe('1');
      expect(await nth(3)).toBe('5');
      expect(await nth(5)).toBe('24999');
      expect(await nth(6)).toBe('25000');
      expect(await nth(7)).toBeNull();
    });

    it('reads by (timestamp, key) cursor, whole tables by key, and the server time', async () => {
      await db.exec(
        `CREATE TABLE ts_t (id ${d.bigint} PRIMARY KEY, at ${d.timestamptz}, v ${d.varchar(10)})${d.tableSuffix}`,
      );
      const at = (iso: string) => d.instant(iso);
      await db.exec(`INSERT INTO ts_t (id, at, v) VALUES
        (1, ${at('2024-01-01T10:00:00Z')}, 'a'), (2, ${at('2024-01-01T10:00:00Z')}, 'b'),
        (3, ${at('2024-01-01T10:00:00.5Z')}, 'c'), (4, ${at('2024-01-01T11:00:00Z')}, 'd')`);
      await source.beginSnapshot();
      const columns = await source.columns('ts_t');
      const keyset = (after: { ts: string; key: string[] } | null, limit?: number) =>
        collect(
          source.readKeyset({
            table: 'ts_t',
            columns,
            tsColumn: 'at',
            key: ['id'],
            after,
            upTo: '2024-01-01T10:30:00.000000Z',
            limit,
          }),
        );
      expect((await keyset(null, 2)).map((r) => r[0])).toEqual(['1', '2']);
      expect(await keyset({ ts: '2024-01-01T10:00:00.000000Z', key: ['2'] })).toEqual([
        ['3', '2024-01-01T10:00:00.500000Z', 'c'],
      ]);
      const from = await keyset({ ts: '2024-01-01T10:00:00.500000Z', key: [] });
      expect(from.map((r) => r[0])).toEqual(['3']);
      const all = await collect(source.readAll({ table: 'ts_t', columns, key: ['id'] }));
      expect(all.map((r) => r[0])).toEqual(['1', '2', '3', '4']);
      expect(await source.serverTime('timestamptz')).toMatch(
        /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$/,
      );
      expect(await source.serverTime('timestamp')).toMatch(
        /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$/,
      );
    });

    it('installs change capture, reads keys through the change log, and removes it', async () => {
      await db.exec(
        `CREATE TABLE cl_parent (id ${d.bigint} PRIMARY KEY, name ${d.varchar(20)})${d.tableSuffix}`,
      );
      await db.exec(
        `CREATE TABLE cl_child (a ${d.bigint}, b ${d.varchar(10)}, parent ${d.bigint} REFERENCES cl_parent (id),
          PRIMARY KEY (a, b))${d.tableSuffix}`,
      );
      await source.beginSnapshot();
      const tables = await Promise.all(
        ['cl_parent', 'cl_child'].map(async (table) => {
          const columns = await source.columns(table);
          const key = table === 'cl_parent' ? ['id'] : ['a', 'b'];
          return { table, columns, key, keyColumns: columns.filter((c) => key.includes(c.name)) };
        }),
      );
      const capture = {
        changelog: 'ds_log',
        tables: tables.map((t) => ({ table: t.table, key: t.keyColumns })),
      };
      const ddl = await source.captureDdl(capture);
      await source.executeDdl(ddl.install);
      await source.executeDdl((await source.captureDdl(capture)).install); // idempotent
      await source.beginSnapshot();
      await source.checkCapture(capture);
      expect(await source.referencedTables('cl_child')).toEqual(['cl_parent']);

      await db.exec(`INSERT INTO cl_parent (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
      await db.exec(`INSERT INTO cl_child (a, b, parent) VALUES (1, 'x', 1), (2, 'y', 2)`);
      await db.exec(`UPDATE cl_parent SET name = 'ONE' WHERE id = 1`);
      await db.exec(`UPDATE cl_parent SET id = 4 WHERE id = 3`); // a key change
      await db.exec(`DELETE FROM cl_child WHERE a = 2`);
      await source.beginSnapshot();
      // A plain logId as `after`: what every engine stored before exact capture.
      const window = await source.changelogWindow({
        changelog: 'ds_log',
        after: '0',
        maxWaitSeconds: 5,
      });
      expect(window.cursor).not.toBe(window.after);
      if (engine.id === 'pg') expect(window.cursor).toMatch(/^pg:\d+:\d+:/); // PostgreSQL: snapshot positions
      const changes = async (t: (typeof tables)[number]) =>
        (
          await collect(
            source.readChangelog({
              changelog: 'ds_log',
              ...t,
              after: window.after,
              upTo: window.cursor,
            }),
          )
        )
          .map((c) => JSON.stringify(c))
          .sort();
      expect(await changes(tables[0]!)).toEqual(
        [
          { op: 'upsert', row: ['1', 'ONE'] },
          { op: 'upsert', row: ['2', 'two'] },
          { op: 'delete', key: ['3'] },
          { op: 'upsert', row: ['4', 'three'] },
        ]
          .map((c) => JSON.stringify(c))
          .sort(),
      );
      expect(await changes(tables[1]!)).toEqual(
        [
          { op: 'upsert', row: ['1', 'x', '1'] },
          { op: 'delete', key: ['2', 'y'] },
        ]
          .map((c) => JSON.stringify(c))
          .sort(),
      );
      await source.executeDdl(ddl.remove);
      await source.beginSnapshot();
      await expect(source.columns('ds_log')).rejects.toBeInstanceOf(ConfigError);
    });
  });
});
