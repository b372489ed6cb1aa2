/**
 * LogIds are decimal strings compared as BigInt: SQL Server rowversions and 64-bit sequences
 * exceed 2^53, so a JavaScript number would silently round them.
 */
import { DeltaError } from '../errors.js';

/** Digits in a file name's logId: 2^64 has 20 decimal digits, so every logId fits. */
export const LOGID_DIGITS = 20;

const DECIMAL = /^(0|[1-9][0-9]*)$/;

export function isLogId(value: string): boolean {
  return DECIMAL.test(value);
}

/** Parses a logId from a manifest, a state file or a database; throws on anything else. */
export function parseLogId(value: string | number | bigint, where = 'logId'): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new DeltaError(`${where}: ${value} is not a non-negative safe integer`);
    }
    return BigInt(value);
  }
  if (!isLogId(value)) throw new DeltaError(`${where}: '${value}' is not a decimal logId`);
  return BigInt(value);
}

export function compareLogIds(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function maxLogId(a: string, b: string): string {
  return compareLogIds(a, b) >= 0 ? a : b;
}

/** "100000" -> "logId00000000000000100000": the common prefix of every file of that delta. */
export function logIdPrefix(logId: string): string {
  return `logId${logId.padStart(LOGID_DIGITS, '0')}`;
}

const FILE_LOGID = /^logId([0-9]+)\./;

/** The logId a delta file name starts with, without leading zeros, or null. */
export function logIdOfFile(name: string): string | null {
  const m = FILE_LOGID.exec(name);
  if (!m) return null;
  return BigInt(m[1]!).toString();
}
