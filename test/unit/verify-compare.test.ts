import { describe, expect, it } from 'vitest';
import {
  compareKeys,
  mergeCompare,
  normalise,
  OutOfOrderError,
  type KeyedRow,
} from '../../src/steps/verify/compare.js';

async function* rows(list: [unknown[], unknown[]][]): AsyncGenerator<KeyedRow> {
  for (const [key, values] of list)
    yield { key: key as KeyedRow['key'], values: values as KeyedRow['values'] };
}

describe('normalise', () => {
  it.each([
    ['decimal', '1.50', '1.5'],
    ['decimal', '2.000', '2'],
    ['decimal', '100', '100'],
    ['timestamp', '2026-01-01 10:00:00.120000', '2026-01-01 10:00:00.12'],
    ['timestamp', '2026-01-01T10:00:00.000000', '2026-01-01 10:00:00'],
    ['timestamptz', '2026-01-01T10:00:00.500000Z', '2026-01-01 10:00:00.5'],
    ['timestamptz', '2026-01-01 10:00:00+00', '2026-01-01 10:00:00'],
    ['timestamptz', '2026-01-01 01:30:00.25+02:00', '2025-12-31 23:30:00.25'],
    ['timestamptz', '2026-01-01T10:00:00-0530', '2026-01-01 15:30:00'],
    ['timestamp', '2026-01-01 23:59:59', '2026-01-01 23:59:59'],
    ['decimal', '0.9900', '0.99'],
    ['decimal', '-0.000', '0'],
    ['decimal', '007.10', '7.1'],
    ['decimal', '-12.500', '-12.5'],
    ['time', '10:00:00.500000', '10:00:00.5'],
    ['bool', 1, true],
    ['bool', '0', false],
    ['json', '{"b": 1, "a": [1, 2]}', '{"a":[1,2],"b":1}'],
    ['uuid', 'ABCDEF00-0000-4000-8000-000000000000', 'abcdef00-0000-4000-8000-000000000000'],
    ['bigint', 42, '42'],
  ] as const)('%s %j -> %j', (type, input, output) => {
    expect(normalise(input, type)).toEqual(output);
  });

  it('ignores CHAR padding only where a side is fixed-width', () => {
    expect(normalise('AB   ', 'text', { trimPadding: true })).toBe('AB');
    expect(normalise('AB   ', 'text')).toBe('AB   ');
    expect(normalise('  AB', 'text', { trimPadding: true })).toBe('  AB');
  });

  it('keeps NULL and the empty string apart', () => {
    expect(normalise(null, 'text')).toBeNull();
    expect(normalise('', 'text')).toBe('');
  });
});

describe('compareKeys', () => {
  it('orders integers numerically, beyond 2^53 too', () => {
    expect(compareKeys(['9'], ['10'], ['bigint'])).toBe(-1);
    expect(compareKeys(['9007199254740993'], ['9007199254740992'], ['bigint'])).toBe(1);
  });

  it('orders text by code point, as binary collations do (not by UTF-16 units)', () => {
    expect(compareKeys(['B'], ['a'], ['text'])).toBe(-1);
    // U+FF5E (one UTF-16 unit, 0xFF5E) sorts before U+1F600 (a surrogate pair starting 0xD83D).
    expect(compareKeys(['～'], ['😀'], ['text'])).toBe(-1);
  });

  it('compares composite keys column by column', () => {
    expect(compareKeys([1, 'b'], [1, 'a'], ['int', 'text'])).toBe(1);
    expect(compareKeys([1, 'a'], [1, 'a'], ['int', 'text'])).toBe(0);
  });
});

describe('mergeCompare', () => {
  it('counts missing, extra and different rows and reports the first keys in order', async () => {
    const source = rows([
      [[1], ['a']],
      [[2], ['b']],
      [[3], ['c']],
      [[5], ['e']],
    ]);
    const replica = rows([
      [[1], ['a']],
      [[3], ['C']],
      [[4], ['d']],
      [[5], ['e']],
    ]);
    const v = await mergeCompare(source, replica, ['int'], 2, ['name']);
    expect(v).toEqual({
      sourceRows: 4,
      replicaRows: 4,
      missing: 1,
      extra: 1,
      different: 1,
      first: [
        { key: [2], kind: 'missing on the replica' },
        { key: [3], kind: 'different', columns: ['name'] },
      ],
    });
  });

  it('equal streams give no differences', async () => {
    const v = await mergeCompare(rows([[[1], ['x']]]), rows([[[1], ['x']]]), ['int'], 10);
    expect(v.missing + v.extra + v.different).toBe(0);
  });

  it('refuses a side that is not in key order instead of reporting nonsense', async () => {
    const bad = rows([
      [['b'], []],
      [['a'], []],
    ]);
    await expect(mergeCompare(bad, rows([]), ['text'], 10)).rejects.toBeInstanceOf(OutOfOrderError);
  });
});
