import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import type { ColumnInfo } from '../../src/db/types.js';
import {
  keyMatch,
  planApply,
  planDelete,
  stagingColumns,
  stagingTableName,
} from '../../src/db/mssql/load.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { column } from '../helpers/mssql.js';

const CI = 'Latin1_General_CI_AS';
const table = tableName('weird] table', 'dbo');
const STAGE = '#stage_weirdtable_0a1b2c3d';

/** The replica's table: a two-column key with a name that needs quoting, and a users' column. */
const target = [
  column('weird] name', 'nvarchar', { max_length: 100, collation_name: CI }),
  column('region', 'int'),
  column('amount', 'decimal', { num_precision: 38, num_scale: 10 }),
  column('seen', 'datetimeoffset', { num_scale: 7 }),
  column('note', 'varchar', { max_length: 200, collation_name: 'SQL_Latin1_General_CP1_CI_AS' }),
  column('code', 'char', { max_length: 3, collation_name: CI }),
  column('blob', 'varbinary', { max_length: -1 }),
  column('flag', 'bit'),
  column('users_column', 'nvarchar', { max_length: -1, collation_name: CI }),
];

const delta: ColumnInfo[] = [
  { name: 'weird] name', type: 'text' },
  { name: 'region', type: 'int' },
  { name: 'amount', type: 'decimal' },
  { name: 'seen', type: 'timestamptz' },
  { name: 'note', type: 'text' },
  { name: 'code', type: 'text' },
  { name: 'blob', type: 'binary' },
  { name: 'flag', type: 'bool' },
];

describe('staging table', () => {
  it('is named after the target, sanitised, with a random suffix', () => {
    expect(stagingTableName(table, '0a1b2c3d')).toBe(STAGE);
    expect(stagingTableName(tableName('sales.Ordér-Lines', 'dbo'), 'ff')).toBe(
      '#stage_OrdrLines_ff',
    );
  });

  it("has positional columns in the delta's own types, the target's collations, and a seq column", () => {
    const plan = planApply(table, ['weird] name', 'region'], delta, target, STAGE);
    expect(plan.createStaging).toBe(
      'CREATE TABLE [#stage_weirdtable_0a1b2c3d] (' +
        '[c0] nvarchar(max) COLLATE Latin1_General_CI_AS NULL, ' +
        '[c1] bigint NULL, ' +
        '[c2] varchar(100) COLLATE DATABASE_DEFAULT NULL, ' +
        '[c3] varchar(28) COLLATE DATABASE_DEFAULT NULL, ' +
        '[c4] nvarchar(max) COLLATE SQL_Latin1_General_CP1_CI_AS NULL, ' +
        '[c5] nvarchar(max) COLLATE Latin1_General_CI_AS NULL, ' +
        '[c6] varbinary(max) NULL, ' +
        '[c7] bit NULL, ' +
        '[seq] bigint NOT NULL)',
    );
    expect(plan.dropStaging).toBe('DROP TABLE [#stage_weirdtable_0a1b2c3d]');
  });

  it('never puts an odd collation name into DDL', () => {
    const odd = [column('k', 'nvarchar', { max_length: 20, collation_name: 'x] DROP TABLE y --' })];
    const [c] = stagingColumns(table, ['k'], [{ name: 'k', type: 'text' }], odd);
    expect(c!.declaration).toBe('nvarchar(max) COLLATE DATABASE_DEFAULT');
  });
});

describe('MERGE', () => {
  it('upserts the last row per 2-column key, writing only the delta columns, only when changed', () => {
    const plan = planApply(table, ['weird] name', 'region'], delta, target, STAGE);
    expect(plan.merge.split('\n')).toEqual([
      'MERGE INTO [dbo].[weird]] table] WITH (HOLDLOCK) AS t',
      'USING (SELECT c0, c1, c2, c3, c4, c5, c6, c7 FROM (' +
        'SELECT st.c0 AS c0, CONVERT(int, st.c1) AS c1, CONVERT(decimal(38,10), st.c2) AS c2, ' +
        'CONVERT(datetimeoffset(7), st.c3) AS c3, st.c4 AS c4, st.c5 AS c5, st.c6 AS c6, ' +
        'st.c7 AS c7, ROW_NUMBER() OVER (PARTITION BY st.c0, CONVERT(int, st.c1) ORDER BY st.seq DESC) AS rn ' +
        'FROM [#stage_weirdtable_0a1b2c3d] AS st) AS d WHERE d.rn = 1) AS s',
      'ON t.[weird]] name] = s.c0 AND t.[region] = s.c1',
      'WHEN MATCHED AND EXISTS (SELECT ' +
        'CONVERT(decimal(38,10), s.c2), ' +
        'CONVERT(datetimeoffset(7), s.c3), ' +
        'CONVERT(varbinary(max), CONVERT(nvarchar(max), s.c4)), DATALENGTH(CONVERT(nvarchar(max), s.c4)), ' +
        'CONVERT(varbinary(max), RTRIM(CONVERT(nvarchar(max), s.c5))), DATALENGTH(RTRIM(CONVERT(nvarchar(max), s.c5))), ' +
        'CONVERT(varbinary(max), s.c6), DATALENGTH(CONVERT(varbinary(max), s.c6)), ' +
        'CONVERT(bit, s.c7) ' +
        'EXCEPT SELECT ' +
        't.[amount], ' +
        't.[seen], ' +
        'CONVERT(varbinary(max), CONVERT(nvarchar(max), t.[note])), DATALENGTH(CONVERT(nvarchar(max), t.[note])), ' +
        'CONVERT(varbinary(max), RTRIM(CONVERT(nvarchar(max), t.[code]))), DATALENGTH(RTRIM(CONVERT(nvarchar(max), t.[code]))), ' +
        'CONVERT(varbinary(max), t.[blob]), DATALENGTH(CONVERT(varbinary(max), t.[blob])), ' +
        't.[flag]) THEN',
      '  UPDATE SET t.[amount] = s.c2, t.[seen] = s.c3, t.[note] = s.c4, t.[code] = s.c5, ' +
        't.[blob] = s.c6, t.[flag] = s.c7',
      'WHEN NOT MATCHED BY TARGET THEN',
      '  INSERT ([weird]] name], [region], [amount], [seen], [note], [code], [blob], [flag]) ' +
        'VALUES (s.c0, s.c1, s.c2, s.c3, s.c4, s.c5, s.c6, s.c7);',
    ]);
    expect(plan.merge).not.toContain('users_column');
  });

  it('deduplicates on the typed key, so date keys match as dates', () => {
    const t = [column('day', 'date'), column('n', 'int')];
    const plan = planApply(
      table,
      ['day'],
      [
        { name: 'day', type: 'date' },
        { name: 'n', type: 'int' },
      ],
      t,
      STAGE,
    );
    expect(plan.merge).toContain('PARTITION BY CONVERT(date, st.c0, 23) ORDER BY st.seq DESC');
    expect(plan.merge).toContain('ON t.[day] = s.c0');
  });

  it('has no WHEN MATCHED clause when the delta carries only key columns', () => {
    const plan = planApply(table, ['region'], [{ name: 'region', type: 'int' }], target, STAGE);
    expect(plan.merge).not.toContain('WHEN MATCHED');
    expect(plan.merge).toContain('INSERT ([region]) VALUES (s.c0);');
  });

  it('inserts explicit identity values under IDENTITY_INSERT, switched off even on failure', () => {
    const t = [
      column('id', 'bigint', { is_identity: true }),
      column('seq_no', 'int', { is_identity: false }),
    ];
    const cols: ColumnInfo[] = [
      { name: 'id', type: 'bigint' },
      { name: 'seq_no', type: 'int' },
    ];
    const lines = planApply(table, ['id'], cols, t, STAGE).merge.split('\n');
    expect(lines.slice(0, 3)).toEqual([
      'SET IDENTITY_INSERT [dbo].[weird]] table] ON;',
      'BEGIN TRY',
      'MERGE INTO [dbo].[weird]] table] WITH (HOLDLOCK) AS t',
    ]);
    expect(lines.slice(-7)).toEqual([
      '  INSERT ([id], [seq_no]) VALUES (s.c0, s.c1);',
      'END TRY',
      'BEGIN CATCH',
      'SET IDENTITY_INSERT [dbo].[weird]] table] OFF;',
      'THROW;',
      'END CATCH;',
      'SET IDENTITY_INSERT [dbo].[weird]] table] OFF;',
    ]);
  });

  it('never updates a non-key identity column (SQL Server cannot)', () => {
    const t = [
      column('code', 'int'),
      column('id', 'int', { is_identity: true }),
      column('v', 'int'),
    ];
    const cols: ColumnInfo[] = [
      { name: 'code', type: 'int' },
      { name: 'id', type: 'int' },
      { name: 'v', type: 'int' },
    ];
    const merge = planApply(table, ['code'], cols, t, STAGE).merge;
    expect(merge).toContain('  UPDATE SET t.[v] = s.c2\n');
    expect(merge).toContain('INSERT ([code], [id], [v]) VALUES (s.c0, s.c1, s.c2);');
  });

  it('maps delta columns to target columns case-insensitively, using the target spelling', () => {
    const plan = planApply(
      table,
      ['ID'],
      [{ name: 'ID', type: 'int' }],
      [column('id', 'int')],
      STAGE,
    );
    expect(plan.merge).toContain('ON t.[id] = s.c0');
  });
});

describe('mapping problems are ConfigErrors, all reported at once', () => {
  it('lists every missing or unwritable column and bad key', () => {
    const t = [
      column('k', 'int'),
      column('total', 'int', { is_computed: true }),
      column('rv', 'timestamp'),
      column('v', 'sql_variant'),
    ];
    const cols: ColumnInfo[] = [
      { name: 'k', type: 'int' },
      { name: 'gone', type: 'text' },
      { name: 'total', type: 'int' },
      { name: 'rv', type: 'bigint' },
      { name: 'v', type: 'text' },
    ];
    let error: unknown;
    try {
      planApply(table, ['k', 'nope'], cols, t, STAGE);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(
      "target table dbo.weird] table: key column nope is not among the delta's columns; " +
        'no column gone; column total is computed and cannot be written; ' +
        'column rv is rowversion and cannot be written; ' +
        'column v is sql_variant, which deltasync cannot write',
    );
  });

  it('needs a key', () => {
    expect(() => planApply(table, [], [{ name: 'region', type: 'int' }], target, STAGE)).toThrow(
      /no key columns/,
    );
  });
});

describe('varchar keys', () => {
  const sqlCollation = 'SQL_Latin1_General_CP1_CI_AS';
  const t = [
    column('code', 'varchar', { max_length: 20, collation_name: sqlCollation }),
    column('n', 'int'),
  ];
  const cols: ColumnInfo[] = [
    { name: 'code', type: 'text' },
    { name: 'n', type: 'int' },
  ];

  it('match as varchar: an index seek, the column collation, and no truncation', () => {
    const plan = planApply(table, ['code'], cols, t, STAGE);
    expect(plan.merge).toContain('ON t.[code] = CONVERT(varchar(8000), s.c0)');
    expect(keyMatch(column('k', 'nvarchar', { max_length: 20 }), 's.c0')).toBe('s.c0');
    expect(keyMatch(column('k', 'char', { max_length: 3 }), 's.c0')).toBe(
      'CONVERT(varchar(8000), s.c0)',
    );
    // a key column that cannot be indexed but is configured as a key anyway: never truncated
    expect(keyMatch(column('k', 'varchar', { max_length: -1 }), 's.c0')).toBe(
      'CONVERT(varchar(max), s.c0)',
    );
  });
});

describe('deleteRows', () => {
  it('stages only the key columns, then deletes the matching rows in one statement', () => {
    const t = [
      column('day', 'datetime'),
      column('code', 'varchar', { max_length: 20, collation_name: CI }),
      column('payload', 'nvarchar', { max_length: -1 }),
    ];
    const plan = planDelete(
      table,
      [
        { name: 'day', type: 'timestamp' },
        { name: 'code', type: 'text' },
      ],
      t,
      STAGE,
    );
    expect(plan.createStaging).toBe(
      'CREATE TABLE [#stage_weirdtable_0a1b2c3d] (' +
        '[c0] varchar(27) COLLATE DATABASE_DEFAULT NULL, ' +
        '[c1] nvarchar(max) COLLATE Latin1_General_CI_AS NULL, ' +
        '[seq] bigint NOT NULL)',
    );
    expect(plan.delete).toBe(
      'DELETE t FROM [dbo].[weird]] table] AS t WHERE EXISTS (SELECT 1 FROM [#stage_weirdtable_0a1b2c3d] AS st ' +
        'WHERE t.[day] = CONVERT(datetime, CONVERT(datetime2(7), st.c0, 121)) ' +
        'AND t.[code] = CONVERT(varchar(8000), st.c1));\n' +
        'SELECT @@ROWCOUNT AS deleted;',
    );
    expect(plan.dropStaging).toBe('DROP TABLE [#stage_weirdtable_0a1b2c3d]');
    expect(plan.staging.map((c) => c.key)).toEqual([true, true]);
  });

  it('refuses keys the target lacks', () => {
    expect(() =>
      planDelete(table, [{ name: 'gone', type: 'int' }], [column('id', 'int')], STAGE),
    ).toThrow(/no column gone/);
  });
});
