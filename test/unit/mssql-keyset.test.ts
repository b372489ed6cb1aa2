import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  boundParam,
  firstAtOrAfter,
  formatTicks,
  keyParam,
  lastAtOrBefore,
  parseWireTime,
  readKeysetQuery,
  timestampColumn,
  type KeysetRequest,
} from '../../src/db/mssql/keyset.js';
import { tableName } from '../../src/db/mssql/sql.js';
import {
  canonicalFraction,
  readExpression,
  type ReflectedColumn,
} from '../../src/db/mssql/types.js';
import { column } from '../helpers/mssql.js';

const wall = (text: string) => parseWireTime(text, false, 'test');
const TICKS_PER_MS = 10_000n;
const TICKS_PER_SECOND = 10_000_000n;

describe('wire timestamps as 100 ns ticks', () => {
  it('round-trips across the whole range, leap days and month ends included', () => {
    for (const text of [
      '0001-01-01 00:00:00.0000000',
      '1752-12-31 23:59:59.9999999',
      '1900-02-28 12:00:00.0000000',
      '2000-02-29 00:00:00.0000001',
      '2024-02-29 13:14:15.9970000',
      '2100-03-01 00:00:00.0000000',
      '9999-12-31 23:59:59.9999999',
    ]) {
      expect(formatTicks(wall(text), 7)).toBe(text);
    }
    expect(wall('0001-01-01 00:00:00')).toBe(0n);
    expect(wall('0001-01-02')).toBe(86_400n * TICKS_PER_SECOND);
  });

  it('agrees with JavaScript dates where both apply', () => {
    const epoch = wall('1970-01-01 00:00:00');
    for (const ms of [0, 951782400000, 1709212455123, 4102444800000, -86400000]) {
      const iso = new Date(ms).toISOString(); // 2000-02-29T00:00:00.000Z, ...
      expect(wall(iso) - epoch).toBe(BigInt(ms) * TICKS_PER_MS);
    }
  });

  it('reads the wire forms: timestamp, timestamptz (…Z), fewer digits, a bare date', () => {
    expect(wall('2024-03-01 08:15:30.123456')).toBe(wall('2024-03-01T08:15:30.1234560Z'));
    expect(wall('2024-03-01 08:15:30.5')).toBe(wall('2024-03-01 08:15:30.500000'));
    expect(wall('2024-03-01')).toBe(wall('2024-03-01 00:00:00'));
  });

  it('applies an offset to instants, and refuses one for wall-clock columns', () => {
    const utc = (t: string) => parseWireTime(t, true, 'test');
    expect(utc('2024-03-01T13:45:30+05:30')).toBe(utc('2024-03-01T08:15:30Z'));
    expect(utc('2024-03-01 00:30:00 -01:00')).toBe(utc('2024-03-01T01:30:00Z'));
    expect(wall('2024-03-01T08:15:30+00:00')).toBe(wall('2024-03-01 08:15:30'));
    expect(() => wall('2024-03-01T08:15:30+01:00')).toThrow(/has a time zone/);
  });

  it('refuses what is not a timestamp, naming where it came from', () => {
    for (const bad of [
      '2024-02-30 00:00:00',
      '2023-13-01',
      '0000-01-01',
      '2024-01-01 24:00:00',
      'now',
      42,
      null,
    ]) {
      expect(() => parseWireTime(bad, false, 'tables.orders.startAt')).toThrow(ConfigError);
    }
    expect(() => wall('yesterday')).toThrow("test: 'yesterday' is not a timestamp");
  });

  it('formats with the digits asked for, truncating', () => {
    const t = wall('2024-01-02 03:04:05.1234567');
    expect(formatTicks(t, 0)).toBe('2024-01-02 03:04:05');
    expect(formatTicks(t, 3)).toBe('2024-01-02 03:04:05.123');
    expect(formatTicks(t, 6)).toBe('2024-01-02 03:04:05.123456');
  });
});

/**
 * The model the bounds must agree with: a column value's wire form, as the adapter reads it
 * (CONVERT(varchar, col, 121), then canonicalFraction).
 */
function wireOf(c: ReturnType<typeof timestampColumn>, value: bigint): bigint {
  if (!c.datetime) return value - (value % 10n); // truncated to the microsecond
  const second = value - (value % TICKS_PER_SECOND);
  return second + ((value - second) / TICKS_PER_MS) * TICKS_PER_MS; // values are shown in ms
}

/** Every value of a datetime column within one second: n/300 s, shown rounded to the ms. */
function datetimeValues(second: bigint): bigint[] {
  return Array.from({ length: 300 }, (_, n) => {
    const ms = BigInt(Math.round((n * 10) / 3));
    return second + ms * TICKS_PER_MS;
  });
}

describe('bounds: the edge column values of a wire bound', () => {
  it('datetime: exhaustively, over every millisecond and sub-millisecond of a second', () => {
    const c = timestampColumn(column('at', 'datetime'));
    const second = wall('2024-05-05 10:00:00');
    const values = [
      ...datetimeValues(second - TICKS_PER_SECOND),
      ...datetimeValues(second),
      ...datetimeValues(second + TICKS_PER_SECOND),
    ];
    for (let ms = 0n; ms < 1000n; ms++) {
      for (const sub of [0n, 10n, 4990n, 9990n]) {
        const p = second + ms * TICKS_PER_MS + sub;
        const atOrBefore = values.filter((v) => wireOf(c, v) <= p);
        const atOrAfter = values.filter((v) => wireOf(c, v) >= p);
        expect(lastAtOrBefore(c, p)).toBe(atOrBefore[atOrBefore.length - 1]);
        expect(firstAtOrAfter(c, p)).toBe(atOrAfter[0]);
      }
    }
  });

  it('datetime: a bound is sent as the millisecond text that converts to that exact value', () => {
    const c = timestampColumn(column('at', 'datetime'));
    const b = (t: string) => boundParam(c, 'p', lastAtOrBefore(c, wall(t))).params[0]!.value;
    expect(b('2024-01-01 10:00:00.002999')).toBe('2024-01-01 10:00:00.000');
    expect(b('2024-01-01 10:00:00.003')).toBe('2024-01-01 10:00:00.003');
    expect(b('2024-01-01 10:00:00.999999')).toBe('2024-01-01 10:00:00.997');
    const f = (t: string) => boundParam(c, 'p', firstAtOrAfter(c, wall(t))).params[0]!.value;
    expect(f('2024-01-01 10:00:00.004')).toBe('2024-01-01 10:00:00.007');
    expect(f('2024-12-31 23:59:59.998')).toBe('2025-01-01 00:00:00.000');
  });

  it.each([0, 3, 6, 7])('datetime2(%i): exhaustively around a microsecond boundary', (scale) => {
    const c = timestampColumn(column('at', 'datetime2', { num_scale: scale }));
    const base = wall('2024-05-05 10:00:00.999990');
    const unit = 10n ** BigInt(7 - scale);
    const first = base - (base % unit) - 100n * unit;
    const values = Array.from({ length: 300 }, (_, i) => first + BigInt(i) * unit);
    for (let p = base - 30n; p <= base + 30n; p += scale === 7 ? 1n : 10n) {
      const wp = p - (p % 10n); // a wire value is whole microseconds
      const atOrBefore = values.filter((v) => wireOf(c, v) <= wp);
      const atOrAfter = values.filter((v) => wireOf(c, v) >= wp);
      expect(lastAtOrBefore(c, wp)).toBe(atOrBefore[atOrBefore.length - 1]);
      expect(firstAtOrAfter(c, wp)).toBe(atOrAfter[0]);
    }
  });

  it('datetime2(7): everything in the microsecond belongs to it (the wire truncates)', () => {
    const c = timestampColumn(column('at', 'datetime2', { num_scale: 7 }));
    const p = wall('2024-01-01 10:00:00.123456');
    expect(formatTicks(firstAtOrAfter(c, p), 7)).toBe('2024-01-01 10:00:00.1234560');
    expect(formatTicks(lastAtOrBefore(c, p), 7)).toBe('2024-01-01 10:00:00.1234569');
  });

  it('smalldatetime counts minutes; datetime2(0) seconds, carrying into the next day', () => {
    const small = timestampColumn(column('at', 'smalldatetime'));
    const p = wall('2024-01-01 10:00:30');
    expect(formatTicks(lastAtOrBefore(small, p), 0)).toBe('2024-01-01 10:00:00');
    expect(formatTicks(firstAtOrAfter(small, p), 0)).toBe('2024-01-01 10:01:00');
    const d0 = timestampColumn(column('at', 'datetime2', { num_scale: 0 }));
    expect(formatTicks(firstAtOrAfter(d0, wall('2023-12-31 23:59:59.000001')), 0)).toBe(
      '2024-01-01 00:00:00',
    );
  });

  it('clamps to the type range: a start before 1753 means every datetime', () => {
    const c = timestampColumn(column('at', 'datetime'));
    expect(boundParam(c, 'p', firstAtOrAfter(c, wall('1600-01-01'))).params[0]!.value).toBe(
      '1753-01-01 00:00:00.000',
    );
    const small = timestampColumn(column('at', 'smalldatetime'));
    expect(formatTicks(lastAtOrBefore(small, wall('9999-01-01')), 0)).toBe('2079-06-06 23:59:00');
  });

  it('refuses a column that is not a date and time', () => {
    expect(() => timestampColumn(column('at', 'date'))).toThrow(ConfigError);
    expect(() => timestampColumn(column('n', 'bigint'))).toThrow(
      'timestamp column n is bigint, not datetime, datetime2, smalldatetime or datetimeoffset',
    );
  });
});

describe('bound parameters', () => {
  it('are text converted in SQL to the column type, with styles no language setting changes', () => {
    const t = wall('2024-01-01 10:00:00.5');
    const bound = (base: string, extra: Partial<ReflectedColumn> = {}) =>
      boundParam(timestampColumn(column('at', base, extra)), 'p', t);
    expect(bound('datetime2', { num_scale: 3 })).toEqual({
      text: 'CONVERT(datetime2(3), @p, 121)',
      params: [{ name: 'p', type: 'VarChar', length: 40, value: '2024-01-01 10:00:00.500' }],
    });
    expect(bound('datetime2', { num_scale: 0 }).text).toBe('CONVERT(datetime2(0), @p, 120)');
    expect(bound('datetime').text).toBe('CONVERT(datetime, @p, 121)');
    expect(bound('smalldatetime').text).toBe('CONVERT(smalldatetime, @p, 120)');
    // Instants go as ISO 8601 with an offset; datetimeoffset accepts no style from text.
    expect(bound('datetimeoffset', { num_scale: 7 })).toEqual({
      text: 'CONVERT(datetimeoffset(7), @p)',
      params: [
        { name: 'p', type: 'VarChar', length: 40, value: '2024-01-01 10:00:00.5000000 +00:00' },
      ],
    });
  });
});

describe('key parameters (typed as the column, compared as it orders)', () => {
  it('varchar keys compare as varchar in the column collation, never as nvarchar', () => {
    const c = column('code', 'varchar', {
      max_length: 20,
      collation_name: 'SQL_Latin1_General_CP1_CI_AS',
    });
    expect(keyParam(c, 'text', 'k0', 'abc')).toEqual({
      text: 'CONVERT(varchar(8000), @k0 COLLATE SQL_Latin1_General_CP1_CI_AS)',
      params: [{ name: 'k0', type: 'NVarChar', length: 20, value: 'abc' }],
    });
    const n = column('name', 'nvarchar', {
      max_length: 200,
      collation_name: 'Latin1_General_CI_AS',
    });
    expect(keyParam(n, 'text', 'k1', 'Zoë').text).toBe('@k1 COLLATE Latin1_General_CI_AS');
  });

  it('bigints stay exact, datetimes meet their stored 1/300 s, uuids stay uuids', () => {
    expect(keyParam(column('id', 'bigint'), 'bigint', 'k0', '9007199254740993')).toEqual({
      text: '@k0',
      params: [{ name: 'k0', type: 'BigInt', value: 9007199254740993n }],
    });
    expect(
      keyParam(column('at', 'datetime'), 'timestamp', 'k0', '2024-01-01 00:00:00.003').text,
    ).toBe('CONVERT(datetime, CONVERT(datetime2(7), @k0, 121))');
    expect(
      keyParam(
        column('u', 'uniqueidentifier'),
        'uuid',
        'k0',
        '0e984725-c51c-4bf4-9960-e1c80e27aba0',
      ).params[0]!.type,
    ).toBe('UniqueIdentifier');
  });

  it('a cursor without a key value is refused rather than matching nothing', () => {
    expect(() => keyParam(column('id', 'int'), 'int', 'k0', null)).toThrow(ConfigError);
  });
});

describe('readKeyset query', () => {
  const table = tableName('orders', 'dbo');
  const id = column('id', 'int');
  const region = column('region', 'nvarchar', {
    max_length: 20,
    collation_name: 'Latin1_General_CI_AS',
  });
  const at3 = column('at', 'datetime2', { num_scale: 3 });
  const base = (at: ReturnType<typeof column>): KeysetRequest => ({
    table,
    select: ['[id]', readExpression(at)],
    ts: timestampColumn(at),
    key: [
      { column: id, type: 'int' },
      { column: region, type: 'text' },
    ],
    after: null,
    upTo: '2024-01-02 00:00:00',
  });

  it('from the beginning: only the horizon, in (ts, key) order', () => {
    const q = readKeysetQuery(base(at3));
    expect(q.text).toBe(
      'SELECT [id], CONVERT(varchar(27), [at], 121) FROM [dbo].[orders] ' +
        'WHERE [at] <= CONVERT(datetime2(3), @upTo, 121) ORDER BY [at], [id], [region]',
    );
    expect(q.params).toEqual([
      { name: 'upTo', type: 'VarChar', length: 40, value: '2024-01-02 00:00:00.000' },
    ]);
  });

  it('from a configured start (a cursor without key): ts >= start', () => {
    const q = readKeysetQuery({ ...base(at3), after: { ts: '2024-01-01 09:00:00.0005', key: [] } });
    expect(q.text).toContain(
      'WHERE [at] <= CONVERT(datetime2(3), @upTo, 121) AND [at] >= CONVERT(datetime2(3), @tsFrom, 121) ORDER BY',
    );
    // 09:00:00.0005 is after every value of 09:00:00.000: the first at or after it is .001
    expect(q.params[1]).toEqual({
      name: 'tsFrom',
      type: 'VarChar',
      length: 40,
      value: '2024-01-01 09:00:00.001',
    });
  });

  it('after a full cursor: the row comparison expanded, led by a seekable ts >= ...', () => {
    const q = readKeysetQuery({
      ...base(at3),
      after: { ts: '2024-01-01 09:00:00.123', key: [7, 'north'] },
      limit: 500,
    });
    expect(q.text).toBe(
      'SELECT TOP (@limit) [id], CONVERT(varchar(27), [at], 121) FROM [dbo].[orders] ' +
        'WHERE [at] <= CONVERT(datetime2(3), @upTo, 121) ' +
        'AND [at] >= CONVERT(datetime2(3), @tsFrom, 121) ' +
        'AND ([at] > CONVERT(datetime2(3), @tsThrough, 121) OR [id] > @k0 OR ' +
        '([id] = @k0 AND ([region] > @k1 COLLATE Latin1_General_CI_AS))) ' +
        'ORDER BY [at], [id], [region]',
    );
    expect(q.params).toEqual([
      { name: 'upTo', type: 'VarChar', length: 40, value: '2024-01-02 00:00:00.000' },
      { name: 'tsFrom', type: 'VarChar', length: 40, value: '2024-01-01 09:00:00.123' },
      { name: 'k0', type: 'Int', length: undefined, value: 7 },
      { name: 'k1', type: 'NVarChar', length: 10, value: 'north' }, // nvarchar(10): 20 bytes
      { name: 'tsThrough', type: 'VarChar', length: 40, value: '2024-01-01 09:00:00.123' },
      { name: 'limit', type: 'BigInt', value: 500n },
    ]);
  });

  it('100 ns columns: ordered by the microsecond (the wire order), the sort bounded by the limit', () => {
    const at7 = column('at', 'datetime2', { num_scale: 7 });
    const q = readKeysetQuery({
      ...base(at7),
      key: [{ column: id, type: 'int' }],
      after: { ts: '2024-01-01 09:00:00.123456', key: [7] },
      limit: 100,
    });
    const where =
      '[at] <= CONVERT(datetime2(7), @upTo, 121) AND [at] >= CONVERT(datetime2(7), @tsFrom, 121) ' +
      'AND ([at] > CONVERT(datetime2(7), @tsThrough, 121) OR [id] > @k0)';
    expect(q.text).toBe(
      'SELECT TOP (@limit) [id], CONVERT(varchar(27), [at], 121) FROM [dbo].[orders] ' +
        `WHERE ${where} AND [at] < (SELECT DATEADD(microsecond, 1, ` +
        'DATEADD(nanosecond, -(DATEPART(nanosecond, MAX(b.ts)) % 1000), MAX(b.ts))) ' +
        `FROM (SELECT TOP (@limit) [at] AS ts FROM [dbo].[orders] WHERE ${where} ORDER BY [at]) AS b) ` +
        'ORDER BY DATEADD(nanosecond, -(DATEPART(nanosecond, [at]) % 1000), [at]), [id]',
    );
    expect(q.params.map((p) => [p.name, p.value])).toEqual([
      ['upTo', '2024-01-02 00:00:00.0000009'],
      ['tsFrom', '2024-01-01 09:00:00.1234560'],
      ['k0', 7],
      ['tsThrough', '2024-01-01 09:00:00.1234569'],
      ['limit', 100n],
    ]);
  });

  it('datetimeoffset compares instants: a cursor in UTC, bounds sent with +00:00', () => {
    const at = column('at', 'datetimeoffset', { num_scale: 7 });
    const q = readKeysetQuery({
      ...base(at),
      upTo: '2024-01-02T00:00:00.000000Z',
      after: { ts: '2024-03-01T08:15:30.123456Z', key: [] },
    });
    expect(q.text).toContain('[at] >= CONVERT(datetimeoffset(7), @tsFrom)');
    expect(q.text).toContain(
      'ORDER BY DATEADD(nanosecond, -(DATEPART(nanosecond, [at]) % 1000), [at])',
    );
    expect(q.params.map((p) => p.value)).toEqual([
      '2024-01-02 00:00:00.0000009 +00:00',
      '2024-03-01 08:15:30.1234560 +00:00',
    ]);
  });

  it('the wire form of every row it reads is within the bounds it was given', () => {
    // The bounds agree with the rendering readExpression + canonicalFraction gives the rows.
    const c = timestampColumn(column('at', 'datetime2', { num_scale: 7 }));
    const p = wall('2024-01-01 10:00:00.123456');
    const render = (t: bigint) => canonicalFraction(formatTicks(t, 7));
    expect(render(lastAtOrBefore(c, p))).toBe('2024-01-01 10:00:00.123456');
    expect(render(lastAtOrBefore(c, p) + 1n)).toBe('2024-01-01 10:00:00.123457');
  });

  it('refuses a cursor whose key does not fit, a bad horizon and a bad limit', () => {
    expect(() => readKeysetQuery({ ...base(at3), after: { ts: '2024-01-01', key: [1] } })).toThrow(
      'the cursor has 1 key values for 2 key columns',
    );
    expect(() => readKeysetQuery({ ...base(at3), upTo: null })).toThrow(ConfigError);
    expect(() => readKeysetQuery({ ...base(at3), limit: 0 })).toThrow(/limit/);
  });
});
