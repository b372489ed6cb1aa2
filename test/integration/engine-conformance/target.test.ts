/**
 * TargetWriter / TargetTransaction conformance: reflection, upserts that write only the delta's
 * columns and let the last row of a key win (within a load batch and across batches, into an
 * empty table and a full one), all-or-nothing transactions, the bookkeeping row, deletes, relaxed
 * foreign keys, and every refusal an operator must be able to tell apart. MariaDB runs twice,
 * once per load strategy (LOAD DATA LOCAL INFILE and multi-row INSERT).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTarget } from '../../../src/db/index.js';
import type { ColumnInfo, TargetWriter, WireRow } from '../../../src/db/types.js';
import { ConfigError, DeltaError } from '../../../src/errors.js';
import {
  cleanup,
  collect,
  engines,
  readable,
  rowsOf,
  type EngineUnderTest,
  type TestDb,
} from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));

interface TargetUnderTest {
  engine: EngineUnderTest;
  open(db: TestDb): Promise<TargetWriter>;
}

const TARGETS: [string, TargetUnderTest][] = ENGINES.flatMap((engine) =>
  engine.id === 'mysql'
    ? (['infile', 'insert'] as const).map((strategy): [string, TargetUnderTest] => [
        `${engine.name} (${strategy})`,
        {
          engine,
          open: async (db) => {
            const { MysqlTarget } = await import('../../../src/db/mysql/target.js');
            return MysqlTarget.open(db.config, { loadStrategy: strategy });
          },
        },
      ])
    : [[engine.name, { engine, open: (db) => openTarget(db.config) }]],
);

const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'bigint' },
  { name: 'name', type: 'text' },
  { name: 'score', type: 'bigint' },
];
const BODY: ColumnInfo[] = [
  { name: 'id', type: 'bigint' },
  { name: 'body', type: 'text' },
];
const MB = 1 << 20;

describe.each(TARGETS)('TargetWriter on %s', (_name, { engine, open }) => {
  const d = engine.dialect;
  let db: TestDb;
  let target: TargetWriter;
  const apply = (table: string, rows: WireRow[] | AsyncIterable<WireRow>, columns = COLUMNS) =>
    target.transaction((tx) =>
      tx.applyRows({
        table,
        key: ['id'],
        columns,
        rows: Array.isArray(rows) ? rowsOf(rows) : rows,
      }),
    );
  const contents = async (table: string) =>
    collect(target.readAll({ table, columns: (await target.columns(table))!, key: ['id'] }));
  const table = (name: string, columns: string) =>
    db.exec(`CREATE TABLE ${name} (${columns})${d.tableSuffix}`);

  beforeAll(async () => {
    if (!engine.available) return;
    db = await engine.fresh(`dst${engine.id}`);
    await table(
      'synced',
      `id ${d.bigint} PRIMARY KEY, name ${d.varchar(50)}, score ${d.bigint}, note ${d.varchar(50)} DEFAULT 'user'`,
    );
    target = await open(db);
    await target.prepare();
    await target.prepare(); // idempotent
  });

  afterAll(async () => {
    await target?.close();
    await db?.close();
  });

  describe.skipIf(!engine.available)(engine.server?.reason ?? '', () => {
    it('reflects the target columns, and null for a missing table', async () => {
      expect((await target.columns('synced'))?.map((c) => [c.name, c.type])).toEqual([
        ['id', 'bigint'],
        ['name', 'text'],
        ['score', 'bigint'],
        ['note', 'text'],
      ]);
      expect(await target.columns('no_such_table')).toBeNull();
    });

    it('upserts by key, lets the last row of a key win, leaves other columns alone', async () => {
      expect(
        await apply('synced', [
          ['1', 'a', '1'],
          ['2', 'b', '2'],
        ]),
      ).toBe(2);
      await db.exec(`UPDATE synced SET note = 'edited by a user' WHERE id = 1`);
      expect(
        await apply('synced', [
          ['1', 'A', '10'],
          ['3', 'c', '3'],
          ['3', 'C', '30'],
          ['2', '', null],
        ]),
      ).toBe(4);
      expect(await contents('synced')).toEqual([
        ['1', 'A', '10', 'edited by a user'],
        ['2', '', null, 'user'],
        ['3', 'C', '30', 'user'],
      ]);
    });

    it('loads an empty table and a full one, the last row winning across load batches', async () => {
      await table('bulk', `id ${d.bigint} PRIMARY KEY, body ${d.text}`);
      const big = (c: string) => c.repeat(MB);
      // Into the empty table (a direct load where the engine has one), 12 MB between versions.
      const first: WireRow[] = [
        ['1', 'first'],
        ['2', 'two'],
        ['1', 'second'],
      ];
      for (let i = 0; i < 12; i++) first.push([String(100 + i), big('w')]);
      first.push(['2', 'TWO']);
      expect(await apply('bulk', first, BODY)).toBe(first.length);
      let rows = await contents('bulk');
      expect(rows).toHaveLength(14);
      expect(rows.slice(0, 2)).toEqual([
        ['1', 'second'],
        ['2', 'TWO'],
      ]);
      // Into the full table, 20 MB between the two versions of key 5.
      const second: WireRow[] = [['5', 'early']];
      for (let i = 0; i < 20; i++) second.push([String(200 + i), big('y')]);
      second.push(['5', 'late']);
      expect(await apply('bulk', second, BODY)).toBe(22);
      rows = await contents('bulk');
      expect(rows.find((r) => r[0] === '5')).toEqual(['5', 'late']);
      expect(rows).toHaveLength(14 + 21);
    });

    it('rolls back a load into an empty table that fails half-way', async () => {
      await table('bulk2', `id ${d.bigint} PRIMARY KEY, body ${d.text}`);
      const rows = Array.from({ length: 30 }, (_, i): WireRow => [String(i), 'v'.repeat(MB)]);
      const failure = new DeltaError('truncated part file');
      await expect(apply('bulk2', rowsOf(rows, { at: 30, error: failure }), BODY)).rejects.toBe(
        failure,
      );
      expect(await contents('bulk2')).toEqual([]);
    });

    it('keeps text exactly, whatever it holds, and loads an empty delta', async () => {
      await table('texts', `id ${d.bigint} PRIMARY KEY, body ${d.text}`);
      const values = [
        'tab\there\nnew line\r\\N back\\slash \\x00 ünï 😀',
        '\\N',
        '',
        '\b\f\v\u0001',
        'x'.repeat(MB - 3) + '\t\n\\',
        null,
      ];
      await apply(
        'texts',
        values.map((v, i): WireRow => [String(i), v]),
        BODY,
      );
      const back = await contents('texts');
      const want = values.map((v, i): WireRow => [String(i), v]);
      expect(readable(back)).toEqual(readable(want));
      expect(back).toEqual(want);
      expect(await apply('texts', [], BODY)).toBe(0);
    });

    it('records the applied logId inside the transaction, and forgets it on rollback', async () => {
      const job = 'jobA';
      expect(await target.appliedLogId(job)).toBeNull();
      await target.transaction(async (tx) => {
        expect(await tx.appliedLogId(job)).toBeNull();
        await tx.recordApplied({ job, logId: '18446744073709551616', delta: 'd1.manifest' });
        expect(await tx.appliedLogId(job)).toBe('18446744073709551616');
      });
      expect(await target.appliedLogId(job)).toBe('18446744073709551616');
      await target.transaction((tx) => tx.recordApplied({ job, logId: '100', delta: 'd2' }));
      expect(await target.appliedLogId(job)).toBe('100');
      await expect(
        target.transaction(async (tx) => {
          await tx.recordApplied({ job, logId: '200', delta: 'd3' });
          throw new Error('crash before commit');
        }),
      ).rejects.toThrow('crash before commit');
      expect(await target.appliedLogId(job)).toBe('100');
    });

    it('rolls everything back when the rows fail half-way, with the rows’ error', async () => {
      const before = await contents('synced');
      const failure = new DeltaError('checksum mismatch in part 2');
      // 20,000 rows of 1 KB: several load batches are sent inside the transaction before it fails.
      const many = Array.from({ length: 20000 }, (_, i): WireRow => [
        String(1000 + i),
        'n'.repeat(40),
        String(i),
      ]);
      const err = await target
        .transaction(async (tx) => {
          await tx.applyRows({
            table: 'synced',
            key: ['id'],
            columns: COLUMNS,
            rows: rowsOf([['1', 'changed', null]]),
          });
          await tx.recordApplied({ job: 'jobB', logId: '5', delta: 'd' });
          return tx.applyRows({
            table: 'synced',
            key: ['id'],
            columns: COLUMNS,
            rows: rowsOf(many, { at: 15000, error: failure }),
          });
        })
        .catch((e: unknown) => e);
      expect(err).toBe(failure);
      expect(await contents('synced')).toEqual(before);
      expect(await target.appliedLogId('jobB')).toBeNull();
      expect(await apply('synced', [['7', 'after the failure', null]])).toBe(1); // still usable
    });

    it('refuses a row of the wrong width with a DeltaError', async () => {
      await expect(apply('synced', [['8', 'two values only']])).rejects.toBeInstanceOf(DeltaError);
    });

    it.skipIf(engine.id === 'sqlite')(
      'refuses a value that does not fit its column instead of truncating it (not SQLite: no lengths)',
      async () => {
        const err = await apply('synced', [
          ['5', 'e', '5'],
          ['6', 'y'.repeat(51), '6'],
        ]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DeltaError);
        expect((err as Error).message).toContain('name');
        expect((await contents('synced')).filter((r) => r[0] === '5' || r[0] === '6')).toEqual([]);
      },
    );

    it('refuses a missing table, a missing column and a key without a unique index (ConfigError)', async () => {
      const missingTable = await apply('nope', [['1', 'x', null]]).catch((e: unknown) => e);
      expect(missingTable).toBeInstanceOf(ConfigError);
      expect((missingTable as Error).message).toContain('nope');
      const missingColumn = await apply(
        'synced',
        [],
        [...COLUMNS, { name: 'nocol', type: 'bigint' }],
      ).catch((e: unknown) => e);
      expect(missingColumn).toBeInstanceOf(ConfigError);
      expect((missingColumn as Error).message).toContain('nocol');
      await table('nokey', `id ${d.bigint}, name ${d.varchar(50)}, score ${d.bigint}`);
      const noKey = await apply('nokey', [['1', 'x', null]]).catch((e: unknown) => e);
      expect(noKey).toBeInstanceOf(ConfigError);
      expect((noKey as Error).message).toContain('id');
    });

    it('deletes rows by key, reads the table back by key, and runs a hook statement', async () => {
      await table(
        'del_t',
        `a ${d.bigint}, b ${d.varchar(10)}, v ${d.varchar(10)}, PRIMARY KEY (a, b)`,
      );
      await db.exec(`INSERT INTO del_t (a, b, v) VALUES (1, 'x', 'keep'), (2, 'y', 'drop')`);
      await target.transaction((tx) =>
        tx.applyRows({
          table: 'del_t',
          key: ['a', 'b'],
          columns: [
            { name: 'a', type: 'bigint' },
            { name: 'b', type: 'text' },
            { name: 'v', type: 'text' },
          ],
          rows: rowsOf([['3', 'z\ttab', 'drop']]),
        }),
      );
      const key: ColumnInfo[] = [
        { name: 'a', type: 'bigint' },
        { name: 'b', type: 'text' },
      ];
      const deleted = await target.transaction((tx) =>
        tx.deleteRows({
          table: 'del_t',
          key,
          rows: rowsOf([
            ['2', 'y'],
            ['3', 'z\ttab'],
            ['9', 'none'],
          ]),
        }),
      );
      expect(deleted).toBe(2);
      const columns = (await target.columns('del_t'))!;
      expect(await collect(target.readAll({ table: 'del_t', columns, key: ['a', 'b'] }))).toEqual([
        ['1', 'x', 'keep'],
      ]);
      await target.execute(`UPDATE del_t SET v = 'hooked'`);
      expect(await collect(target.readAll({ table: 'del_t', columns, key: ['a', 'b'] }))).toEqual([
        ['1', 'x', 'hooked'],
      ]);
    });

    it('deletes every row whose key is not given (a base table)', async () => {
      await table('base_t', `id ${d.bigint} PRIMARY KEY, v ${d.varchar(10)}`);
      await db.exec(`INSERT INTO base_t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')`);
      const deleted = await target.transaction((tx) =>
        tx.deleteRowsNotIn({
          table: 'base_t',
          key: [{ name: 'id', type: 'bigint' }],
          rows: rowsOf([['2'], ['4'], ['5']]),
        }),
      );
      expect(deleted).toBe(2);
      expect((await contents('base_t')).map((r) => r[0])).toEqual(['2', '4']);
    });

    it('applies rows that reference each other in any order once foreign keys are relaxed', async () => {
      await table('fk_parent', `id ${d.bigint} PRIMARY KEY`);
      await table(
        'fk_child',
        `id ${d.bigint} PRIMARY KEY, parent ${d.bigint} REFERENCES fk_parent (id)`,
      );
      const id: ColumnInfo = { name: 'id', type: 'bigint' };
      await target.transaction(async (tx) => {
        await tx.relaxForeignKeys(['fk_child', 'fk_parent']);
        await tx.applyRows({
          table: 'fk_child',
          key: ['id'],
          columns: [id, { name: 'parent', type: 'bigint' }],
          rows: rowsOf([['1', '10']]),
        });
        await tx.applyRows({
          table: 'fk_parent',
          key: ['id'],
          columns: [id],
          rows: rowsOf([['10']]),
        });
      });
      expect(await contents('fk_child')).toEqual([['1', '10']]);
    });
  });
});
