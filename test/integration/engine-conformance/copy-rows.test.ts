/**
 * TargetTransaction.copyRows conformance (format 2's fast path, docs/format.md): the same upsert
 * as applyRows, fed canonical COPY text in chunks cut anywhere. Runs on every engine whose
 * transaction has copyRows (PostgreSQL COPY, MariaDB LOAD DATA); engines without it are listed as
 * skipped, and load decodes lines for their applyRows instead.
 *
 * The COPY text is written out by hand here, field by field, as the format defines it (an oracle
 * independent of the format layer's encoder), and once by the format layer's own encodeRow (what
 * extract writes must be what every engine reads back).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTarget } from '../../../src/db/index.js';
import type { ColumnInfo, CopyRowsRequest, TargetWriter, WireRow } from '../../../src/db/types.js';
import { DeltaError } from '../../../src/errors.js';
import { encodeRow } from '../../../src/format/copy-text.js';
import { cleanup, collect, engines, type EngineUnderTest, type TestDb } from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));

/** Whether the engine's transactions have copyRows, asked of a real target. */
async function hasCopyRows(engine: EngineUnderTest): Promise<boolean> {
  if (!engine.available) return false;
  const db = await engine.fresh(`probe${engine.id}`);
  try {
    const target = await openTarget(db.config);
    try {
      return await target.transaction(async (tx) => typeof tx.copyRows === 'function');
    } finally {
      await target.close();
    }
  } finally {
    await db.close();
  }
}
const WITH_COPY = await Promise.all(ENGINES.map(hasCopyRows));

// The engines with a fast path must keep it: losing copyRows would silently skip every case below
// and fall back to decoding lines (slower, and no longer what this suite checks).
it.each(
  ENGINES.filter((e) => e.available && (e.id === 'pg' || e.id === 'mysql')).map((e) => e.name),
)('%s offers copyRows', (name) => {
  expect(WITH_COPY[ENGINES.findIndex((e) => e.name === name)]).toBe(true);
});

/** One field of a COPY text line: NULL is \N; backslash and the control characters escaped. */
function field(value: string | null): string {
  if (value === null) return '\\N';
  return value.replace(/[\\\n\r\t\b\f\v]/g, (c) =>
    c === '\\'
      ? '\\\\'
      : c === '\n'
        ? '\\n'
        : c === '\r'
          ? '\\r'
          : c === '\t'
            ? '\\t'
            : c === '\b'
              ? '\\b'
              : c === '\f'
                ? '\\f'
                : '\\v',
  );
}
const text = (rows: (string | null)[][]) =>
  Buffer.from(rows.map((r) => r.map(field).join('\t') + '\n').join(''));

/** The bytes in chunks of `size`, cut without regard to lines or characters. */
async function* chunks(data: Buffer, size: number, failure?: Error): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
  if (failure) throw failure;
}

const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'bigint' },
  { name: 'name', type: 'text' },
  { name: 'score', type: 'bigint' },
];

describe.each(ENGINES.map((e, i) => [e.name, e, WITH_COPY[i]!] as const))(
  'copyRows on %s',
  (_name, engine, withCopy) => {
    const d = engine.dialect;
    let db: TestDb;
    let target: TargetWriter;
    const copy = (request: Omit<CopyRowsRequest, 'key'>) =>
      target.transaction((tx) => tx.copyRows!({ key: ['id'], ...request }));
    const contents = async (table: string) =>
      collect(target.readAll({ table, columns: (await target.columns(table))!, key: ['id'] }));

    beforeAll(async () => {
      if (!withCopy) return;
      db = await engine.fresh(`copy${engine.id}`);
      target = await openTarget(db.config);
      await target.prepare();
    });

    afterAll(async () => {
      await target?.close();
      await db?.close();
    });

    describe.skipIf(!withCopy)(withCopy ? '' : `${engine.name}: no copyRows (or no server)`, () => {
      it('upserts by key from text cut anywhere, the last line of a key winning', async () => {
        await db.exec(
          `CREATE TABLE synced (id ${d.bigint} PRIMARY KEY, name ${d.varchar(50)}, score ${d.bigint},
              note ${d.varchar(50)} DEFAULT 'user')${d.tableSuffix}`,
        );
        const first = text([
          ['1', 'a', '1'],
          ['2', 'b', '2'],
        ]);
        expect(
          await copy({
            table: 'synced',
            columns: COLUMNS,
            keep: [0, 1, 2],
            data: chunks(first, 1),
          }),
        ).toBe(2);
        await db.exec(`UPDATE synced SET note = 'edited by a user' WHERE id = 1`);
        const second = text([
          ['1', 'A', '10'],
          ['3', 'c', '3'],
          ['3', 'C', '30'],
          ['2', '', null],
        ]);
        expect(
          await copy({
            table: 'synced',
            columns: COLUMNS,
            keep: [0, 1, 2],
            data: chunks(second, 7),
          }),
        ).toBe(4);
        expect(await contents('synced')).toEqual([
          ['1', 'A', '10', 'edited by a user'],
          ['2', '', null, 'user'],
          ['3', 'C', '30', 'user'],
        ]);
      });

      it('writes only the kept columns', async () => {
        await db.exec(
          `CREATE TABLE kept (id ${d.bigint} PRIMARY KEY, score ${d.bigint})${d.tableSuffix}`,
        );
        const columns: ColumnInfo[] = [
          { name: 'id', type: 'bigint' },
          { name: 'gone', type: 'text' },
          { name: 'score', type: 'bigint' },
        ];
        const data = text([
          ['1', 'not on the replica', '5'],
          ['2', null, '6'],
        ]);
        expect(await copy({ table: 'kept', columns, keep: [0, 2], data: chunks(data, 1000) })).toBe(
          2,
        );
        expect(await contents('kept')).toEqual([
          ['1', '5'],
          ['2', '6'],
        ]);
      });

      it('keeps text exactly: escapes, \\N as text, empty strings, emoji, 1 MB', async () => {
        await db.exec(
          `CREATE TABLE texts (id ${d.bigint} PRIMARY KEY, body ${d.text})${d.tableSuffix}`,
        );
        const values = [
          'tab\there\nnew line\r\\N back\\slash \\x00 ünï 😀',
          '\\N',
          '',
          '\b\f\v\u0001',
          'x'.repeat((1 << 20) - 3) + '\t\n\\',
          null,
        ];
        const data = text(values.map((v, i) => [String(i), v]));
        const columns: ColumnInfo[] = [
          { name: 'id', type: 'bigint' },
          { name: 'body', type: 'text' },
        ];
        expect(
          await copy({ table: 'texts', columns, keep: [0, 1], data: chunks(data, 4093) }),
        ).toBe(values.length);
        const back = await contents('texts');
        expect(back.map((r) => r[1])).toEqual(values);
      });

      it('reads decimals, booleans and instants in their canonical text', async () => {
        await db.exec(
          `CREATE TABLE typed (id ${d.bigint} PRIMARY KEY, price ${d.decimal}, ok ${d.bool},
              seen ${d.timestamptz})${d.tableSuffix}`,
        );
        const columns: ColumnInfo[] = [
          { name: 'id', type: 'bigint' },
          { name: 'price', type: 'decimal' },
          { name: 'ok', type: 'bool' },
          { name: 'seen', type: 'timestamptz' },
        ];
        const data = text([
          ['1', '-12.50', 't', '2024-01-01 10:00:00.5+00'],
          ['2', '0.00', 'f', '1970-01-01 00:00:01.000001+00'],
          ['3', null, null, null],
        ]);
        await copy({ table: 'typed', columns, keep: [0, 1, 2, 3], data: chunks(data, 3) });
        expect(await contents('typed')).toEqual([
          ['1', '-12.50', true, '2024-01-01T10:00:00.500000Z'],
          ['2', '0.00', false, '1970-01-01T00:00:01.000001Z'],
          ['3', null, null, null],
        ]);
      });

      it('reads back what the format layer writes (src/format/copy-text.ts)', async () => {
        await db.exec(
          `CREATE TABLE written (id ${d.bigint} PRIMARY KEY, body ${d.text}, price ${d.decimal},
            ok ${d.bool}, seen ${d.timestamptz})${d.tableSuffix}`,
        );
        const columns: ColumnInfo[] = [
          { name: 'id', type: 'bigint' },
          { name: 'body', type: 'text' },
          { name: 'price', type: 'decimal' },
          { name: 'ok', type: 'bool' },
          { name: 'seen', type: 'timestamptz' },
        ];
        const rows: WireRow[] = [
          ['9223372036854775807', 'a\tb\\N\n\\\r😀', '-12.50', true, '2024-02-29T23:59:59.999999Z'],
          ['-9223372036854775808', '\\N', '0.00', false, '1970-01-01T00:00:00.000001Z'],
          ['1', '', null, null, null],
        ];
        const types = columns.map((c) => c.type);
        const data = Buffer.from(rows.map((r) => encodeRow(r, types)).join(''));
        const n = await copy({
          table: 'written',
          columns,
          keep: [0, 1, 2, 3, 4],
          data: chunks(data, 5),
        });
        expect(n).toBe(3);
        const back = await collect(target.readAll({ table: 'written', columns, key: ['id'] }));
        expect(back).toEqual([rows[1], rows[2], rows[0]]);
      });

      it('rolls everything back when the data throws at its end, with that error', async () => {
        const before = await contents('synced');
        const rows = Array.from({ length: 20000 }, (_, i) => [
          String(1000 + i),
          'n'.repeat(40),
          String(i),
        ]);
        const failure = new DeltaError('checksum mismatch in part 2');
        const err = await target
          .transaction(async (tx) => {
            await tx.recordApplied({ job: 'copyjob', logId: '5', delta: 'd' });
            return tx.copyRows!({
              table: 'synced',
              key: ['id'],
              columns: COLUMNS,
              keep: [0, 1, 2],
              data: chunks(text(rows), 65536, failure),
            });
          })
          .catch((e: unknown) => e);
        expect(err).toBe(failure);
        expect(await contents('synced')).toEqual(before);
        expect(await target.appliedLogId('copyjob')).toBeNull();
      });

      it('rolls back a load into an empty table that fails', async () => {
        await db.exec(
          `CREATE TABLE empty_t (id ${d.bigint} PRIMARY KEY, name ${d.varchar(50)}, score ${d.bigint})${d.tableSuffix}`,
        );
        const failure = new DeltaError('truncated part file');
        const data = text(Array.from({ length: 5000 }, (_, i) => [String(i), 'x', null]));
        await expect(
          copy({
            table: 'empty_t',
            columns: COLUMNS,
            keep: [0, 1, 2],
            data: chunks(data, 8192, failure),
          }),
        ).rejects.toBe(failure);
        expect(await contents('empty_t')).toEqual([]);
      });

      it('refuses a value that does not fit its column (DeltaError naming the column)', async () => {
        const err = await copy({
          table: 'synced',
          columns: COLUMNS,
          keep: [0, 1, 2],
          data: chunks(text([['9', 'y'.repeat(51), '1']]), 100),
        }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DeltaError);
        expect((err as Error).message).toContain('name');
      });
    });
  },
);
