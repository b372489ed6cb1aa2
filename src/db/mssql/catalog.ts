/**
 * Reading SQL Server's catalog: a table's columns, for the source and the target alike.
 */
import sql from 'mssql';
import { REFLECT_COLUMNS_SQL, type TableName } from './sql.js';
import { toMssqlColumn, type MssqlColumn, type ReflectedColumn } from './types.js';

/**
 * A table's (or view's) columns in column order, through `request` (a pool's, or a
 * transaction's to read inside it); [] when the table does not exist or the login cannot see it.
 */
export async function reflectColumns(
  request: sql.Request,
  table: TableName,
): Promise<MssqlColumn[]> {
  request.input('table', sql.NVarChar(600), table.quoted);
  const result = await request.query<ReflectedColumn>(REFLECT_COLUMNS_SQL);
  return result.recordset.map(toMssqlColumn);
}
