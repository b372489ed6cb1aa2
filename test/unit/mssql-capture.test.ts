import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  captureDdl,
  keyFromText,
  keyText,
  readChangelogQuery,
  toChangelogRow,
  triggerName,
  captureStateSql,
  missingCapture,
} from '../../src/db/mssql/capture.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { readExpression, wireReader } from '../../src/db/mssql/types.js';
import { column } from '../helpers/mssql.js';

const CHANGELOG_TABLE = [
  "IF OBJECT_ID(N'[dbo].[deltasync_changelog]', N'U') IS NULL",
  'BEGIN',
  'CREATE TABLE [dbo].[deltasync_changelog] (',
  '  log_id rowversion NOT NULL PRIMARY KEY CLUSTERED,',
  '  table_name nvarchar(255) NOT NULL,',
  '  op char(1) NOT NULL,',
  '  key_values nvarchar(max) NOT NULL,',
  '  changed_at datetime2(6) NOT NULL DEFAULT SYSDATETIME()',
  ');',
  'CREATE INDEX [deltasync_changelog_table_log_id] ON [dbo].[deltasync_changelog] (table_name, log_id) INCLUDE (key_values);',
  'END',
].join('\n');

describe('captureDdl', () => {
  const ddl = captureDdl(
    {
      changelog: 'deltasync_changelog',
      tables: [
        {
          table: "sales.order's lines",
          key: [
            { name: 'order id', type: 'bigint', nativeType: 'bigint' },
            { name: 'line]no', type: 'int', nativeType: 'smallint' },
          ],
        },
        { table: 'customers', key: [{ name: 'code', type: 'text', nativeType: 'varchar(20)' }] },
      ],
    },
    'dbo',
  );

  it('creates the change log once: rowversion log_id, the shared columns, (table_name, log_id) index', () => {
    expect(ddl.install[0]).toBe(CHANGELOG_TABLE);
  });

  it('creates one set-based trigger per table, logging new keys (I/U) and vanished old keys (D)', () => {
    const key = (a: string) =>
      "N'[' + " +
      `CASE WHEN ${a}.[order id] IS NULL THEN N'null' ELSE N'"' + STRING_ESCAPE(CONVERT(nvarchar(40), ${a}.[order id]), 'json') + N'"' END` +
      " + N',' + " +
      `CASE WHEN ${a}.[line]]no] IS NULL THEN N'null' ELSE N'"' + STRING_ESCAPE(CONVERT(nvarchar(40), ${a}.[line]]no]), 'json') + N'"' END` +
      " + N']'";
    expect(ddl.install[1]!.split('\n')).toEqual([
      "CREATE OR ALTER TRIGGER [sales].[deltasync_changelog_order's lines] ON [sales].[order's lines]",
      'AFTER INSERT, UPDATE, DELETE',
      'AS',
      'BEGIN',
      'SET NOCOUNT ON;',
      'INSERT INTO [dbo].[deltasync_changelog] (table_name, op, key_values)',
      `SELECT N'sales.order''s lines', CASE WHEN EXISTS (SELECT 1 FROM deleted) THEN 'U' ELSE 'I' END, ${key('i')}`,
      'FROM inserted AS i;',
      'INSERT INTO [dbo].[deltasync_changelog] (table_name, op, key_values)',
      `SELECT N'sales.order''s lines', 'D', ${key('d')}`,
      'FROM deleted AS d',
      'WHERE NOT EXISTS (SELECT 1 FROM inserted AS i WHERE i.[order id] = d.[order id] AND i.[line]]no] = d.[line]]no]);',
      'END',
    ]);
    expect(ddl.install[2]).toContain("STRING_ESCAPE(CONVERT(nvarchar(max), i.[code]), 'json')");
    expect(ddl.install).toHaveLength(3);
  });

  it('removes the triggers, then the change log', () => {
    expect(ddl.remove).toEqual([
      "DROP TRIGGER IF EXISTS [sales].[deltasync_changelog_order's lines]",
      'DROP TRIGGER IF EXISTS [dbo].[deltasync_changelog_customers]',
      'DROP TABLE IF EXISTS [dbo].[deltasync_changelog]',
    ]);
  });

  it('puts the change log where its name says', () => {
    const other = captureDdl({ changelog: 'audit.changes', tables: [] }, 'dbo');
    expect(other.install[0]).toContain('CREATE TABLE [audit].[changes] (');
    expect(other.remove).toEqual(['DROP TABLE IF EXISTS [audit].[changes]']);
  });

  it('refuses keys that cannot be logged, and tables without a key', () => {
    const capture = (key: { name: string; type: 'text' | 'json'; nativeType?: string }[]) =>
      captureDdl({ changelog: 'log', tables: [{ table: 't', key }] }, 'dbo');
    expect(() => capture([{ name: 'doc', type: 'text', nativeType: 'ntext' }])).toThrow(
      'table dbo.t: key column doc (ntext) cannot be captured',
    );
    expect(() => capture([{ name: 'doc', type: 'json' }])).toThrow(ConfigError);
    expect(() => capture([])).toThrow('no key columns');
  });

  it('falls back to the logical type when a key column has no native type', () => {
    const ddl = captureDdl(
      { changelog: 'log', tables: [{ table: 't', key: [{ name: 'u', type: 'uuid' }] }] },
      'dbo',
    );
    expect(ddl.install[1]).toContain('LOWER(CONVERT(nvarchar(36), i.[u]))');
  });
});

describe('trigger names', () => {
  it('name the change log and the table, hashed down to 128 characters when longer', () => {
    const log = tableName('deltasync_changelog', 'dbo');
    expect(triggerName(log, tableName('orders', 'dbo'))).toBe('deltasync_changelog_orders');
    const long = triggerName(log, tableName('t'.repeat(128), 'dbo'));
    expect(long).toHaveLength(128);
    expect(long).toMatch(/^deltasync_changelog_t+_[0-9a-f]{8}$/);
    expect(triggerName(log, tableName(`${'t'.repeat(127)}u`, 'dbo'))).not.toBe(long);
  });
});

describe('key text: logged one way, read back exactly', () => {
  it.each([
    [column('c', 'int'), 'CONVERT(nvarchar(40), x)', 'CONVERT(int, v)'],
    [column('c', 'bigint'), 'CONVERT(nvarchar(40), x)', 'CONVERT(bigint, v)'],
    [
      column('c', 'decimal', { num_precision: 38, num_scale: 10 }),
      'CONVERT(nvarchar(40), x)',
      'CONVERT(decimal(38,10), v)',
    ],
    [column('c', 'money'), 'CONVERT(nvarchar(40), x, 2)', 'CONVERT(money, v)'],
    [column('c', 'float'), 'CONVERT(nvarchar(40), x, 3)', 'CONVERT(float, v)'],
    [column('c', 'bit'), 'CONVERT(nvarchar(1), x)', 'CONVERT(bit, v)'],
    [
      column('c', 'varchar', { max_length: 50, collation_name: 'SQL_Latin1_General_CP1_CI_AS' }),
      'CONVERT(nvarchar(max), x)',
      'CONVERT(varchar(50), v COLLATE SQL_Latin1_General_CP1_CI_AS)',
    ],
    [column('c', 'nchar', { max_length: 10 }), 'CONVERT(nvarchar(max), x)', 'CONVERT(nchar(5), v)'],
    [
      column('c', 'uniqueidentifier'),
      'LOWER(CONVERT(nvarchar(36), x))',
      'CONVERT(uniqueidentifier, v)',
    ],
    [column('c', 'date'), 'CONVERT(nvarchar(10), x, 23)', 'CONVERT(date, v, 23)'],
    [column('c', 'time', { num_scale: 7 }), 'CONVERT(nvarchar(16), x, 121)', 'CONVERT(time(7), v)'],
    [column('c', 'datetime'), 'CONVERT(nvarchar(27), x, 121)', 'CONVERT(datetime, v, 121)'],
    [
      column('c', 'datetime2', { num_scale: 3 }),
      'CONVERT(nvarchar(27), x, 121)',
      'CONVERT(datetime2(3), v, 121)',
    ],
    [
      column('c', 'datetimeoffset', { num_scale: 7 }),
      "CONVERT(nvarchar(34), SWITCHOFFSET(x, '+00:00'), 121)",
      'CONVERT(datetimeoffset(7), v)',
    ],
    [
      column('c', 'binary', { max_length: 16 }),
      'CONVERT(nvarchar(max), x, 1)',
      'CONVERT(binary(16), v, 1)',
    ],
  ])('%#: %o', (c, logged, read) => {
    expect(keyText(c.baseType, 'x')).toBe(logged);
    expect(keyFromText(c, 'v')).toBe(read);
  });

  it('has no rendering for types that cannot be keys', () => {
    for (const base of ['text', 'ntext', 'image', 'xml', 'rowversion', 'sql_variant']) {
      expect(keyText(base, 'x')).toBeUndefined();
    }
    expect(() => keyFromText(column('c', 'xml'), 'v')).toThrow(ConfigError);
  });

  it('never puts an odd collation name into SQL', () => {
    const odd = column('c', 'nvarchar', { max_length: 20, collation_name: 'x]; DROP TABLE y' });
    expect(keyFromText(odd, 'v')).toBe('CONVERT(nvarchar(10), v)');
  });
});

describe('readChangelog query', () => {
  const id = column('id', 'int');
  const code = column('code', 'varchar', {
    max_length: 20,
    collation_name: 'Latin1_General_CI_AS',
  });
  const note = column('from', 'nvarchar', { max_length: -1 });

  it('reads each key changed in (after, upTo] once, in the order of its latest log_id, joined to its row', () => {
    const q = readChangelogQuery({
      changelog: tableName('deltasync_changelog', 'dbo'),
      logId: column('log_id', 'timestamp', { max_length: 8 }),
      configured: 'orders',
      table: tableName('orders', 'dbo'),
      key: [id, code],
      keySelect: ['k.k0', 'k.k1'],
      rowSelect: ['t.[id]', 't.[code]', readExpression(note, 't.[from]')],
      after: '100',
      upTo: '9223372036854775807',
    });
    expect(q.text.split('\n')).toEqual([
      'WITH changed AS (',
      'SELECT key_values, MAX([log_id]) AS last_log_id FROM [dbo].[deltasync_changelog]',
      'WHERE table_name = @table AND ([log_id] > 0x0000000000000064 AND [log_id] <= 0x7fffffffffffffff)',
      'GROUP BY key_values',
      ')',
      'SELECT CASE WHEN t.[id] IS NULL THEN 0 ELSE 1 END AS found, k.k0, k.k1, t.[id], t.[code], t.[from]',
      'FROM changed AS c',
      "CROSS APPLY (SELECT CONVERT(int, JSON_VALUE(c.key_values, '$[0]')) AS k0, " +
        "CONVERT(varchar(20), JSON_VALUE(c.key_values, '$[1]') COLLATE Latin1_General_CI_AS) AS k1) AS k",
      'LEFT JOIN [dbo].[orders] AS t ON t.[id] = k.k0 AND t.[code] = k.k1',
      'ORDER BY c.last_log_id',
    ]);
    expect(q.params).toEqual([{ name: 'table', type: 'NVarChar', length: 255, value: 'orders' }]);
  });

  it('turns found rows into upserts and missing ones into deletes of the logged key', () => {
    const keyReads = [wireReader('int'), wireReader('timestamp')];
    const rowReads = [wireReader('int'), wireReader('timestamp'), wireReader('binary')];
    expect(
      toChangelogRow(
        [1, 7, '2024-01-01 00:00:00.0000000', 7, '2024-01-01 00:00:00.5000000', Buffer.from([1])],
        keyReads,
        rowReads,
      ),
    ).toEqual({ op: 'upsert', row: [7, '2024-01-01 00:00:00.500000', 'AQ=='] });
    expect(
      toChangelogRow([0, 8, '2024-01-02 00:00:00.0000000', null, null, null], keyReads, rowReads),
    ).toEqual({ op: 'delete', key: [8, '2024-01-02 00:00:00'] });
  });
});

describe('SQL Server capture check', () => {
  const request = {
    changelog: 'deltasync_changelog',
    tables: [
      { table: 'orders', key: [] },
      { table: 'sales.lines', key: [] },
    ],
  };

  it('looks up the change log and each table trigger, enabled or not, in one statement', () => {
    expect(captureStateSql(request, 'dbo')).toBe(
      "SELECT CASE WHEN OBJECT_ID(N'[dbo].[deltasync_changelog]', N'U') IS NULL THEN 0 ELSE 1 END AS log, " +
        "(SELECT CASE WHEN tr.is_disabled = 0 THEN 1 ELSE 0 END FROM sys.triggers AS tr WHERE tr.object_id = OBJECT_ID(N'[dbo].[deltasync_changelog_orders]') AND tr.parent_id = OBJECT_ID(N'[dbo].[orders]')) AS t0, " +
        "(SELECT CASE WHEN tr.is_disabled = 0 THEN 1 ELSE 0 END FROM sys.triggers AS tr WHERE tr.object_id = OBJECT_ID(N'[sales].[deltasync_changelog_lines]') AND tr.parent_id = OBJECT_ID(N'[sales].[lines]')) AS t1",
    );
  });

  it('names each table whose trigger is missing or disabled', () => {
    expect(missingCapture(request, { log: 1, t0: 1, t1: 1 })).toBeNull();
    expect(missingCapture(request, { log: 1, t0: null, t1: 0 })).toBe(
      'change capture is not installed for orders (no trigger), sales.lines (trigger disabled): their writes would never reach the change log',
    );
    expect(missingCapture(request, { log: 0 })).toBe(
      'the change log deltasync_changelog does not exist',
    );
  });
});
