import { Readable } from 'node:stream';
import sql from 'mssql';
import tedious from 'tedious';
import { describe, expect, it } from 'vitest';
import { DeltaError } from '../../src/errors.js';
import type { ColumnInfo, WireRow } from '../../src/db/types.js';
import { planApply } from '../../src/db/mssql/load.js';
import { toWireRows } from '../../src/db/mssql/source.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { bulkTable, driverType, stageInBatches } from '../../src/db/mssql/target.js';
import { wireReader } from '../../src/db/mssql/types.js';
import { column } from '../helpers/mssql.js';

const STAGE = '#stage_t_00000000';
/** One target column per staging shape: every driver type the adapter bulk loads. */
const target = [
  column('id', 'bigint'),
  column('small', 'smallint'),
  column('tiny', 'tinyint'),
  column('n', 'int'),
  column('big_dec', 'decimal', { num_precision: 20, num_scale: 0 }),
  column('amount', 'decimal', { num_precision: 38, num_scale: 10 }),
  column('ratio', 'float'),
  column('flag', 'bit'),
  column('name', 'nvarchar', { max_length: 200, collation_name: 'Latin1_General_CI_AS' }),
  column('doc', 'nvarchar', { max_length: -1, collation_name: 'Latin1_General_CI_AS' }),
  column('hash', 'binary', { max_length: 32 }),
  column('blob', 'varbinary', { max_length: -1 }),
  column('uid', 'uniqueidentifier'),
  column('day', 'date'),
  column('at', 'datetimeoffset', { num_scale: 7 }),
];
const delta: ColumnInfo[] = [
  { name: 'id', type: 'bigint' },
  { name: 'small', type: 'int' },
  { name: 'tiny', type: 'int' },
  { name: 'n', type: 'int' },
  { name: 'big_dec', type: 'bigint' },
  { name: 'amount', type: 'decimal' },
  { name: 'ratio', type: 'float' },
  { name: 'flag', type: 'bool' },
  { name: 'name', type: 'text' },
  { name: 'doc', type: 'json' },
  { name: 'hash', type: 'binary' },
  { name: 'blob', type: 'binary' },
  { name: 'uid', type: 'uuid' },
  { name: 'day', type: 'date' },
  { name: 'at', type: 'timestamptz' },
];
const plan = planApply(tableName('t', 'dbo'), ['id'], delta, target, STAGE);

/** `nvarchar (50)` / `NVARCHAR(50) COLLATE x` -> `nvarchar(50)`: the type, nothing else. */
function normalise(ddl: string): string {
  return ddl
    .toLowerCase()
    .replace(/ collate \w+/g, '')
    .replace(/(\w) \(/g, '$1(');
}

describe('bulk table column definitions', () => {
  it('declare exactly the columns the staging DDL creates (what INSERT BULK will send)', () => {
    const table = bulkTable(STAGE, plan.staging, []);
    expect(table.path).toBe('[#stage_t_00000000]');
    expect(table.temporary).toBe(true);
    expect(table.create).toBe(false);
    const declared = (table as unknown as { declare(): string }).declare();
    expect(normalise(declared)).toBe(normalise(plan.createStaging));
    // and spelled out, so that a change to both sides is still visible here
    expect(normalise(plan.createStaging)).toBe(
      'create table [#stage_t_00000000] ([c0] bigint null, [c1] bigint null, [c2] bigint null, ' +
        '[c3] bigint null, [c4] varchar(40) null, [c5] varchar(100) null, [c6] float null, ' +
        '[c7] bit null, [c8] nvarchar(max) null, [c9] nvarchar(max) null, [c10] varbinary(max) null, ' +
        '[c11] varbinary(max) null, [c12] uniqueidentifier null, [c13] varchar(10) null, ' +
        '[c14] varchar(28) null, [seq] bigint not null)',
    );
  });

  it('marks (max) columns with the length mssql and tedious read as max', () => {
    expect(driverType({ driver: 'NVarChar', length: 'max' })).toMatchObject({
      type: sql.NVarChar,
      length: sql.MAX,
    });
    expect(driverType({ driver: 'VarBinary', length: 32 })).toMatchObject({ length: 32 });
    expect(driverType({ driver: 'UniqueIdentifier' })).toMatchObject({
      type: sql.UniqueIdentifier,
    });
  });

  it('carries the rows as given, each ending with its seq', () => {
    const table = bulkTable(STAGE, plan.staging, [
      [1n, 0],
      [2n, 1],
    ]);
    expect(table.rows).toEqual([
      [1n, 0],
      [2n, 1],
    ]);
  });
});

const wireRow: WireRow = [
  '9007199254740993',
  -32768,
  255,
  2147483647,
  '18446744073709551615',
  '-1234567890123456789012345678.1234567890',
  0.1,
  true,
  'Zoë',
  '{"a":1}',
  'AAEC/w==',
  '',
  '0e984725-c51c-4bf4-9960-e1c80e27aba0',
  '2024-02-29',
  '2024-03-01T08:15:30.123456Z',
];

async function* rowsOf(rows: WireRow[], failAfter?: number): AsyncGenerator<WireRow> {
  for (const [i, row] of rows.entries()) {
    if (failAfter !== undefined && i === failAfter) throw new Error('checksum mismatch in part 3');
    yield row;
  }
}

describe('stageInBatches', () => {
  it('converts every value for its driver type and numbers rows in delta order', async () => {
    const batches: unknown[][][] = [];
    const count = await stageInBatches(rowsOf([wireRow]), plan.staging, async (b) => {
      batches.push(b);
    });
    expect(count).toBe(1);
    expect(batches).toEqual([
      [
        [
          9007199254740993n,
          -32768,
          255,
          2147483647,
          '18446744073709551615',
          '-1234567890123456789012345678.1234567890',
          0.1,
          true,
          'Zoë',
          '{"a":1}',
          Buffer.from([0, 1, 2, 255]),
          Buffer.alloc(0),
          '0e984725-c51c-4bf4-9960-e1c80e27aba0',
          '2024-02-29',
          '2024-03-01T08:15:30.123456Z',
          0,
        ],
      ],
    ]);
  });

  it('flushes full batches as it goes, so memory holds one batch at most', async () => {
    const rows = Array.from({ length: 25 }, (_, i) => [
      String(i),
      0,
      0,
      0,
      null,
      null,
      null,
      null,
      null,
      null,
      null,
      null,
      null,
      null,
      null,
    ]);
    const sizes: number[] = [];
    const seqs: unknown[] = [];
    const count = await stageInBatches(
      rowsOf(rows),
      plan.staging,
      async (b) => {
        sizes.push(b.length);
        seqs.push(...b.map((r) => r[r.length - 1]));
      },
      10,
    );
    expect(count).toBe(25);
    expect(sizes).toEqual([10, 10, 5]);
    expect(seqs).toEqual(Array.from({ length: 25 }, (_, i) => i));
  });

  it('flushes nothing for no rows', async () => {
    let flushes = 0;
    expect(await stageInBatches(rowsOf([]), plan.staging, async () => void flushes++)).toBe(0);
    expect(flushes).toBe(0);
  });

  it('propagates the error of a failing iterable and flushes nothing after it', async () => {
    const rows = Array.from({ length: 25 }, () => wireRow);
    const sizes: number[] = [];
    await expect(
      stageInBatches(rowsOf(rows, 12), plan.staging, async (b) => void sizes.push(b.length), 10),
    ).rejects.toThrow('checksum mismatch in part 3');
    expect(sizes).toEqual([10]);
  });

  it("refuses a row whose width is not the delta's", async () => {
    await expect(stageInBatches(rowsOf([[1, 2]]), plan.staging, async () => {})).rejects.toThrow(
      DeltaError,
    );
  });
});

describe('what tedious does with the staged values', () => {
  const { TYPES } = tedious;

  it('sends a JS bigint beyond 2^53 exactly', () => {
    const value = TYPES.BigInt.validate(9007199254740993n, undefined);
    const chunks = [...TYPES.BigInt.generateParameterData({ value } as never, {} as never)];
    expect(Buffer.concat(chunks as Buffer[]).readBigInt64LE()).toBe(9007199254740993n);
  });

  it('would round a decimal parameter through a double, which is why decimals travel as text', () => {
    expect(TYPES.Decimal.validate('12345678901234567.1', undefined)).toBe(12345678901234568);
  });

  it('accepts the converted uuid, binary, bit and float values', () => {
    expect(TYPES.UniqueIdentifier.validate('0e984725-c51c-4bf4-9960-e1c80e27aba0', undefined)).toBe(
      '0e984725-c51c-4bf4-9960-e1c80e27aba0',
    );
    expect(TYPES.VarBinary.validate(Buffer.alloc(0), undefined)).toEqual(Buffer.alloc(0));
    expect(TYPES.Bit.validate(false, undefined)).toBe(false);
    expect(TYPES.Float.validate(0.1, undefined)).toBe(0.1);
  });
});

describe('toWireRows', () => {
  it('turns streamed driver rows into wire rows', async () => {
    const readers = (['bigint', 'binary', 'timestamptz', 'time', 'int'] as const).map(wireReader);
    const stream = Readable.from([
      [
        '9223372036854775807',
        Buffer.from('hi'),
        '2024-03-01 08:15:30.1234567',
        '23:59:59.0000000',
        7,
      ],
      [null, null, null, null, null],
    ]);
    const out: WireRow[] = [];
    for await (const row of toWireRows(stream, readers)) out.push(row);
    expect(out).toEqual([
      ['9223372036854775807', 'aGk=', '2024-03-01T08:15:30.123456Z', '23:59:59', 7],
      [null, null, null, null, null],
    ]);
  });

  it('propagates a stream error', async () => {
    const stream = new Readable({
      objectMode: true,
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(async () => {
      for await (const _ of toWireRows(stream, [])) void _;
    }).rejects.toThrow('connection reset');
  });
});
