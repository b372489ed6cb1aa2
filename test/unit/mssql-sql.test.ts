import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  appliedLogIdSql,
  logIdRange,
  maxLogIdQuery,
  nthLogIdQuery,
  prepareSql,
  readAllQuery,
  readChangesQuery,
  recordAppliedSql,
  REFERENCED_TABLES_SQL,
  referencedNames,
  REFLECT_COLUMNS_SQL,
  serverTimeSql,
  serverTimeWire,
  tableName,
} from '../../src/db/mssql/sql.js';
import { column } from '../helpers/mssql.js';

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

describe('nthLogId query', () => {
  const orders = tableName('orders', 'dbo');
  const log = tableName('deltasync_changelog', 'dbo');

  it('takes at most n candidates per table through its own index, then the n-th of them all', () => {
    const q = nthLogIdQuery(
      [
        { table: orders, logId: column('id', 'int'), after: '5' },
        { table: log, logId: column('log_id', 'timestamp', { max_length: 8 }), after: '0' },
        {
          table: tableName('big', 'dbo'),
          logId: column('seq', 'decimal', { num_precision: 20, num_scale: 0 }),
          after: '18446744073709551000',
        },
      ],
      '18446744073709551615',
      1000,
    );
    expect(q.text).toBe(
      'SELECT CONVERT(varchar(40), u.log_id) AS nth_log_id FROM (' +
        'SELECT log_id FROM (SELECT TOP (@n) CONVERT(bigint, [id]) AS log_id FROM [dbo].[orders] ' +
        'WHERE [id] > @after0 AND [id] <= @upTo0 ORDER BY [id]) AS t0 UNION ALL ' +
        'SELECT log_id FROM (SELECT TOP (@n) CONVERT(bigint, [log_id]) AS log_id FROM [dbo].[deltasync_changelog] ' +
        'WHERE [log_id] > CONVERT(binary(8), @after1) AND [log_id] <= CONVERT(binary(8), @upTo1) ORDER BY [log_id]) AS t1 UNION ALL ' +
        'SELECT log_id FROM (SELECT TOP (@n) CONVERT(decimal(38,0), [seq]) AS log_id FROM [dbo].[big] ' +
        'WHERE [seq] > CONVERT(decimal(38,0), @after2) AND [seq] <= CONVERT(decimal(38,0), @upTo2) ORDER BY [seq]) AS t2' +
        ') AS u ORDER BY u.log_id OFFSET @skip ROWS FETCH NEXT 1 ROWS ONLY',
    );
    expect(q.params).toEqual([
      { name: 'n', type: 'BigInt', value: 1000n },
      { name: 'skip', type: 'BigInt', value: 999n },
      { name: 'after0', type: 'BigInt', value: 5n },
      { name: 'upTo0', type: 'BigInt', value: 9223372036854775807n }, // clamped: no int is above
      { name: 'after1', type: 'BigInt', value: 0n },
      { name: 'upTo1', type: 'BigInt', value: 9223372036854775807n },
      { name: 'after2', type: 'VarChar', value: '18446744073709551000' },
      { name: 'upTo2', type: 'VarChar', value: '18446744073709551615' },
    ]);
  });

  it('refuses n below 1 and a non-counter logId', () => {
    const t = { table: orders, logId: column('id', 'int'), after: '0' };
    expect(() => nthLogIdQuery([t], '10', 0)).toThrow(/n must be 1 or more/);
    expect(() =>
      nthLogIdQuery([{ ...t, logId: column('at', 'datetime2', { num_scale: 7 }) }], '10', 1),
    ).toThrow(ConfigError);
  });
});

describe('readAll query', () => {
  it('selects the wire renderings ordered by the key', () => {
    const q = readAllQuery(
      tableName('weird] table', 'dbo'),
      ['[a]', 'CONVERT(varchar(20), [b])'],
      [column('k]1', 'int'), column('k2', 'int')],
    );
    expect(q).toEqual({
      text: 'SELECT [a], CONVERT(varchar(20), [b]) FROM [dbo].[weird]] table] ORDER BY [k]]1], [k2]',
      params: [],
    });
    expect(() => readAllQuery(tableName('t', 'dbo'), ['[a]'], [])).toThrow(ConfigError);
  });
});

describe('referenced tables', () => {
  it('reads sys.foreign_keys of one table, leaving out self-references', () => {
    expect(REFERENCED_TABLES_SQL).toContain('FROM sys.foreign_keys AS fk');
    expect(REFERENCED_TABLES_SQL).toContain(
      'WHERE fk.parent_object_id = OBJECT_ID(@table) AND fk.referenced_object_id <> fk.parent_object_id',
    );
  });

  it('names them as a config may: bare in the configured schema (and qualified), else qualified', () => {
    expect(
      referencedNames(
        [
          { schema_name: 'dbo', table_name: 'customers' },
          { schema_name: 'ref', table_name: 'countries' },
        ],
        'dbo',
      ),
    ).toEqual(['customers', 'dbo.customers', 'ref.countries']);
  });
});

describe('server time', () => {
  it('reads SYSUTCDATETIME for instants, SYSDATETIME (the server wall clock) for timestamps', () => {
    expect(serverTimeSql('timestamptz')).toBe(
      'SELECT CONVERT(varchar(27), SYSUTCDATETIME(), 121) AS now',
    );
    expect(serverTimeSql('timestamp')).toBe(
      'SELECT CONVERT(varchar(27), SYSDATETIME(), 121) AS now',
    );
  });

  it('is returned with exactly six fractional digits', () => {
    expect(serverTimeWire('timestamptz', '2026-01-02 03:04:05.1234567')).toBe(
      '2026-01-02T03:04:05.123456Z',
    );
    expect(serverTimeWire('timestamp', '2026-01-02 03:04:05.0000000')).toBe(
      '2026-01-02 03:04:05.000000',
    );
    expect(serverTimeWire('timestamp', '2026-01-02 03:04:05')).toBe('2026-01-02 03:04:05.000000');
    expect(() => serverTimeWire('timestamp', 'Jan  2 2026  3:04AM')).toThrow();
  });
});
