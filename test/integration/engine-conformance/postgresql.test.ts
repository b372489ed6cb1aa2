/**
 * Engine-specific cases, PostgreSQL only: its native types, a logId taken by a transaction that
 * has no xid yet, and upserts that leave unchanged rows untouched (no new row version). The
 * contract itself is checked for every engine by the other files of this folder.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../../src/db/index.js';
import { cleanup, collect, engines, rowsOf, type TestDb } from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));
const engine = ENGINES.find((e) => e.id === 'pg')!;

describe.skipIf(!engine.available)(`PostgreSQL only ${engine.server?.reason ?? ''}`, () => {
  let db: TestDb;
  const url = () => db.config.connection as string;

  beforeAll(async () => {
    db = await engine.fresh('pgonly');
  });

  afterAll(async () => {
    await db?.close();
  });

  it('reflects native types as logical types with their native names', async () => {
    await db.exec(`CREATE DOMAIN money_amount AS numeric(12,2)`);
    await db.exec(`CREATE TYPE mood AS ENUM ('sad', 'happy')`);
    await db.exec(`CREATE TABLE kinds (
      id int PRIMARY KEY, s smallint, b bigint, n numeric(38,10), r real, d double precision,
      f boolean, t text, v varchar(20), c char(3), by bytea, dt date, tm time(3), ts timestamp,
      tz timestamptz, j json, jb jsonb, u uuid, amount money_amount, m mood, a int[],
      iv interval, "Mixed Case" text)`);
    const source = await openSource(db.config);
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

  it('reads maxLogId in the open snapshot too (MariaDB: a new mark ends the snapshot instead)', async () => {
    await db.exec(`CREATE TABLE snap (log_id bigint PRIMARY KEY)`);
    await db.exec(`INSERT INTO snap SELECT g FROM generate_series(1, 100) g`);
    const source = await openSource(db.config);
    try {
      await source.beginSnapshot();
      const columns = await source.columns('snap');
      const request = { table: 'snap', columns, logIdColumn: 'log_id', after: '0', upTo: '200' };
      for await (const _row of source.readChanges(request)) break;
      await db.exec(`INSERT INTO snap VALUES (101)`);
      expect(await source.maxLogId('snap', 'log_id')).toBe('100');
      expect(await collect(source.readChanges(request))).toHaveLength(100);
    } finally {
      await source.close();
    }
  });

  it('logid window: waits for every transaction open at the mark, xid or not', async () => {
    await db.exec(`CREATE TABLE hw (log_id bigserial PRIMARY KEY, v text)`);
    await db.exec(`INSERT INTO hw (v) VALUES ('a')`); // log_id 1
    const slow = new pg.Client({ connectionString: url() });
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
      await db.exec(`INSERT INTO hw (v) VALUES ('fast')`); // log_id 3, committed
      const source = await openSource(db.config);
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

  it('does not rewrite rows of a base table that did not change (xmin stays)', async () => {
    await db.exec(`CREATE TABLE synced (id bigint PRIMARY KEY, name text, doc json)`);
    const target = await openTarget(db.config);
    const columns = [
      { name: 'id', type: 'bigint' as const },
      { name: 'name', type: 'text' as const },
      { name: 'doc', type: 'json' as const },
    ];
    const apply = (rows: [string, string, string | null][]) =>
      target.transaction((tx) =>
        tx.applyRows({
          table: 'synced',
          key: ['id'],
          columns,
          rows: rowsOf(rows),
          // A base table, mostly rows the replica has: never replaced (see copyPaths).
          keepUnchanged: true,
        }),
      );
    try {
      await apply([
        ['1', 'ONE', '{"a": 2}'],
        ['2', 'two', null],
      ]);
      const before = await db.rows(`SELECT id, xmin::text FROM synced ORDER BY id`);
      await apply([
        ['1', 'ONE', '{"a": 2}'],
        ['2', 'two', null],
      ]);
      expect(await db.rows(`SELECT id, xmin::text FROM synced ORDER BY id`)).toEqual(before);
      // json keeps its text as written, whitespace and escapes and all.
      await apply([['3', 'x', '{"s": "a\\"b\\\\c\\n"}']]);
      expect(await db.rows(`SELECT doc::text FROM synced WHERE id IN (1, 3) ORDER BY id`)).toEqual([
        ['{"a": 2}'],
        ['{"s": "a\\"b\\\\c\\n"}'],
      ]);
    } finally {
      await target.close();
    }
  });

  it('stages a column in the type its values came out of: exact values, unchanged rows untouched, the last of a repeated key wins', async () => {
    await db.exec(
      `CREATE TABLE same_types (id bigint PRIMARY KEY, amount numeric(12,2), email varchar(20), doc jsonb, note text)`,
    );
    await db.exec(
      `INSERT INTO same_types VALUES (1, 1.10, 'a@x', '{"a": 1}', 'mine'), (2, 2.20, NULL, NULL, 'mine')`,
    );
    // nativeType as a PostgreSQL source with the replica's schema writes it: no check, and
    // (since this change) no cast either.
    const columns = [
      { name: 'id', type: 'bigint' as const, nativeType: 'bigint' },
      { name: 'amount', type: 'decimal' as const, nativeType: 'numeric(12,2)' },
      { name: 'email', type: 'text' as const, nativeType: 'character varying(20)' },
      { name: 'doc', type: 'json' as const, nativeType: 'jsonb' },
    ];
    const target = await openTarget(db.config);
    try {
      const before = await db.rows(`SELECT id, xmin::text FROM same_types ORDER BY id`);
      await target.transaction((tx) =>
        tx.applyRows({
          table: 'same_types',
          key: ['id'],
          columns,
          rows: rowsOf([
            ['1', '1.10', 'a@x', '{"a": 1}'],
            ['3', '9999999999.99', 'c@x', '{"b": [1, 2]}'],
            ['3', '0.01', null, '{"b": 3}'],
          ]),
        }),
      );
      expect(
        await db.rows(`SELECT id, xmin::text FROM same_types WHERE id <= 2 ORDER BY id`),
      ).toEqual(before);
      expect(
        await db.rows(
          `SELECT id, amount::text, email, doc::text, note FROM same_types ORDER BY id`,
        ),
      ).toEqual([
        ['1', '1.10', 'a@x', '{"a": 1}', 'mine'],
        ['2', '2.20', null, null, 'mine'],
        ['3', '0.01', null, '{"b": 3}', null],
      ]);
      // The loader's session holds a batch's stage in memory (see STAGE_TEMP_BUFFERS).
      await target.execute(
        `DO $$ BEGIN IF current_setting('temp_buffers') <> '32MB' THEN
           RAISE EXCEPTION 'temp_buffers is %', current_setting('temp_buffers'); END IF; END $$`,
      );
    } finally {
      await target.close();
    }
  });
});
