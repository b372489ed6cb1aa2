import { describe, expect, it } from 'vitest';
import { DeltaError } from '../../src/errors.js';
import {
  LOGID_DIGITS,
  compareLogIds,
  isLogId,
  logIdOfFile,
  logIdPrefix,
  maxLogId,
  parseLogId,
} from '../../src/format/logid.js';

/** 2^64 - 1, the largest unsigned 64-bit value (an SQL Server rowversion can reach it). */
const U64_MAX = '18446744073709551615';

describe('compareLogIds', () => {
  it('orders numerically, not as text', () => {
    expect(compareLogIds('9', '10')).toBe(-1);
    expect(compareLogIds('10', '9')).toBe(1);
    expect(compareLogIds('100', '99')).toBe(1);
    expect(compareLogIds('42', '42')).toBe(0);
    expect(['10', '9', '100', '0', '11'].sort(compareLogIds)).toEqual([
      '0',
      '9',
      '10',
      '11',
      '100',
    ]);
  });

  it('tells apart neighbours beyond 2^53, which a number would round to the same value', () => {
    const a = '9007199254740993'; // 2^53 + 1
    const b = '9007199254740992'; // 2^53
    expect(Number(a)).toBe(Number(b)); // the trap the BigInt comparison avoids
    expect(compareLogIds(a, b)).toBe(1);
    expect(compareLogIds(b, a)).toBe(-1);
    expect(compareLogIds('18446744073709551614', U64_MAX)).toBe(-1);
  });

  it('maxLogId picks the numerically larger value', () => {
    expect(maxLogId('9', '10')).toBe('10');
    expect(maxLogId('10', '9')).toBe('10');
    expect(maxLogId(U64_MAX, '18446744073709551614')).toBe(U64_MAX);
  });
});

describe('parseLogId', () => {
  it('parses values beyond 2^53 and up to 2^64-1 exactly', () => {
    expect(parseLogId('9007199254740993')).toBe(2n ** 53n + 1n);
    expect(parseLogId(U64_MAX)).toBe(2n ** 64n - 1n);
    expect(parseLogId(U64_MAX).toString()).toBe(U64_MAX);
  });

  it('accepts zero, safe integers and bigints', () => {
    expect(parseLogId('0')).toBe(0n);
    expect(parseLogId(12345)).toBe(12345n);
    expect(parseLogId(2n ** 64n - 1n)).toBe(2n ** 64n - 1n);
  });

  it.each(['-1', '1.5', '01', '', ' 1', '1e3', '0x10', '+1', '１'])(
    'rejects the string %j with a DeltaError',
    (bad) => {
      expect(isLogId(bad)).toBe(false);
      expect(() => parseLogId(bad, 'manifest.toLogId')).toThrow(DeltaError);
      expect(() => parseLogId(bad, 'manifest.toLogId')).toThrow(/^manifest\.toLogId: /);
    },
  );

  it.each([-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN])('rejects the number %s', (bad) => {
    expect(() => parseLogId(bad)).toThrow(DeltaError);
  });
});

describe('file names', () => {
  it('pads the logId to 20 digits so names sort like the numbers', () => {
    expect(LOGID_DIGITS).toBe(U64_MAX.length);
    expect(logIdPrefix('100000')).toBe('logId00000000000000100000');
    expect(logIdPrefix(U64_MAX)).toBe(`logId${U64_MAX}`);
    const names = ['10', '9', '100'].map((id) => `${logIdPrefix(id)}.MANIFEST.json`).sort();
    expect(names.map(logIdOfFile)).toEqual(['9', '10', '100']);
  });

  it('parses the logId back from a file name, without leading zeros', () => {
    for (const id of ['0', '7', '100000', '9007199254740993', U64_MAX]) {
      expect(logIdOfFile(`${logIdPrefix(id)}.orders.0001.ndjson.gz`)).toBe(id);
      expect(logIdOfFile(`${logIdPrefix(id)}.MANIFEST.json`)).toBe(id);
    }
  });

  it('returns null for names that are not delta files', () => {
    expect(logIdOfFile('README.md')).toBeNull();
    expect(logIdOfFile('logId.MANIFEST.json')).toBeNull();
    expect(logIdOfFile('logIdabc.MANIFEST.json')).toBeNull();
    expect(logIdOfFile('xlogId00000000000000000001.MANIFEST.json')).toBeNull();
    expect(logIdOfFile('logId00000000000000000001')).toBeNull();
  });
});
