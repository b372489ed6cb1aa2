/**
 * The SQL the SQL Server adapter sends to read a source and keep the bookkeeping table, as pure
 * functions of table and column descriptions, so that unit tests can check every statement
 * without a server. The SQL that writes rows is in `load.ts`.
 */
import { ConfigError } from '../../errors.js';
import { APPLIED_TABLE } from '../types.js';
import { quoteIdent, readExpression, type DriverType, type MssqlColumn } from './types.js';

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
export function literal(text: string): string {
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
  c.is_identity AS is_identity, c.is_computed AS is_computed, c.collation_name AS collation_name,
  c.is_nullable AS is_nullable
FROM sys.columns AS c
JOIN sys.types AS t ON t.user_type_id = c.user_type_id
WHERE c.object_id = OBJECT_ID(@table)
ORDER BY c.column_id`;

/**
 * A parameter of a generated statement, typed for the driver: BigInt values are JS bigints (never
 * numbers, which lose digits past 2^53), VarChar and NVarChar ones strings.
 */
export interface QueryParam {
  name: string;
  type: DriverType;
  /** For strings and binary; a VarChar without one is 40 characters (a number in text). */
  length?: number | 'max';
  value: unknown;
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
export function logIdRange(
  logId: MssqlColumn,
  after: string,
  upTo: string,
  options: { suffix?: string; column?: string } = {},
): Query {
  const col = options.column ?? quoteIdent(logId.name);
  const a = `after${options.suffix ?? ''}`;
  const u = `upTo${options.suffix ?? ''}`;
  const lo = parseBound('after', after);
  const hi = parseBound('upTo', upTo);
  switch (logIdKind(logId)) {
    case 'rowversion':
      return {
        text: `${col} > CONVERT(binary(8), @${a}) AND ${col} <= CONVERT(binary(8), @${u})`,
        params: [
          { name: a, type: 'BigInt', value: clamp(lo, 0n, INT64_MAX) },
          { name: u, type: 'BigInt', value: clamp(hi, 0n, INT64_MAX) },
        ],
      };
    case 'integer':
      return {
        text: `${col} > @${a} AND ${col} <= @${u}`,
        params: [
          { name: a, type: 'BigInt', value: clamp(lo, INT64_MIN, INT64_MAX) },
          { name: u, type: 'BigInt', value: clamp(hi, INT64_MIN, INT64_MAX) },
        ],
      };
    case 'decimal':
      return {
        text: `${col} > CONVERT(decimal(38,0), @${a}) AND ${col} <= CONVERT(decimal(38,0), @${u})`,
        params: [
          { name: a, type: 'VarChar', value: lo.toString() },
          { name: u, type: 'VarChar', value: hi.toString() },
        ],
      };
  }
}

/** How a logId column counts; ConfigError for a column that cannot be a logId. */
export function logIdKind(logId: MssqlColumn): 'rowversion' | 'integer' | 'decimal' {
  if (logId.baseType === 'rowversion') return 'rowversion';
  if (INTEGER_TYPES.has(logId.baseType)) return 'integer';
  if (/^(decimal|numeric)\(\d+,0\)$/.test(logId.nativeType)) return 'decimal';
  throw new ConfigError(`logId column ${logId.name} is ${logId.nativeType}`, {
    hint: 'use an integer, decimal(p,0) or rowversion column as the logId',
  });
}

/**
 * A logId column as a number SQL can order across tables: rowversion (binary(8)) as its bigint
 * counter, integers as bigint, decimal(p,0) as decimal(38,0) (UNION ALL widens the rest to it).
 */
export function logIdNumber(logId: MssqlColumn, column = quoteIdent(logId.name)): string {
  switch (logIdKind(logId)) {
    case 'rowversion':
    case 'integer':
      return `CONVERT(bigint, ${column})`;
    case 'decimal':
      return `CONVERT(decimal(38,0), ${column})`;
  }
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
  const select = columns.map((c) => readExpression(c)).join(', ');
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

/** One table's part of an nthLogId: its logId column and its own cursor. */
export interface LogIdCursor {
  table: TableName;
  logId: MssqlColumn;
  after: string;
}

/**
 * The n-th smallest logId after each table's cursor and up to `upTo` (`nth_log_id`, no row when
 * there are fewer). Each table gives at most n candidates through `TOP (@n) ... ORDER BY` on its
 * own column, which an index on the logId serves without a sort; only those meet in the final
 * sort, so the cost is n rows per table whatever the backlog.
 */
export function nthLogIdQuery(tables: LogIdCursor[], upTo: string, n: number): Query {
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`nthLogId: n must be 1 or more, got ${n}`);
  if (tables.length === 0) throw new Error('nthLogId: no tables');
  const params: QueryParam[] = [
    { name: 'n', type: 'BigInt', value: BigInt(n) },
    { name: 'skip', type: 'BigInt', value: BigInt(n - 1) },
  ];
  const branches = tables.map((t, i) => {
    const range = logIdRange(t.logId, t.after, upTo, { suffix: String(i) });
    params.push(...range.params);
    return (
      `SELECT log_id FROM (SELECT TOP (@n) ${logIdNumber(t.logId)} AS log_id FROM ${t.table.quoted} ` +
      `WHERE ${range.text} ORDER BY ${quoteIdent(t.logId.name)}) AS t${i}`
    );
  });
  return {
    text:
      `SELECT CONVERT(varchar(40), u.log_id) AS nth_log_id FROM (${branches.join(' UNION ALL ')}) AS u ` +
      'ORDER BY u.log_id OFFSET @skip ROWS FETCH NEXT 1 ROWS ONLY',
    params,
  };
}

/** Every row in wire form, ordered by the key (snapshot mode, verify). */
export function readAllQuery(table: TableName, select: string[], key: MssqlColumn[]): Query {
  if (key.length === 0) throw new ConfigError(`table ${table.label}: no key columns to order by`);
  return {
    text: `SELECT ${select.join(', ')} FROM ${table.quoted} ORDER BY ${key.map((k) => quoteIdent(k.name)).join(', ')}`,
    params: [],
  };
}

/**
 * The tables `@table` (a quoted two-part name) references through foreign keys, itself left
 * out; one row (`schema_name`, `table_name`) each.
 */
export const REFERENCED_TABLES_SQL = `SELECT DISTINCT OBJECT_SCHEMA_NAME(fk.referenced_object_id) AS schema_name,
  OBJECT_NAME(fk.referenced_object_id) AS table_name
FROM sys.foreign_keys AS fk
WHERE fk.parent_object_id = OBJECT_ID(@table) AND fk.referenced_object_id <> fk.parent_object_id
ORDER BY schema_name, table_name`;

/**
 * The names a configuration may use for a referenced table: `schema.name` always, and the bare
 * name too when it lives in the configured schema (extract matches them against table names as
 * configured, and a config may spell `dbo.orders` either way).
 */
export function referencedNames(
  rows: { schema_name: string; table_name: string }[],
  defaultSchema: string,
): string[] {
  return rows.flatMap((r) => {
    const qualified = `${r.schema_name}.${r.table_name}`;
    return r.schema_name === defaultSchema ? [r.table_name, qualified] : [qualified];
  });
}

/**
 * The server's clock as `yyyy-mm-dd hh:mi:ss.fffffff` (`now`): SYSUTCDATETIME for timestamptz,
 * SYSDATETIME (the server's wall clock; SQL Server has no session time zone) for timestamp.
 */
export function serverTimeSql(type: 'timestamp' | 'timestamptz'): string {
  const now = type === 'timestamptz' ? 'SYSUTCDATETIME()' : 'SYSDATETIME()';
  return `SELECT CONVERT(varchar(27), ${now}, 121) AS now`;
}

/** The server's clock in wire form, always with six fractional digits. */
export function serverTimeWire(type: 'timestamp' | 'timestamptz', now: string): string {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))?$/.exec(now);
  if (!m) throw new Error(`SQL Server returned an unexpected time '${now}'`);
  const wall = `${m[1]} ${m[2]}.${(m[3] ?? '').slice(0, 6).padEnd(6, '0')}`;
  return type === 'timestamptz' ? `${wall.replace(' ', 'T')}Z` : wall;
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
