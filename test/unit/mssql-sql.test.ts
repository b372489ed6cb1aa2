import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  appliedLogIdSql,
  logIdRange,
  maxLogIdQuery,
  prepareSql,
  readChangesQuery,
  recordAppliedSql,
  REFLECT_COLUMNS_SQL,
  tableName,
} from '../../src/db/mssql/sql.js';
import { toMssqlColumn, type ReflectedColumn } from '../../src/db/mssql/types.js';

function column(name: string, base_type: string, extra: Partial<ReflectedColumn> = {}) {
  return toMssqlColumn({
    name,
    base_type,
    max_length: 4,
    num_precision: 0,
    num_scale: 0,
    is_identity: false,
    is_computed: false,
    collation_name: null,
    ...extra,
  });
}

describe('tableName', () => {
  it('puts unqualified names in the configured schema, quoted', () => {
    expect(tableName('orders', 'dbo')).toEqual({
      schema: 'dbo',
      name: 'orders',
      quoted: '[dbo].[orders]',
      label: 'dbo.orders',
    });
  });

  it('takes the schema from a qualified name and quotes what needs it', () => {
    expect(tableName('sales.order lines', 'dbo').quoted).toBe('[sales].[order lines]');
    expect(tableName('weird] table', 'my]schema').quoted).toBe('[my]]schema].[weird]] table]');
  });
});

describe('reflection query', () => {
  it('reads sys.columns of one object, in column order, with base types resolved', () => {
    expect(REFLECT_COLUMNS_SQL).toContain('FROM sys.columns AS c');
    expect(REFLECT_COLUMNS_SQL).toContain('WHERE c.object_id = OBJECT_ID(@table)');
    expect(REFLECT_COLUMNS_SQL).toContain('ORDER BY c.column_id');
    // Alias types (sysname, user types) resolve through system_type_id; CLR types keep a name.
    expect(REFLECT_COLUMNS_SQL).toContain(
      'CASE WHEN t.is_assembly_type = 1 THEN t.name ELSE TYPE_NAME(c.system_type_id) END AS base_type',
    );
    // Every field ReflectedColumn declares is selected under that name.
    for (const field of [
      'name',
      'base_type',
      'max_length',
      'num_precision',
      'num_scale',
      'is_identity',
      'is_computed',
      'collation_name',
    ]) {
      expect(REFLECT_COLUMNS_SQL).toMatch(new RegExp(`AS ${field}\\b`));
    }
  });
});

describe('readChanges query', () => {
  const table = tableName('weird] table', 'dbo');
  const columns = [
    column('id', 'bigint'),
    column('amount', 'decimal', { num_precision: 38, num_scale: 10 }),
    column('at', 'datetimeoffset', { num_scale: 7 }),
    column('weird] name', 'nvarchar', { max_length: 20 }),
  ];

  it('selects wire renderings, bounds the logId with BIGINT parameters and orders by it', () => {
    const q = readChangesQuery(
      table,
      columns,
      column('id', 'bigint'),
      '9007199254740993',
      '9007199254740995',
    );
    expect(q.text).toBe(
      'SELECT CONVERT(varchar(20), [id]), CONVERT(varchar(50), [amount]), ' +
        "CONVERT(varchar(27), CONVERT(datetime2(7), SWITCHOFFSET([at], '+00:00')), 121), [weird]] name] " +
        'FROM [dbo].[weird]] table] WHERE [id] > @after AND [id] <= @upTo ORDER BY [id]',
    );
    // JS bigints, not numbers: 9007199254740993 is not a double.
    expect(q.params).toEqual([
      { name: 'after', type: 'BigInt', value: 9007199254740993n },
      { name: 'upTo', type: 'BigInt', value: 9007199254740995n },
    ]);
    expect(q.params.every((p) => typeof p.value === 'bigint')).toBe(true);
  });

  it('compares rowversion as binary(8) (index-friendly), bounds clamped at 0', () => {
    const q = logIdRange(column('rv', 'timestamp', { max_length: 8 }), '-1', '9223372036854775807');
    expect(q.text).toBe('[rv] > CONVERT(binary(8), @after) AND [rv] <= CONVERT(binary(8), @upTo)');
    expect(q.params).toEqual([
      { name: 'after', type: 'BigInt', value: 0n },
      { name: 'upTo', type: 'BigInt', value: 9223372036854775807n },
    ]);
  });

  it('clamps integer bounds to bigint range instead of failing', () => {
    const q = logIdRange(column('id', 'int'), '-99999999999999999999', '99999999999999999999');
    expect(q.params.map((p) => p.value)).toEqual([-9223372036854775808n, 9223372036854775807n]);
  });

  it('compares decimal(p,0) logIds with strings the server parses (tedious rounds decimals)', () => {
    const q = logIdRange(
      column('seq', 'decimal', { num_precision: 20, num_scale: 0 }),
      '0',
      '18446744073709551615',
    );
    expect(q.text).toBe(
      '[seq] > CONVERT(decimal(38,0), @after) AND [seq] <= CONVERT(decimal(38,0), @upTo)',
    );
    expect(q.params).toEqual([
      { name: 'after', type: 'VarChar', value: '0' },
      { name: 'upTo', type: 'VarChar', value: '18446744073709551615' },
    ]);
  });

  it('never types a bound as Int', () => {
    for (const logId of [column('a', 'tinyint'), column('b', 'smallint'), column('c', 'int')]) {
      expect(logIdRange(logId, '1', '2').params.map((p) => p.type)).toEqual(['BigInt', 'BigInt']);
    }
  });

  it('refuses bounds that are not whole numbers and logIds that are not counters', () => {
    expect(() => logIdRange(column('id', 'bigint'), '1.5', '2')).toThrow(ConfigError);
    expect(() => logIdRange(column('id', 'bigint'), '1', '1e3')).toThrow(
      /'1e3' is not a whole number/,
    );
    expect(() => logIdRange(column('at', 'datetime2', { num_scale: 7 }), '1', '2')).toThrow(
      /logId column at is datetime2\(7\)/,
    );
    expect(() =>
      logIdRange(column('x', 'decimal', { num_precision: 10, num_scale: 2 }), '1', '2'),
    ).toThrow(ConfigError);
  });
});

describe('maxLogId query', () => {
  const table = tableName('orders', 'dbo');

  it('caps rowversion at the last value no open transaction can still commit below', () => {
    expect(maxLogIdQuery(table, column('rv', 'timestamp'))).toBe(
      'SELECT CONVERT(varchar(20), CONVERT(bigint, MAX([rv]))) AS max_log_id, ' +
        'CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable_log_id ' +
        'FROM [dbo].[orders]',
    );
  });

  it('reads other logIds as text', () => {
    expect(maxLogIdQuery(table, column('id', 'bigint'))).toBe(
      'SELECT CONVERT(varchar(40), MAX([id])) AS max_log_id, NULL AS stable_log_id FROM [dbo].[orders]',
    );
  });

  it('applies the same logId rules as readChanges', () => {
    expect(() => maxLogIdQuery(table, column('name', 'nvarchar'))).toThrow(ConfigError);
  });
});

describe('bookkeeping SQL', () => {
  it('creates deltasync_applied once, in the configured schema', () => {
    expect(prepareSql('sync')).toBe(
      "IF OBJECT_ID(N'[sync].[deltasync_applied]', N'U') IS NULL\n" +
        'CREATE TABLE [sync].[deltasync_applied] (job nvarchar(200) NOT NULL PRIMARY KEY, ' +
        'log_id varchar(40) NOT NULL, delta nvarchar(255) NULL, ' +
        'applied_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME())',
    );
  });

  it("escapes a quote in the schema name inside OBJECT_ID's string", () => {
    expect(prepareSql("o'brien")).toContain("OBJECT_ID(N'[o''brien].[deltasync_applied]', N'U')");
  });

  it('reads the applied logId, locking the row inside a transaction', () => {
    expect(appliedLogIdSql('dbo', true)).toBe(
      "IF OBJECT_ID(N'[dbo].[deltasync_applied]', N'U') IS NOT NULL\n" +
        'SELECT log_id FROM [dbo].[deltasync_applied] WITH (UPDLOCK, HOLDLOCK) WHERE job = @job',
    );
    expect(appliedLogIdSql('dbo', false)).not.toContain('UPDLOCK');
  });

  it('records the applied logId as an update, or an insert the first time', () => {
    expect(recordAppliedSql('dbo')).toBe(
      'UPDATE [dbo].[deltasync_applied] SET log_id = @logId, delta = @delta, ' +
        'applied_at = SYSUTCDATETIME() WHERE job = @job;\n' +
        'IF @@ROWCOUNT = 0\n' +
        'INSERT INTO [dbo].[deltasync_applied] (job, log_id, delta) VALUES (@job, @logId, @delta);',
    );
  });
});
