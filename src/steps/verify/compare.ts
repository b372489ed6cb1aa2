/**
 * The pure half of `deltasync verify`: making the two sides' values comparable, ordering keys,
 * and merging two key-ordered streams into a verdict.
 */
import type { LogicalType, WireRow, WireValue } from '../../db/types.js';
import { canonicalJson } from '../../format/signature.js';

/**
 * One spelling per value, so that engines that write the same value differently compare equal:
 * decimals and fractions of seconds without trailing zeros, JSON in canonical form, booleans
 * from 0/1, floats as numbers.
 */
export function normalise(value: WireValue, type: LogicalType): WireValue {
  if (value === null) return null;
  switch (type) {
    case 'decimal': {
      const s = String(value);
      return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
    }
    case 'int':
    case 'bigint':
      return String(value);
    case 'float':
      return typeof value === 'number' ? value : Number(value);
    case 'bool':
      return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
    case 'time':
    case 'timestamp':
    case 'timestamptz':
      return String(value)
        .replace('T', ' ')
        .replace(/(\.\d*?)0+(Z?)$/, '$1$2')
        .replace(/\.(Z?)$/, '$1');
    case 'json':
      try {
        return canonicalJson(JSON.parse(String(value)));
      } catch {
        return String(value);
      }
    case 'uuid':
      return String(value).toLowerCase();
    default:
      return value;
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
): Promise<TableVerdict> {
  const verdict: TableVerdict = {
    sourceRows: 0,
    replicaRows: 0,
    missing: 0,
    extra: 0,
    different: 0,
    first: [],
  };
  const note = (key: WireRow, kind: Difference['kind']) => {
    if (verdict.first.length < maxReported) verdict.first.push({ key, kind });
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
      if (JSON.stringify(a.value!.values) !== JSON.stringify(b.value!.values)) {
        verdict.different++;
        note(a.value!.key, 'different');
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
