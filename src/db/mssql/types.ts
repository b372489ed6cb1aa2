/**
 * SQL Server types: native type -> LogicalType, the SQL that renders a column as its wire value,
 * and wire value <-> driver value.
 *
 * Reading, the server does the formatting (see `readExpression`): bigint, decimal, money and
 * every date/time type leave SQL Server as strings, because tedious would hand them to us as JS
 * numbers and Dates (float and millisecond precision). Writing, the same types are staged as
 * strings and parsed by the server with CONVERT (see `stagingFor`), because tedious sends
 * decimal parameters through parseFloat and datetime2 through a JS Date.
 */
import { ConfigError, DeltaError } from '../../errors.js';
import type { ColumnInfo, LogicalType, WireValue } from '../types.js';

/** One row of the reflection query (`REFLECT_COLUMNS_SQL`). */
export interface ReflectedColumn {
  name: string;
  /** The system type name, alias types resolved (`sysname` -> nvarchar); `timestamp` for rowversion. */
  base_type: string;
  /** Bytes; -1 for (max). */
  max_length: number;
  num_precision: number;
  num_scale: number;
  is_identity: boolean;
  is_computed: boolean;
  collation_name: string | null;
  /** Absent in rows built by hand: nullable. */
  is_nullable?: boolean;
}

/** A column as the adapter sees it: the contract's ColumnInfo plus what writing needs. */
export interface MssqlColumn {
  name: string;
  /** Undefined for types deltasync cannot carry (sql_variant, geography, hierarchyid, ...). */
  type: LogicalType | undefined;
  /** Lowercase base type name, `rowversion` for timestamp. */
  baseType: string;
  /** The full declaration, e.g. `decimal(38,10)`, `nvarchar(max)`, `datetime2(3)`. */
  nativeType: string;
  /** Length in characters (strings) or bytes (binary); 'max' for (max) types. */
  length?: number | 'max';
  identity: boolean;
  computed: boolean;
  collation: string | null;
  /** Whether the column takes NULL: a NOT NULL one fed NULL is refused before the MERGE. */
  nullable: boolean;
}

/** Base type name -> logical type. Anything not listed is unsupported. */
const LOGICAL_BY_BASE_TYPE: Record<string, LogicalType> = {
  tinyint: 'int',
  smallint: 'int',
  int: 'int',
  bigint: 'bigint',
  rowversion: 'bigint',
  decimal: 'decimal',
  numeric: 'decimal',
  money: 'decimal',
  smallmoney: 'decimal',
  real: 'float',
  float: 'float',
  bit: 'bool',
  char: 'text',
  varchar: 'text',
  nchar: 'text',
  nvarchar: 'text',
  text: 'text',
  ntext: 'text',
  xml: 'text',
  json: 'json',
  binary: 'binary',
  varbinary: 'binary',
  image: 'binary',
  date: 'date',
  time: 'time',
  datetime: 'timestamp',
  datetime2: 'timestamp',
  smalldatetime: 'timestamp',
  datetimeoffset: 'timestamptz',
  uniqueidentifier: 'uuid',
};

/** The logical type of a base type name, or undefined when deltasync cannot carry it. */
export function logicalTypeOf(baseType: string): LogicalType | undefined {
  return LOGICAL_BY_BASE_TYPE[normaliseBaseType(baseType)];
}

/** SQL Server still reports rowversion by its deprecated name, timestamp. */
function normaliseBaseType(baseType: string): string {
  const lower = baseType.toLowerCase();
  return lower === 'timestamp' ? 'rowversion' : lower;
}

const CHAR_TYPES = new Set(['char', 'varchar', 'binary', 'varbinary']);
const UNICODE_TYPES = new Set(['nchar', 'nvarchar']);
const SCALED_TIME_TYPES = new Set(['time', 'datetime2', 'datetimeoffset']);

/** Builds the adapter's view of a column from one row of the reflection query. */
export function toMssqlColumn(row: ReflectedColumn): MssqlColumn {
  const baseType = normaliseBaseType(row.base_type);
  let nativeType = baseType;
  let length: number | 'max' | undefined;
  if (CHAR_TYPES.has(baseType) || UNICODE_TYPES.has(baseType)) {
    // sys.columns counts bytes; nchar/nvarchar declarations count 2-byte characters.
    length = row.max_length === -1 ? 'max' : row.max_length / (UNICODE_TYPES.has(baseType) ? 2 : 1);
    nativeType = `${baseType}(${length})`;
  } else if (baseType === 'decimal' || baseType === 'numeric') {
    nativeType = `${baseType}(${row.num_precision},${row.num_scale})`;
  } else if (SCALED_TIME_TYPES.has(baseType)) {
    nativeType = `${baseType}(${row.num_scale})`;
  } else if (baseType === 'text' || baseType === 'ntext' || baseType === 'image') {
    length = 'max';
  }
  return {
    name: row.name,
    type: logicalTypeOf(baseType),
    baseType,
    nativeType,
    length,
    identity: Boolean(row.is_identity),
    computed: Boolean(row.is_computed),
    collation: row.collation_name,
    nullable: row.is_nullable === undefined ? true : Boolean(row.is_nullable),
  };
}

/** The contract's view of a column: nothing engine-internal leaks into manifests. */
export function publicColumn(column: MssqlColumn): ColumnInfo {
  if (!column.type) throw new Error(`column ${column.name} has no logical type`);
  return { name: column.name, type: column.type, nativeType: column.nativeType };
}

/** `[name]` with `]` doubled. Every identifier we put into SQL goes through this. */
export function quoteIdent(name: string): string {
  return `[${name.replaceAll(']', ']]')}]`;
}

/**
 * The SQL expression that renders a column as (the driver form of) its wire value. Styles are
 * explicit so that output does not depend on the database's compatibility level or language:
 * 121 is `yyyy-mm-dd hh:mi:ss.fffffff`, 23 is `yyyy-mm-dd`, 2 is money with four decimals and
 * no thousands separators. `expr` is the SQL for the value when it is not simply the column
 * (a qualified `t.[col]` in a join, a key parsed back from the change log).
 */
export function readExpression(column: MssqlColumn, expr = quoteIdent(column.name)): string {
  const col = expr;
  switch (column.baseType) {
    case 'bigint':
      return `CONVERT(varchar(20), ${col})`;
    case 'rowversion':
      // rowversion is binary(8); as bigint it is the counter the logId wants (beyond 2^53).
      return `CONVERT(varchar(20), CONVERT(bigint, ${col}))`;
    case 'decimal':
    case 'numeric':
      return `CONVERT(varchar(50), ${col})`;
    case 'money':
    case 'smallmoney':
      return `CONVERT(varchar(30), ${col}, 2)`;
    case 'xml':
    case 'json':
      return `CONVERT(nvarchar(max), ${col})`;
    case 'date':
      return `CONVERT(char(10), ${col}, 23)`;
    case 'time':
      return `CONVERT(varchar(16), ${col}, 121)`;
    case 'datetime':
    case 'datetime2':
    case 'smalldatetime':
      return `CONVERT(varchar(27), ${col}, 121)`;
    case 'datetimeoffset':
      // SWITCHOFFSET to UTC, then drop the (now zero) offset: the wall clock left is UTC.
      return `CONVERT(varchar(27), CONVERT(datetime2(7), SWITCHOFFSET(${col}, '+00:00')), 121)`;
    case 'uniqueidentifier':
      return `LOWER(CONVERT(char(36), ${col}))`;
    default:
      // ints, float/real, bit, strings and binary arrive from tedious in an exact JS form.
      return col;
  }
}

/**
 * `hh:mm:ss[.fffffff]` with the fraction cut to the wire's six digits and left out when zero,
 * which is how the other engines render it. SQL Server's seventh digit (100 ns) cannot travel.
 */
export function canonicalFraction(text: string): string {
  const dot = text.lastIndexOf('.');
  if (dot === -1) return text;
  const digits = text.slice(dot + 1, dot + 7).padEnd(6, '0');
  return /^0+$/.test(digits) ? text.slice(0, dot) : `${text.slice(0, dot)}.${digits}`;
}

/** Turns one driver value (as `readExpression` makes it arrive) into its wire value. */
export type WireReader = (value: unknown) => WireValue;

const asIs: WireReader = (v) => (v === undefined ? null : (v as WireValue));
const fraction: WireReader = (v) => (v == null ? null : canonicalFraction(String(v)));
const utc: WireReader = (v) =>
  v == null ? null : `${canonicalFraction(String(v)).replace(' ', 'T')}Z`;
const base64: WireReader = (v) => (v == null ? null : (v as Buffer).toString('base64'));

/** The reader for a column's logical type. */
export function wireReader(type: LogicalType): WireReader {
  switch (type) {
    case 'binary':
      return base64;
    case 'time':
    case 'timestamp':
      return fraction;
    case 'timestamptz':
      return utc;
    default:
      return asIs;
  }
}

const NUMERIC_LOGICAL = new Set<LogicalType>(['int', 'bigint', 'decimal']);
const STRING_LOGICAL = new Set<LogicalType>(['text', 'json', 'uuid']);
const toNumber: WireReader = (v) => (v == null ? null : Number(v));
const toDigits: WireReader = (v) => (v == null ? null : String(v));

/**
 * How to read `column` as a wire value of `type`: the SQL (over `expr`) and the reader, or
 * undefined when the column cannot give that type. A source column is read as its own type (or
 * text as json). A replica column may also hold what `stagingFor` wrote into it from another
 * type (`lenient`): an int delta column in a bigint one, a bigint in decimal(20,0), a uuid in
 * nvarchar; verify must read back what load wrote, in the delta's types.
 */
export function wireRead(
  column: MssqlColumn,
  type: LogicalType,
  options: { expr?: string; lenient?: boolean } = {},
): { sql: string; read: WireReader } | undefined {
  const have = column.type;
  if (!have) return undefined;
  const sql = readExpression(column, options.expr);
  if (have === type || (have === 'text' && type === 'json')) return { sql, read: wireReader(type) };
  if (!options.lenient) return undefined;
  if (NUMERIC_LOGICAL.has(type) && NUMERIC_LOGICAL.has(have)) {
    return { sql, read: type === 'int' ? toNumber : toDigits };
  }
  if (STRING_LOGICAL.has(type) && STRING_LOGICAL.has(have)) return { sql, read: asIs };
  return undefined;
}

/** The driver types a staging column can be bulk loaded as (names of `sql.<Type>` in mssql). */
export type DriverType =
  | 'TinyInt'
  | 'SmallInt'
  | 'Int'
  | 'BigInt'
  | 'Float'
  | 'Bit'
  | 'NVarChar'
  | 'VarChar'
  | 'VarBinary'
  | 'UniqueIdentifier';

/** How a delta column is staged: the driver type, and how its typed value is rebuilt in SQL. */
export interface Staging {
  driver: DriverType;
  length?: number | 'max';
  /** Wraps the staged column's SQL into the typed value to write; identity when staged typed. */
  parse: (staged: string) => string;
}

const INT_TYPES: Record<string, DriverType> = {
  tinyint: 'TinyInt',
  smallint: 'SmallInt',
  int: 'Int',
  bigint: 'BigInt',
};
const NUMERIC_TYPES = new Set([
  ...Object.keys(INT_TYPES),
  ...['decimal', 'numeric', 'money', 'smallmoney', 'float', 'real', 'bit'],
]);
/** nvarchar(n) holds at most 4000 characters; longer staging columns are (max). */
const MAX_NVARCHAR = 4000;
const MAX_VARBINARY = 8000;

const typed = (staged: string): string => staged;

/**
 * How a wire value of `type` is staged for the target column `target`. Integers, floats, bits,
 * strings, binary and uuids go in the target's own type (or the nearest the driver can carry
 * exactly). Decimals, bigints bound for non-bigint columns and every date/time type go as
 * strings, parsed by the server in formats no language or DATEFORMAT setting can misread,
 * because the driver would round them. Strings and binary are never CONVERTed to the target
 * type: CONVERT truncates silently, while assigning the longer value to the column fails loudly.
 */
export function stagingFor(type: LogicalType, target: MssqlColumn): Staging {
  const decl = target.nativeType;
  switch (type) {
    case 'int':
      return { driver: INT_TYPES[target.baseType] ?? 'BigInt', parse: typed };
    case 'bigint':
      if (target.baseType in INT_TYPES) return { driver: 'BigInt', parse: typed };
      return { driver: 'VarChar', length: 40, parse: numericParse(decl, target) };
    case 'decimal':
      return { driver: 'VarChar', length: 100, parse: numericParse(decl, target) };
    case 'float':
      return { driver: 'Float', parse: typed };
    case 'bool':
      return { driver: 'Bit', parse: typed };
    case 'text':
    case 'json':
      return { driver: 'NVarChar', length: sizedLength(target, MAX_NVARCHAR), parse: typed };
    case 'binary':
      return { driver: 'VarBinary', length: sizedLength(target, MAX_VARBINARY), parse: typed };
    case 'uuid':
      if (target.baseType === 'uniqueidentifier')
        return { driver: 'UniqueIdentifier', parse: typed };
      return { driver: 'NVarChar', length: 36, parse: typed };
    case 'date':
      return { driver: 'VarChar', length: 10, parse: (s) => `CONVERT(date, ${s}, 23)` };
    case 'time':
      // hh:mm:ss[.fffffff] reads the same whatever the session's language or DATEFORMAT.
      return { driver: 'VarChar', length: 16, parse: (s) => `CONVERT(time(7), ${s})` };
    case 'timestamp':
      // Into datetime, convert explicitly: since SQL Server 2016 (compatibility level 130) a
      // datetime compared with a datetime2 counts in exact 1/300 s ticks, so '.003' as
      // datetime2 would never equal the stored .00333... and a key would never match.
      if (target.baseType === 'datetime') {
        return {
          driver: 'VarChar',
          length: 27,
          parse: (s) => `CONVERT(datetime, CONVERT(datetime2(7), ${s}, 121))`,
        };
      }
      return { driver: 'VarChar', length: 27, parse: (s) => `CONVERT(datetime2(7), ${s}, 121)` };
    case 'timestamptz':
      // The wire's 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z' is ISO 8601 in UTC, which datetimeoffset reads
      // whatever the session's language or DATEFORMAT. No style: SQL Server refuses most styles
      // in conversions to datetimeoffset (error 9809).
      return { driver: 'VarChar', length: 28, parse: (s) => `CONVERT(datetimeoffset(7), ${s})` };
  }
}

function numericParse(decl: string, target: MssqlColumn): (s: string) => string {
  // Into a numeric column the server parses the digits exactly; into anything else (a string
  // column, say) the digits are the value.
  return NUMERIC_TYPES.has(target.baseType) ? (s) => `CONVERT(${decl}, ${s})` : typed;
}

function sizedLength(target: MssqlColumn, max: number): number | 'max' {
  const n = target.length;
  return typeof n === 'number' && n <= max ? n : 'max';
}

/** Turns one wire value into what the driver expects for the staging column. */
export type DriverWriter = (value: WireValue) => unknown;

/**
 * The writer for a wire value of `type` staged as `driver`. A value of the wrong JSON type means
 * the delta contradicts its own manifest: a DeltaError, naming the column.
 */
export function driverWriter(type: LogicalType, driver: DriverType, column: string): DriverWriter {
  const wrong = (value: WireValue, expected: string): never => {
    throw new DeltaError(
      `column ${column}: expected ${expected} for type ${type}, got ${JSON.stringify(value)}`,
    );
  };
  switch (driver) {
    case 'TinyInt':
    case 'SmallInt':
    case 'Int':
    case 'BigInt':
      if (type === 'bigint') {
        return (v) =>
          v === null ? null : /^-?\d+$/.test(String(v)) ? BigInt(v) : wrong(v, 'digits');
      }
      return (v) => (v === null || Number.isSafeInteger(v) ? v : wrong(v, 'an integer'));
    case 'Float':
      return (v) => {
        if (v === null || typeof v === 'number') return v;
        if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') {
          throw new ConfigError(`column ${column}: SQL Server float cannot hold ${v}`, {
            hint: 'map the column to a text column on the target',
          });
        }
        return wrong(v, 'a number');
      };
    case 'Bit':
      return (v) => (v === null || typeof v === 'boolean' ? v : wrong(v, 'true or false'));
    case 'VarBinary':
      return (v) =>
        v === null ? null : typeof v === 'string' ? Buffer.from(v, 'base64') : wrong(v, 'base64');
    default:
      // Strings the server parses (decimal, dates) or stores (text, json, uuid).
      return (v) => (v === null ? null : typeof v === 'string' ? v : wrong(v, 'a string'));
  }
}
