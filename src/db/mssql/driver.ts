/**
 * The mssql driver's type objects for the types this adapter sends: staging columns of a bulk
 * load and parameters of generated statements.
 */
import sql from 'mssql';
import type { Query } from './sql.js';
import type { DriverType } from './types.js';

/** The mssql type object for a driver type and length (`sql.NVarChar(100)`, `sql.Int`, ...). */
export function driverType(column: { driver: DriverType; length?: number | 'max' }): sql.ISqlType {
  const length = column.length === 'max' ? sql.MAX : column.length;
  switch (column.driver) {
    case 'NVarChar':
      return sql.NVarChar(length);
    case 'VarChar':
      return sql.VarChar(length);
    case 'VarBinary':
      return sql.VarBinary(length);
    default:
      return sql[column.driver]();
  }
}

/** A VarChar parameter without a length is a number or a bound in text: 40 characters hold it. */
const DEFAULT_VARCHAR_LENGTH = 40;

/** Binds a generated query's parameters with the types it asked for. */
export function bind(request: sql.Request, query: Query): sql.Request {
  for (const p of query.params) {
    const length = p.length ?? (p.type === 'VarChar' ? DEFAULT_VARCHAR_LENGTH : undefined);
    request.input(p.name, driverType({ driver: p.type, length }), p.value);
  }
  return request;
}
