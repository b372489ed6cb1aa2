/**
 * The pure half of `deltasync verify`: making the two sides' values comparable, ordering keys,
 * and merging two key-ordered streams into a verdict.
 */
import type { LogicalType, WireRow, WireValue } from '../../db/types.js';
import { canonicalJson } from '../../format/signature.js';

/** Options of `normalise` that depend on both sides' column types, not on the value. */
export interface NormaliseOptions {
  /**
   * Trailing spaces do not count: one side is a fixed-width CHAR column, which PostgreSQL and SQL
   * Server pad to its width and MariaDB/MySQL strip on read.
   */
  trimPadding?: boolean;
}

const TIMESTAMP =
  /^(\d{4,}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * A timestamp in one spelling: `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC, no zone, no trailing
 * zeros in the fraction. A value with an offset is moved to UTC, so that a timestamptz on one side
 * and a UTC DATETIME on the other compare equal; one without is taken as written (both engines
 * keep timestamps without a zone in UTC under deltasync's session settings).
 */
function normaliseTimestamp(text: string): string {
  const m = TIMESTAMP.exec(text.trim());
  if (!m) return text.replace('T', ' ');
  const [, date, hh, mi, ss, fraction = '', zone] = m;
  let day = date!;
  let time = `${hh}:${mi}:${ss}`;
  if (zone && !/^(Z|[+-]00(:?00)?)$/i.test(zone)) {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offsetMinutes = sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || 0));
    const utc = new Date(`${day}T${time}Z`);
    if (!Number.isNaN(utc.getTime())) {
      const moved = new Date(utc.getTime() - offsetMinutes * 60_000).toISOString();
      day = moved.slice(0, 10);
      time = moved.slice(11, 19);
    }
  }
  const frac = fraction.replace(/0+$/, '');
  return `${day} ${time}${frac ? `.${frac}` : ''}`;
}

/** A decimal in one spelling: no sign for zero, no leading or trailing zeros. */
function normaliseDecimal(text: string): string {
  const m = /^([+-]?)0*(\d*)(?:\.(\d*?)0*)?$/.exec(text.trim());
  if (!m) return text;
  const [, sign, whole, fraction = ''] = m;
  const digits = `${whole || '0'}${fraction ? `.${fraction}` : ''}`;
  return sign === '-' && /[1-9]/.test(digits) ? `-${digits}` : digits;
}

/**
 * One spelling per value, so that engines and column types that hold the same value compare
 * equal: decimals of any scale, timestamps with or without a fraction or a zone, booleans from
 * 0/1, JSON in canonical form, floats as numbers, CHAR padding (see NormaliseOptions).
 */
export function normalise(
  value: WireValue,
  type: LogicalType,
  options: NormaliseOptions = {},
): WireValue {
  if (value === null) return null;
  switch (type) {
    case 'decimal':
      return normaliseDecimal(String(value));
    case 'int':
    case 'bigint':
      return String(value);
    case 'float':
      return typeof value === 'number' ? value : Number(value);
    case 'bool':
      return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
    case 'time':
      return String(value)
        .replace(/(\.\d*?)0+$/, '$1')
        .replace(/\.$/, '');
    case 'timestamp':
    case 'timestamptz':
      return normaliseTimestamp(String(value));
    case 'json':
      try {
        return canonicalJson(JSON.parse(String(value)));
      } catch {
        return String(value);
      }
    case 'uuid':
      return String(value).toLowerCase();
    default:
      return options.trimPadding && typeof value === 'string' ? value.replace(/ +$/, '') : value;
  }
}

/** Compares text by Unicode code point, which is the order of binary collations and of UTF-8 bytes. */
function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done === y.done ? 0 : x.done ? -1 : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
}

function compareValue(a: WireValue, b: WireValue, type: LogicalType): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? -1 : 1;
  switch (type) {
    case 'int':
    case 'bigint': {
      const x = BigInt(a as string | number);
      const y = BigInt(b as string | number);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case 'float':
    case 'decimal': {
      const x = Number(a);
      const y = Number(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    default:
      return compareCodePoints(String(a), String(b));
  }
}

export function compareKeys(a: WireRow, b: WireRow, types: LogicalType[]): number {
  for (let i = 0; i < types.length; i++) {
    const c = compareValue(a[i]!, b[i]!, types[i]!);
    if (c !== 0) return c;
  }
  return 0;
}

export interface KeyedRow {
  key: WireRow;
  /** The compared values, normalised. */
  values: WireValue[];
}

export interface Difference {
  key: WireRow;
  kind: 'missing on the replica' | 'extra on the replica' | 'different';
  /** For 'different': the replica's names of the columns whose values differ. */
  columns?: string[];
}

/** The names of the compared columns whose normalised values differ (empty when none do). */
export function differingColumns(a: KeyedRow, b: KeyedRow, names: string[]): string[] {
  const found: string[] = [];
  a.values.forEach((v, i) => {
    if (JSON.stringify(v) !== JSON.stringify(b.values[i])) found.push(names[i] ?? `#${i + 1}`);
  });
  return found;
}

export interface TableVerdict {
  sourceRows: number;
  replicaRows: number;
  missing: number;
  extra: number;
  different: number;
  /** The first differences, in key order (at most the configured number). */
  first: Difference[];
}

export class OutOfOrderError extends Error {}

/** Checks that a stream really comes in key order: the merge is only right if both do. */
async function* ordered(
  rows: AsyncIterable<KeyedRow>,
  types: LogicalType[],
  side: string,
): AsyncGenerator<KeyedRow> {
  let previous: WireRow | undefined;
  for await (const row of rows) {
    if (previous && compareKeys(previous, row.key, types) >= 0) {
      throw new OutOfOrderError(
        `the ${side} returned key ${JSON.stringify(row.key)} after ${JSON.stringify(previous)}: its key order differs (a collation?)`,
      );
    }
    previous = row.key;
    yield row;
  }
}

/** Merges two key-ordered streams and counts what differs. Memory: one row per side. */
export async function mergeCompare(
  source: AsyncIterable<KeyedRow>,
  replica: AsyncIterable<KeyedRow>,
  keyTypes: LogicalType[],
  maxReported: number,
  columnNames: string[] = [],
): Promise<TableVerdict> {
  const verdict: TableVerdict = {
    sourceRows: 0,
    replicaRows: 0,
    missing: 0,
    extra: 0,
    different: 0,
    first: [],
  };
  const note = (key: WireRow, kind: Difference['kind'], columns?: string[]) => {
    if (verdict.first.length < maxReported) {
      verdict.first.push(columns ? { key, kind, columns } : { key, kind });
    }
  };
  const s = ordered(source, keyTypes, 'source')[Symbol.asyncIterator]();
  const r = ordered(replica, keyTypes, 'replica')[Symbol.asyncIterator]();
  let a = await s.next();
  let b = await r.next();
  while (!a.done || !b.done) {
    const c = a.done ? 1 : b.done ? -1 : compareKeys(a.value.key, b.value.key, keyTypes);
    if (c < 0) {
      verdict.sourceRows++;
      verdict.missing++;
      note(a.value!.key, 'missing on the replica');
      a = await s.next();
    } else if (c > 0) {
      verdict.replicaRows++;
      verdict.extra++;
      note(b.value!.key, 'extra on the replica');
      b = await r.next();
    } else {
      verdict.sourceRows++;
      verdict.replicaRows++;
      const columns = differingColumns(a.value!, b.value!, columnNames);
      if (columns.length > 0) {
        verdict.different++;
        note(a.value!.key, 'different', columns);
      }
      a = await s.next();
      b = await r.next();
    }
  }
  return verdict;
}

export function isEqual(v: TableVerdict): boolean {
  return v.missing === 0 && v.extra === 0 && v.different === 0;
}
