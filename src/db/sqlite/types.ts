/**
 * SQLite types. SQLite has type affinities rather than types, so the logical type comes from the
 * declared column type, following SQLite's own affinity rules (https://sqlite.org/datatype3.html
 * §3.1) refined by the names people use for dates, booleans and JSON.
 */
import type { LogicalType, WireValue } from '../types.js';

export function logicalTypeOf(declared: string): LogicalType {
  const t = declared.toUpperCase();
  if (t.includes('BOOL')) return 'bool';
  if (t.includes('INT')) return 'bigint'; // SQLite integers are 64-bit whatever the declaration.
  if (t === 'DATE') return 'date';
  if (t.includes('TIMESTAMPTZ') || t.includes('WITH TIME ZONE')) return 'timestamptz';
  if (t.includes('DATETIME') || t.includes('TIMESTAMP')) return 'timestamp';
  if (t === 'TIME') return 'time';
  if (t.includes('JSON')) return 'json';
  if (t.includes('UUID')) return 'uuid';
  if (t.includes('CHAR') || t.includes('CLOB') || t.includes('TEXT')) return 'text';
  if (t.includes('BLOB')) return 'binary';
  if (t.includes('REAL') || t.includes('FLOA') || t.includes('DOUB')) return 'float';
  if (t.includes('NUMERIC') || t.includes('DECIMAL')) return 'decimal';
  return 'text';
}

type SqliteValue = bigint | number | string | Buffer | null;

/** A value read with safeIntegers(true) -> its wire form. */
export function toWire(value: SqliteValue, type: LogicalType): WireValue {
  if (value === null) return null;
  switch (type) {
    case 'bool':
      return Number(value) !== 0;
    case 'int':
      return Number(value);
    case 'bigint':
    case 'decimal':
      return typeof value === 'string' ? value : String(value);
    case 'float': {
      const n = Number(value);
      return Number.isFinite(n) ? n : String(n);
    }
    case 'binary':
      return Buffer.isBuffer(value)
        ? value.toString('base64')
        : Buffer.from(String(value)).toString('base64');
    case 'timestamptz':
      return typeof value === 'string' ? canonicalInstant(value) : String(value);
    case 'timestamp':
      return typeof value === 'string' ? value.replace('T', ' ') : String(value);
    default:
      return Buffer.isBuffer(value)
        ? value.toString('utf8')
        : typeof value === 'string'
          ? value
          : String(value);
  }
}

/** A wire value -> what better-sqlite3 binds. */
export function fromWire(value: WireValue, type: LogicalType): SqliteValue {
  if (value === null) return null;
  switch (type) {
    case 'bool':
      return value === true || value === 'true' ? 1 : 0;
    case 'bigint':
      return BigInt(value as string);
    case 'float':
      return typeof value === 'number' ? value : Number(value);
    case 'binary':
      return Buffer.from(value as string, 'base64');
    default:
      return value as string | number;
  }
}

const INSTANT =
  /^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(\.\d+)?\s*(Z|[+-]\d\d(?::?\d\d)?)?$/i;

/**
 * SQLite stores times as text in whatever form the application wrote. A `timestamptz` value goes
 * on the wire as the UTC instant `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`: text without an offset is taken
 * as UTC (SQLite's own date functions do the same), an offset is applied, and the fraction of a
 * second is kept digit for digit. Text that is not a timestamp is passed on unchanged, for the
 * target to accept or refuse.
 */
export function canonicalInstant(text: string): string {
  const m = INSTANT.exec(text.trim());
  if (!m) return text;
  const [, y, mo, d, h, mi, s, fraction = '', zone = 'Z'] = m;
  let offsetMinutes = 0;
  if (zone.toUpperCase() !== 'Z') {
    const digits = zone.slice(1).replace(':', '');
    offsetMinutes =
      (zone[0] === '-' ? -1 : 1) *
      (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || 0));
  }
  const utc = new Date(
    Date.UTC(
      Number(y),
      Number(mo) - 1,
      Number(d),
      Number(h),
      Number(mi) - offsetMinutes,
      Number(s),
    ),
  );
  return `${utc.toISOString().slice(0, 19)}${fraction}Z`;
}

/** A key value as the change log holds it (text) -> its wire form. */
export function keyTextToWire(text: string | null, type: LogicalType): WireValue {
  if (text === null) return null;
  switch (type) {
    case 'int':
    case 'float':
      return Number(text);
    case 'bool':
      return text === '1' || text === 'true';
    default:
      return text;
  }
}
