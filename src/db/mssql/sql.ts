/**
 * The SQL the SQL Server adapter sends to read a source and keep the bookkeeping table, as pure
 * functions of table and column descriptions, so that unit tests can check every statement
 * without a server. The SQL that writes rows is in `merge.ts`.
 */
import { ConfigError } from '../../errors.js';
import { APPLIED_TABLE } from '../types.js';
import { quoteIdent, readExpression, type MssqlColumn } from './types.js';

/** A table name resolved against the configured schema. */
export interface TableName {
  schema: string;
  name: string;
  /** `[schema].[name]`, for SQL. */
  quoted: string;
  /** `schema.name`, for messages. */
  label: string;
}

/** `orders` lives in the configured schema; `sales.orders` names its schema. */
export function tableName(table: string, defaultSchema: string): TableName {
  const dot = table.indexOf('.');
  const schema = dot === -1 ? defaultSchema : table.slice(0, dot);
  const name = dot === -1 ? table : table.slice(dot + 1);
  return {
    schema,
    name,
    quoted: `${quoteIdent(schema)}.${quoteIdent(name)}`,
    label: `${schema}.${name}`,
  };
}

/** A string literal; for the few places that take a name as text (OBJECT_ID). */
function literal(text: string): string {
  return `N'${text.replaceAll("'", "''")}'`;
}

/**
 * Reflects a table or view: one row per column (see ReflectedColumn), none when it does not
 * exist. `@table` is the quoted two-part name. Alias types resolve to their system type through
 * system_type_id; CLR types (geography, hierarchyid) keep their own name and stay unsupported.
 */
export const REFLECT_COLUMNS_SQL = `SELECT c.name AS name,
  CASE WHEN t.is_assembly_type = 1 THEN t.name ELSE TYPE_NAME(c.system_type_id) END AS base_type,
  c.max_length AS max_length, c.[precision] AS num_precision, c.scale AS num_scale,
  c.is_identity AS is_identity, c.is_computed AS is_computed, c.collation_name AS collation_name
FROM sys.columns AS c
JOIN sys.types AS t ON t.user_type_id = c.user_type_id
WHERE c.object_id = OBJECT_ID(@table)
ORDER BY c.column_id`;

/** A parameter of a generated statement: BigInt values are JS bigints, VarChar ones strings. */
export interface QueryParam {
  name: string;
  type: 'BigInt' | 'VarChar';
  value: bigint | string;
}

/** A statement and its parameters. */
export interface Query {
  text: string;
  params: QueryParam[];
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INTEGER_TYPES = new Set(['tinyint', 'smallint', 'int', 'bigint']);

function parseBound(what: string, value: string): bigint {
  if (!/^-?\d+$/.test(value))
    throw new ConfigError(`${what} logId '${value}' is not a whole number`);
  return BigInt(value);
}

const clamp = (v: bigint, lo: bigint, hi: bigint): bigint => (v < lo ? lo : v > hi ? hi : v);

/**
 * The WHERE clause `after < logId <= upTo` and its parameters. Bounds are never JS numbers: a
 * rowversion or bigint logId passes 2^53. Integer columns compare with BIGINT parameters (bounds
 * clamped to bigint's range, which no value of the column can leave). rowversion compares as
 * binary(8), which orders like its counter and, unlike CONVERT(bigint, col), can use an index;
 * bounds are clamped at 0 because a negative bigint would become a huge binary(8). Decimal
 * columns compare with a string the server parses, because tedious sends decimal parameters
 * through parseFloat.
 */
export function logIdRange(logId: MssqlColumn, after: string, upTo: string): Query {
  const col = quoteIdent(logId.name);
  const lo = parseBound('after', after);
  const hi = parseBound('upTo', upTo);
  if (logId.baseType === 'rowversion') {
    return {
      text: `${col} > CONVERT(binary(8), @after) AND ${col} <= CONVERT(binary(8), @upTo)`,
      params: [
        { name: 'after', type: 'BigInt', value: clamp(lo, 0n, INT64_MAX) },
        { name: 'upTo', type: 'BigInt', value: clamp(hi, 0n, INT64_MAX) },
      ],
    };
  }
  if (INTEGER_TYPES.has(logId.baseType)) {
    return {
      text: `${col} > @after AND ${col} <= @upTo`,
      params: [
        { name: 'after', type: 'BigInt', value: clamp(lo, INT64_MIN, INT64_MAX) },
        { name: 'upTo', type: 'BigInt', value: clamp(hi, INT64_MIN, INT64_MAX) },
      ],
    };
  }
  if (/^(decimal|numeric)\(\d+,0\)$/.test(logId.nativeType)) {
    return {
      text: `${col} > CONVERT(decimal(38,0), @after) AND ${col} <= CONVERT(decimal(38,0), @upTo)`,
      params: [
        { name: 'after', type: 'VarChar', value: lo.toString() },
        { name: 'upTo', type: 'VarChar', value: hi.toString() },
      ],
    };
  }
  throw new ConfigError(`logId column ${logId.name} is ${logId.nativeType}`, {
    hint: 'use an integer, decimal(p,0) or rowversion column as the logId',
  });
}

/** The streaming read of `after < logId <= upTo`, ordered by logId, in wire form. */
export function readChangesQuery(
  table: TableName,
  columns: MssqlColumn[],
  logId: MssqlColumn,
  after: string,
  upTo: string,
): Query {
  const range = logIdRange(logId, after, upTo);
  const select = columns.map(readExpression).join(', ');
  return {
    text: `SELECT ${select} FROM ${table.quoted} WHERE ${range.text} ORDER BY ${quoteIdent(logId.name)}`,
    params: range.params,
  };
}

/**
 * The highest logId as a decimal string (`max_log_id`), and for rowversion the highest one that
 * can no longer be joined by a lower, uncommitted value (`stable_log_id`): a transaction that
 * took rowversion 105 may commit after one that took 106, and MIN_ACTIVE_ROWVERSION() is the
 * lowest value still in flight.
 */
export function maxLogIdQuery(table: TableName, logId: MssqlColumn): string {
  logIdRange(logId, '0', '0'); // the same column rules as readChanges
  const col = quoteIdent(logId.name);
  if (logId.baseType === 'rowversion') {
    return (
      `SELECT CONVERT(varchar(20), CONVERT(bigint, MAX(${col}))) AS max_log_id, ` +
      `CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable_log_id ` +
      `FROM ${table.quoted}`
    );
  }
  return `SELECT CONVERT(varchar(40), MAX(${col})) AS max_log_id, NULL AS stable_log_id FROM ${table.quoted}`;
}

/** The bookkeeping table in the configured schema. */
export function appliedTable(schema: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(APPLIED_TABLE)}`;
}

/** Creates the bookkeeping table unless it exists (see TargetWriter.prepare). */
export function prepareSql(schema: string): string {
  const table = appliedTable(schema);
  return (
    `IF OBJECT_ID(${literal(table)}, N'U') IS NULL\n` +
    `CREATE TABLE ${table} (job nvarchar(200) NOT NULL PRIMARY KEY, log_id varchar(40) NOT NULL, ` +
    `delta nvarchar(255) NULL, applied_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME())`
  );
}

/**
 * The applied logId of `@job`; no result set when the bookkeeping table does not exist yet
 * (status before the first load). Inside a transaction the row stays locked to the end, so two
 * loads of one job cannot both read the same starting point.
 */
export function appliedLogIdSql(schema: string, lock: boolean): string {
  const table = appliedTable(schema);
  const hint = lock ? ' WITH (UPDLOCK, HOLDLOCK)' : '';
  return `IF OBJECT_ID(${literal(table)}, N'U') IS NOT NULL\nSELECT log_id FROM ${table}${hint} WHERE job = @job`;
}

/** Sets the job's applied logId (@job, @logId, @delta), creating its row the first time. */
export function recordAppliedSql(schema: string): string {
  const table = appliedTable(schema);
  return (
    `UPDATE ${table} SET log_id = @logId, delta = @delta, applied_at = SYSUTCDATETIME() WHERE job = @job;\n` +
    `IF @@ROWCOUNT = 0\n` +
    `INSERT INTO ${table} (job, log_id, delta) VALUES (@job, @logId, @delta);`
  );
}
