/**
 * MySQL/MariaDB types: native type -> LogicalType, driver value -> wire value (source side) and
 * wire value -> SQL literal or LOAD DATA field (target side). Pure functions, unit-tested in
 * `test/unit/mysql-types.test.ts`.
 *
 * The driver is set up (see `connection.ts`) to hand over every exact type as text: BIGINT and
 * DECIMAL as strings, DATETIME/TIMESTAMP/DATE as the server's own text, JSON as text, and
 * binary columns (BLOB, BINARY, BIT, GEOMETRY) as Buffers. So reading never goes through a JS
 * number or Date, which is where precision would be lost.
 */
import type { ColumnInfo, LogicalType, WireValue } from '../types.js';
import { ConfigError, DeltaError } from '../../errors.js';

/** One row of information_schema.COLUMNS, as `reflectColumns` reads it. */
export interface NativeColumn {
  name: string;
  /** DATA_TYPE, lower case, e.g. `tinyint`, `longtext`. */
  dataType: string;
  /** COLUMN_TYPE as the server spells it, e.g. `tinyint(1) unsigned`, `enum('A','b')`. */
  columnType: string;
  /** True when a CHECK (json_valid(col)) makes a MariaDB LONGTEXT a JSON column. */
  jsonChecked: boolean;
  /** CHARACTER_SET_NAME and COLLATION_NAME of a character column (null for other types). */
  charset?: string | null;
  collation?: string | null;
  /** A generated column (`AS (…) VIRTUAL` or `STORED`): the server computes it, never written. */
  generated?: boolean;
}

const LOGICAL_BY_DATA_TYPE: Record<string, LogicalType> = {
  smallint: 'int',
  mediumint: 'int',
  int: 'int',
  integer: 'int',
  year: 'int',
  bigint: 'bigint',
  decimal: 'decimal',
  numeric: 'decimal',
  float: 'float',
  double: 'float',
  real: 'float',
  char: 'text',
  varchar: 'text',
  tinytext: 'text',
  text: 'text',
  mediumtext: 'text',
  longtext: 'text',
  enum: 'text',
  set: 'text',
  inet4: 'text',
  inet6: 'text',
  binary: 'binary',
  varbinary: 'binary',
  tinyblob: 'binary',
  blob: 'binary',
  mediumblob: 'binary',
  longblob: 'binary',
  // Geometry travels as the server's internal value (SRID + WKB): exact MySQL to MySQL.
  geometry: 'binary',
  point: 'binary',
  linestring: 'binary',
  polygon: 'binary',
  multipoint: 'binary',
  multilinestring: 'binary',
  multipolygon: 'binary',
  geometrycollection: 'binary',
  geomcollection: 'binary',
  date: 'date',
  time: 'time',
  datetime: 'timestamp',
  // TIMESTAMP is stored in UTC and converted to the session time zone, which we pin to +00:00.
  timestamp: 'timestamptz',
  json: 'json',
  uuid: 'uuid',
};

/** Maps a column's native type to the logical type a delta declares for it. */
export function logicalTypeOf(column: NativeColumn, table: string): LogicalType {
  const { dataType } = column;
  const columnType = column.columnType.toLowerCase();
  // MySQL has no boolean type: BOOLEAN is TINYINT(1), and BIT(1) is the other common spelling.
  if (dataType === 'tinyint') return /^tinyint\(1\)/.test(columnType) ? 'bool' : 'int';
  if (dataType === 'bit') return columnType === 'bit(1)' ? 'bool' : 'bigint';
  if (dataType === 'longtext' && column.jsonChecked) return 'json';
  const logical = LOGICAL_BY_DATA_TYPE[dataType];
  if (!logical) {
    throw new ConfigError(
      `column ${table}.${column.name} has type ${columnType}, which deltasync cannot carry`,
      { hint: 'leave the column out of the job or change its type' },
    );
  }
  return logical;
}

/** Quotes an identifier with backticks; a backtick inside the name is doubled. */
export function quoteIdent(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

/** Quotes `table` or `database.table`. */
export function quoteTable(table: string): string {
  return table.split('.').map(quoteIdent).join('.');
}

// ---------------------------------------------------------------- driver value -> wire value

/** Converts one driver value (never null) to its wire value. */
export type ReadConverter = (value: unknown) => WireValue;

/**
 * Six fraction digits, or none when the fraction is zero: the one spelling every engine gives
 * an instant on the wire, whatever the column's precision (DATETIME(2) sends `.12`, DATETIME(6)
 * `.000000`).
 */
export function canonicalFraction(text: string): string {
  const dot = text.lastIndexOf('.');
  if (dot < 0) return text;
  const digits = text.slice(dot + 1).padEnd(6, '0');
  return /^0+$/.test(digits) ? text.slice(0, dot) : `${text.slice(0, dot)}.${digits}`;
}

/**
 * The shortest decimal that reads back as the same FLOAT (float32). The server prints FLOAT
 * with 6 significant digits (1234567 comes out as 1234570), so the source selects `col + 0e0`,
 * the exact value as a double, and this turns 0.10000000149011612 back into 0.1.
 */
export function shortestFloat32(value: number): number {
  if (!Number.isFinite(value) || Math.fround(value) !== value) return value;
  for (let digits = 1; digits < 10; digits++) {
    const candidate = Number(value.toPrecision(digits));
    // Near FLT_MAX the shortest spelling (3.4028235e38) is itself out of FLOAT's range, and
    // the server refuses it: keep the exact value there.
    if (Math.fround(candidate) === value && Math.abs(candidate) <= FLT_MAX) return candidate;
  }
  return value;
}

/** The largest finite float32. */
const FLT_MAX = 3.4028234663852886e38;

function bitsToDecimal(buffer: Buffer): string {
  return buffer.length === 0 ? '0' : BigInt('0x' + buffer.toString('hex')).toString();
}

/** The converter for a column, given its logical and native types. */
export function readConverter(type: LogicalType, dataType: string): ReadConverter {
  switch (type) {
    case 'bool':
      // TINYINT(1) arrives as a number, BIT(1) as a one-byte Buffer.
      return (v) => (Buffer.isBuffer(v) ? v.length > 0 && v[v.length - 1] !== 0 : v !== 0);
    case 'bigint':
      return dataType === 'bit' ? (v) => bitsToDecimal(v as Buffer) : (v) => String(v);
    case 'float':
      return dataType === 'float' ? (v) => shortestFloat32(v as number) : (v) => v as number;
    case 'binary':
      return (v) => (v as Buffer).toString('base64');
    case 'timestamp':
    case 'time':
      return (v) => canonicalFraction(v as string);
    case 'timestamptz':
      // The session time zone is +00:00, so the server's text is already the UTC wall clock.
      return (v) => canonicalFraction((v as string).replace(' ', 'T')) + 'Z';
    case 'uuid':
      return (v) => (v as string).toLowerCase();
    case 'int':
    case 'decimal':
    case 'text':
    case 'date':
    case 'json':
      return (v) => v as WireValue;
  }
}

// ---------------------------------------------------------------- wire value -> target

/**
 * How the target receives one column's values: as SQL literals for multi-row INSERTs, or as
 * LOAD DATA fields. `viaHex` marks columns whose LOAD DATA field is hex to be UNHEX()ed, and
 * `viaUnsigned` BIT columns, which LOAD DATA would otherwise fill with the text's bytes.
 */
export interface WriteEncoder {
  literal(value: WireValue): string;
  field(value: WireValue): string;
  viaHex: boolean;
  viaUnsigned: boolean;
}

const BIGINT_RE = /^-?\d+$/;
// No exponent: `1e5` is a DOUBLE literal in MySQL, and would lose digits on the way in.
const DECIMAL_RE = /^-?(\d+(\.\d*)?|\.\d+)$/;
const TIMESTAMPTZ_RE = /^(\d{4,}-\d\d-\d\d)T(\d\d:\d\d:\d\d(\.\d{1,6})?)(Z|\+00:00)$/;

function badValue(column: ColumnInfo, value: WireValue, expected: string): DeltaError {
  const shown = JSON.stringify(value);
  return new DeltaError(
    `column ${column.name} (${column.type}): expected ${expected}, got ${shown.length > 60 ? shown.slice(0, 57) + '...' : shown}`,
  );
}

const SQL_ESCAPES: Record<string, string> = {
  '\0': '\\0',
  '\n': '\\n',
  '\r': '\\r',
  '\x1a': '\\Z',
  "'": "\\'",
  '\\': '\\\\',
};

/** A quoted string literal. Relies on NO_BACKSLASH_ESCAPES being off (the target ensures it). */
export function sqlString(text: string): string {
  return "'" + text.replace(/[\0\n\r\x1a'\\]/g, (c) => SQL_ESCAPES[c]!) + "'";
}

const FIELD_ESCAPES: Record<string, string> = {
  '\0': '\\0',
  '\t': '\\t',
  '\n': '\\n',
  '\r': '\\r',
  '\\': '\\\\',
};

/** A LOAD DATA field (tab-separated, backslash-escaped); `\N` is NULL, an empty field is ''. */
export function tsvField(text: string): string {
  return text.replace(/[\0\t\n\r\\]/g, (c) => FIELD_ESCAPES[c]!);
}

/** Converts wire values to text the server parses back to the same value, for one column. */
function textOf(column: ColumnInfo): (value: WireValue) => string {
  const fail = (value: WireValue, expected: string): never => {
    throw badValue(column, value, expected);
  };
  switch (column.type) {
    case 'int':
      return (v) => (Number.isSafeInteger(v) ? String(v) : fail(v, 'a safe integer'));
    case 'bigint':
      return (v) =>
        typeof v === 'string' && BIGINT_RE.test(v)
          ? v
          : Number.isSafeInteger(v)
            ? String(v)
            : fail(v, 'a string of digits');
    case 'decimal':
      return (v) =>
        typeof v === 'string' && DECIMAL_RE.test(v)
          ? v
          : Number.isSafeInteger(v)
            ? String(v)
            : fail(v, 'a decimal string');
    case 'float':
      // MySQL has no NaN or infinities; refusing beats storing something else.
      return (v) =>
        typeof v === 'number' && Number.isFinite(v) ? String(v) : fail(v, 'a finite number');
    case 'bool':
      return (v) => (v === true ? '1' : v === false ? '0' : fail(v, 'true or false'));
    case 'binary':
      return (v) =>
        typeof v === 'string' ? Buffer.from(v, 'base64').toString('hex') : fail(v, 'base64');
    case 'timestamptz':
      return (v) => {
        const m = typeof v === 'string' ? TIMESTAMPTZ_RE.exec(v) : null;
        return m ? `${m[1]} ${m[2]}` : fail(v, 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z');
      };
    case 'text':
    case 'date':
    case 'time':
    case 'timestamp':
    case 'json':
    case 'uuid':
      return (v) => (typeof v === 'string' ? v : fail(v, 'a string'));
  }
}

/** The encoder for one delta column written into a target column of `nativeDataType`. */
export function writeEncoder(column: ColumnInfo, nativeDataType: string): WriteEncoder {
  const text = textOf(column);
  const quoted =
    column.type === 'text' ||
    column.type === 'json' ||
    column.type === 'uuid' ||
    column.type === 'date' ||
    column.type === 'time' ||
    column.type === 'timestamp' ||
    column.type === 'timestamptz';
  const viaHex = column.type === 'binary';
  return {
    viaHex,
    viaUnsigned: nativeDataType === 'bit',
    literal: viaHex
      ? (v) => (v === null ? 'NULL' : `X'${text(v)}'`)
      : quoted
        ? (v) => (v === null ? 'NULL' : sqlString(text(v)))
        : (v) => (v === null ? 'NULL' : text(v)),
    field: quoted
      ? (v) => (v === null ? '\\N' : tsvField(text(v)))
      : (v) => (v === null ? '\\N' : text(v)),
  };
}
