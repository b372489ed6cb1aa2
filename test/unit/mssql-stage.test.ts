/**
 * SQL Server: the fit check that proves, before the MERGE, that every staged value reaches its
 * replica column unchanged (issue 9: never quietly different), the message of a misfit, and the
 * mapping of the constraint errors the MERGE can still run into. SQL pinned, no server.
 */
import { describe, expect, it } from 'vitest';
import { planApply, SEQ_COLUMN } from '../../src/db/mssql/load.js';
import { tableName } from '../../src/db/mssql/sql.js';
import {
  fitCheckError,
  fitCheckSql,
  misfitCondition,
  refusedRowError,
  stageFor,
} from '../../src/db/mssql/stage.js';
import type { ColumnInfo, LogicalType } from '../../src/db/types.js';
import { DeltaError } from '../../src/errors.js';
import { column } from '../helpers/mssql.js';

const table = tableName('prices', 'dbo');
const STAGE = '#stage_prices_00000000';
const CI = 'Latin1_General_CI_AS';

/** The check condition of one delta column of `type` bound for `target`. */
function condition(type: LogicalType, target: ReturnType<typeof column>, values: string[] = []) {
  const plan = planApply(
    table,
    ['id'],
    [
      { name: 'id', type: 'int' },
      { name: target.name, type },
    ],
    [column('id', 'int'), target],
    STAGE,
  );
  for (const v of values) plan.staging[1]!.write(v);
  return misfitCondition(plan.staging[1]!);
}

describe('staging in the delta types', () => {
  it('stages integers as bigint, strings and binary unsized, whatever the replica column', () => {
    expect(stageFor('int', column('t', 'tinyint'))).toMatchObject({ driver: 'BigInt' });
    expect(stageFor('int', column('t', 'tinyint')).parse('st.c0')).toBe('CONVERT(tinyint, st.c0)');
    expect(stageFor('int', column('t', 'bigint')).parse('st.c0')).toBe('st.c0');
    expect(stageFor('bigint', column('t', 'int')).parse('st.c0')).toBe('CONVERT(int, st.c0)');
    expect(stageFor('text', column('t', 'nvarchar', { max_length: 10 }))).toMatchObject({
      driver: 'NVarChar',
      length: 'max',
    });
    expect(stageFor('binary', column('t', 'binary', { max_length: 4 }))).toMatchObject({
      driver: 'VarBinary',
      length: 'max',
    });
    // decimals and date/times travel as their exact text, parsed by the server
    expect(
      stageFor('decimal', column('t', 'decimal', { num_precision: 10, num_scale: 2 })),
    ).toMatchObject({
      driver: 'VarChar',
      length: 100,
    });
  });
});

describe('the check of one column', () => {
  it('skips pairs that cannot differ', () => {
    expect(condition('int', column('v', 'bigint'))).toBeNull();
    expect(condition('float', column('v', 'float'))).toBeNull();
    expect(condition('float', column('v', 'real'))).toBeNull();
    expect(condition('timestamp', column('v', 'datetime2', { num_scale: 7 }))).toBeNull();
    expect(condition('timestamptz', column('v', 'datetimeoffset', { num_scale: 7 }))).toBeNull();
    expect(condition('date', column('v', 'date'))).toBeNull();
    expect(
      condition('text', column('v', 'nvarchar', { max_length: -1, collation_name: CI })),
    ).toBeNull();
    expect(condition('binary', column('v', 'varbinary', { max_length: -1 }))).toBeNull();
    expect(condition('bool', column('v', 'bit'))).toBeNull();
    expect(condition('uuid', column('v', 'uniqueidentifier', { max_length: 16 }))).toBeNull();
  });

  it("numeric(10,4) into decimal(10,2): roundtrip through the replica type, at the delta values' scale", () => {
    expect(
      condition('decimal', column('v', 'decimal', { num_precision: 10, num_scale: 2 }), [
        '0.5000',
        '0.9949',
        '12.10',
      ]),
    ).toBe(
      '(st.[c1] IS NOT NULL AND (' +
        'TRY_CONVERT(decimal(38,4), st.[c1]) IS NULL' +
        ' OR TRY_CONVERT(decimal(38,4), TRY_CONVERT(decimal(10,2), TRY_CONVERT(decimal(38,4), st.[c1]))) IS NULL' +
        ' OR TRY_CONVERT(decimal(38,4), TRY_CONVERT(decimal(10,2), TRY_CONVERT(decimal(38,4), st.[c1]))) <> TRY_CONVERT(decimal(38,4), st.[c1])))'.replace(
          '([c1]',
          '(st.[c1]',
        ),
    );
  });

  it('sizes decimal(38,s) at the largest scale of the values, trailing zeros not counted', () => {
    const target = column('v', 'decimal', { num_precision: 10, num_scale: 1 });
    expect(condition('decimal', target, ['100', '1.50', '-2.000'])).toContain('decimal(38,1)');
    expect(condition('decimal', target, ['7'])).toContain('decimal(38,0)');
    expect(condition('decimal', target, ['0.1234567'])).toContain('decimal(38,7)');
  });

  it('datetime2(0): fractional seconds that would round (into the next day) are found', () => {
    const w = 'TRY_CONVERT(datetime2(7), st.[c1], 121)';
    const back = `TRY_CONVERT(datetime2(7), TRY_CONVERT(datetime2(0), ${w}))`;
    expect(condition('timestamp', column('v', 'datetime2', { num_scale: 0 }))).toBe(
      `(st.[c1] IS NOT NULL AND (${w} IS NULL OR ${back} IS NULL OR ${back} <> ${w}))`,
    );
  });

  it('datetime compares at the millisecond it is read at, not its 1/300 s ticks', () => {
    expect(condition('timestamp', column('v', 'datetime'))).toContain(
      'TRY_CONVERT(datetime2(3), TRY_CONVERT(datetime, TRY_CONVERT(datetime2(7), st.[c1], 121)))',
    );
  });

  it('integers into narrower ones, and bigints anywhere but wide enough types', () => {
    expect(condition('int', column('v', 'smallint'))).toBe(
      '(st.[c1] IS NOT NULL AND (TRY_CONVERT(bigint, TRY_CONVERT(smallint, st.[c1])) IS NULL' +
        ' OR TRY_CONVERT(bigint, TRY_CONVERT(smallint, st.[c1])) <> st.[c1]))',
    );
    expect(condition('bigint', column('v', 'int'))).toContain(
      'TRY_CONVERT(int, TRY_CONVERT(decimal(38,0), st.[c1]))',
    );
  });

  it('strings and binary by their length in the replica column, trailing spaces counted', () => {
    expect(condition('text', column('v', 'nvarchar', { max_length: 10, collation_name: CI }))).toBe(
      '(st.[c1] IS NOT NULL AND (DATALENGTH(st.[c1]) > 10))',
    );
    expect(condition('text', column('v', 'nchar', { max_length: 6, collation_name: CI }))).toBe(
      '(st.[c1] IS NOT NULL AND (DATALENGTH(st.[c1]) > 6))',
    );
    expect(condition('binary', column('v', 'varbinary', { max_length: 16 }))).toBe(
      '(st.[c1] IS NOT NULL AND (DATALENGTH(st.[c1]) > 16))',
    );
  });

  it('varchar: every character in the column code page, and its byte length', () => {
    const single = 'CONVERT(varchar(max), st.[c1])';
    expect(condition('text', column('v', 'varchar', { max_length: 5, collation_name: CI }))).toBe(
      `(st.[c1] IS NOT NULL AND (CONVERT(varbinary(max), CONVERT(nvarchar(max), ${single})) <> CONVERT(varbinary(max), st.[c1])` +
        ` OR DATALENGTH(${single}) > 5))`,
    );
  });

  it('a NOT NULL column fed NULL, with or without a value check; identity columns aside', () => {
    expect(condition('int', column('v', 'bigint', { is_nullable: false }))).toBe(
      '(st.[c1] IS NULL)',
    );
    expect(condition('text', column('v', 'nvarchar', { max_length: 10, is_nullable: false }))).toBe(
      '(st.[c1] IS NULL OR (st.[c1] IS NOT NULL AND (DATALENGTH(st.[c1]) > 10)))',
    );
    expect(
      condition('int', column('v', 'bigint', { is_nullable: false, is_identity: true })),
    ).toBeNull();
  });
});

describe('the check query and its message', () => {
  const delta: ColumnInfo[] = [
    { name: 'id', type: 'int' },
    { name: 'region', type: 'text' },
    { name: 'price', type: 'decimal' },
    { name: 'note', type: 'text' },
  ];
  const target = [
    column('id', 'int', { is_nullable: false }),
    column('region', 'nvarchar', { max_length: -1, collation_name: CI, is_nullable: false }),
    column('price', 'numeric', { num_precision: 10, num_scale: 2 }),
    column('note', 'nvarchar', { max_length: -1, collation_name: CI }),
  ];

  it('is one set-based query, first offending row in delta order, only over checked columns', () => {
    const plan = planApply(table, ['id', 'region'], delta, target, STAGE);
    plan.staging[2]!.write('0.9949');
    const sql = fitCheckSql(STAGE, plan.staging, SEQ_COLUMN)!;
    const id =
      '(st.[c0] IS NULL OR (st.[c0] IS NOT NULL AND (TRY_CONVERT(bigint, TRY_CONVERT(int, st.[c0])) IS NULL OR TRY_CONVERT(bigint, TRY_CONVERT(int, st.[c0])) <> st.[c0])))';
    const region = '(st.[c1] IS NULL)';
    const w = 'TRY_CONVERT(decimal(38,4), st.[c2])';
    const back = `TRY_CONVERT(decimal(38,4), TRY_CONVERT(numeric(10,2), ${w}))`;
    const price = `(st.[c2] IS NOT NULL AND (${w} IS NULL OR ${back} IS NULL OR ${back} <> ${w}))`;
    expect(sql).toBe(
      'SELECT TOP 1 CONVERT(nvarchar(max), st.[c0]) AS [k0], CONVERT(nvarchar(max), st.[c1]) AS [k1], ' +
        `CASE WHEN ${id} THEN 0 WHEN ${region} THEN 1 WHEN ${price} THEN 2 END AS col, ` +
        `CASE WHEN ${id} THEN CONVERT(nvarchar(max), st.[c0]) WHEN ${region} THEN CONVERT(nvarchar(max), st.[c1]) WHEN ${price} THEN CONVERT(nvarchar(max), st.[c2]) END AS value ` +
        `FROM [${STAGE}] AS st WHERE ${id} OR ${region} OR ${price} ORDER BY st.[seq]`,
    );
  });

  it('is not run when no column can differ', () => {
    const plan = planApply(
      table,
      ['id'],
      [{ name: 'id', type: 'int' }],
      [column('id', 'bigint')],
      STAGE,
    );
    expect(fitCheckSql(STAGE, plan.staging, SEQ_COLUMN)).toBeNull();
  });

  it('names table, key, column, value and the replica type: the PG and MariaDB shape, exit 65', () => {
    const plan = planApply(table, ['id', 'region'], delta, target, STAGE);
    const err = fitCheckError(table, plan.staging, { k0: '7', k1: 'eu', col: 2, value: '0.9949' });
    expect(err).toBeInstanceOf(DeltaError);
    expect(err.exitCode).toBe(65);
    expect(err.message).toBe(
      "table 'dbo.prices' row (id, region)=(7, eu): column price value '0.9949' does not fit the replica column's type numeric(10,2) unchanged",
    );
    const nul = fitCheckError(table, plan.staging, { k0: '8', k1: 'us', col: 1, value: null });
    expect(nul.message).toBe(
      "table 'dbo.prices' row (id, region)=(8, us): column region is NULL, which the replica column (nvarchar(max), NOT NULL) refuses",
    );
  });
});

describe('constraint errors the MERGE runs into', () => {
  const serverError = (number: number, message: string) =>
    Object.assign(new Error(message), { name: 'RequestError', number });

  it.each([
    [
      2627,
      "Violation of PRIMARY KEY constraint 'PK_t'. Cannot insert duplicate key in object 'dbo.t'. The duplicate key value is (7).",
    ],
    [
      2601,
      "Cannot insert duplicate key row in object 'dbo.store' with unique index 'ux_manager'. The duplicate key value is (3).",
    ],
    [
      515,
      "Cannot insert the value NULL into column 'name', table 'db.dbo.t'; column does not allow nulls. UPDATE fails.",
    ],
    [
      547,
      'The MERGE statement conflicted with the CHECK constraint "ck_price". The conflict occurred in database "db", table "dbo.t", column \'price\'.',
    ],
    [8152, 'String or binary data would be truncated.'],
    [
      2628,
      "String or binary data would be truncated in table 'db.dbo.t', column 'name'. Truncated value: 'abcde'.",
    ],
    [8115, 'Arithmetic overflow error converting numeric to data type numeric.'],
  ])(
    '%i is the replica refusing a row: 65, with the server message (and the key it names)',
    (number, message) => {
      const err = refusedRowError(
        serverError(number, `${message}\nThe statement has been terminated.`),
        'dbo.t',
      );
      expect(err).toBeInstanceOf(DeltaError);
      expect(err!.exitCode).toBe(65);
      expect(err!.message).toBe(
        `table 'dbo.t': the replica refused a row (error ${number}): ${message}`,
      );
    },
  );

  it('reads the number where mssql keeps it, and leaves other errors alone', () => {
    const wrapped = Object.assign(new Error('Cannot insert duplicate key … (7).'), {
      originalError: { info: { number: 2627 } },
    });
    expect(refusedRowError(wrapped, 'dbo.t')?.message).toMatch(
      /^table 'dbo.t': the replica refused a row \(error 2627\)/,
    );
    expect(refusedRowError(serverError(1205, 'deadlock victim'), 'dbo.t')).toBeUndefined();
    expect(refusedRowError(new Error('socket hang up'), 'dbo.t')).toBeUndefined();
    expect(
      refusedRowError(serverError(547, 'conflicted with the FOREIGN KEY constraint "fk"'))?.message,
    ).toBe(
      'the replica refused a row (error 547): conflicted with the FOREIGN KEY constraint "fk"',
    );
  });
});
