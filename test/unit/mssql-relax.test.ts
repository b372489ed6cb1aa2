import { describe, expect, it } from 'vitest';
import {
  relaxForeignKeysSql,
  restoreForeignKeysSql,
  uniqueKeySql,
} from '../../src/db/mssql/load.js';
import { tableName } from '../../src/db/mssql/sql.js';

describe('SQL Server: relaxing foreign keys inside a delta', () => {
  it('switches off every enabled key from or to the tables and remembers them', () => {
    const sql = relaxForeignKeysSql([tableName('staff', 'dbo'), tableName("o'k.store", 'dbo')]);
    expect(sql).toBe(
      [
        "IF OBJECT_ID(N'tempdb..#deltasync_relaxed_fks') IS NULL CREATE TABLE #deltasync_relaxed_fks (child nvarchar(600) NOT NULL, fk nvarchar(300) NOT NULL);",
        "INSERT INTO #deltasync_relaxed_fks (child, fk) SELECT QUOTENAME(OBJECT_SCHEMA_NAME(fk.parent_object_id)) + N'.' + QUOTENAME(OBJECT_NAME(fk.parent_object_id)), QUOTENAME(fk.name) FROM sys.foreign_keys AS fk",
        "  WHERE fk.is_disabled = 0 AND (fk.parent_object_id IN (OBJECT_ID(N'[dbo].[staff]'), OBJECT_ID(N'[o''k].[store]')) OR fk.referenced_object_id IN (OBJECT_ID(N'[dbo].[staff]'), OBJECT_ID(N'[o''k].[store]')));",
        "DECLARE @off nvarchar(max) = N'';",
        "SELECT @off = @off + N'ALTER TABLE ' + child + N' NOCHECK CONSTRAINT ' + fk + N';' FROM #deltasync_relaxed_fks;",
        'EXEC sp_executesql @off;',
      ].join('\n'),
    );
  });

  it('switches them back on WITH CHECK, so a row left without its parent fails the commit', () => {
    const sql = restoreForeignKeysSql();
    expect(sql).toContain("N' WITH CHECK CHECK CONSTRAINT ' + fk");
    expect(sql).toContain('DROP TABLE #deltasync_relaxed_fks;');
    expect(sql.indexOf('DROP TABLE')).toBeLessThan(sql.indexOf('EXEC sp_executesql @on'));
  });
});

describe('SQL Server: the key needs a unique index', () => {
  it('counts unfiltered unique indexes whose key columns are exactly the key', () => {
    expect(uniqueKeySql(tableName('store', 'dbo'), ['id', "o'k"])).toBe(
      "SELECT COUNT(*) AS found FROM sys.indexes AS i WHERE i.object_id = OBJECT_ID(N'[dbo].[store]')" +
        ' AND i.is_unique = 1 AND i.has_filter = 0' +
        ' AND (SELECT COUNT(*) FROM (SELECT 1 FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id' +
        ' WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0) AS k) = 2' +
        ' AND NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id' +
        " WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0 AND c.name NOT IN (N'id', N'o''k'))",
    );
  });
});
