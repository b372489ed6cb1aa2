/** PostgreSQL value conversions, both ways, as pure functions. */
import { describe, expect, it } from 'vitest';
import {
  copyDecoder,
  copyEncoder,
  escapeCopyText,
  logicalTypeOf,
  parseCopyLine,
  quoteIdent,
  quoteLiteral,
  timestampToWire,
  timestamptzToWire,
  timeToWire,
  unescapeCopyText,
} from '../../src/db/pg/types.js';
import type { LogicalType } from '../../src/db/types.js';

describe('logicalTypeOf', () => {
  it('maps base type names, and anything unknown to text', () => {
    // prettier-ignore
    const cases: [string, LogicalType][] = [
      ['int2', 'int'], ['int4', 'int'], ['int8', 'bigint'], ['numeric', 'decimal'],
      ['float4', 'float'], ['float8', 'float'], ['bool', 'bool'], ['text', 'text'],
      ['varchar', 'text'], ['bpchar', 'text'], ['citext', 'text'], ['bytea', 'binary'],
      ['date', 'date'], ['time', 'time'], ['timestamp', 'timestamp'],
      ['timestamptz', 'timestamptz'], ['json', 'json'], ['jsonb', 'json'], ['uuid', 'uuid'],
      ['interval', 'text'], ['_int4', 'text'], ['timetz', 'text'], ['inet', 'text'],
    ];
    for (const [native, logical] of cases)
      expect([native, logicalTypeOf(native)]).toEqual([native, logical]);
  });
});

describe('quoting', () => {
  it('doubles embedded quotes', () => {
    expect(quoteIdent('Mixed "Case"')).toBe('"Mixed ""Case"""');
    expect(quoteLiteral("it's")).toBe("'it''s'");
  });
});

describe('COPY text -> wire', () => {
  it('pads timestamp fractions to six digits and leaves the rest alone', () => {
    expect(timestampToWire('2024-02-29 12:34:56')).toBe('2024-02-29 12:34:56');
    expect(timestampToWire('2024-02-29 12:34:56.5')).toBe('2024-02-29 12:34:56.500000');
    expect(timestampToWire('2024-02-29 12:34:56.123456')).toBe('2024-02-29 12:34:56.123456');
    expect(timestampToWire('0044-03-15 12:00:00.5 BC')).toBe('0044-03-15 12:00:00.5 BC');
    expect(timestampToWire('10000-01-01 00:00:00.5')).toBe('10000-01-01 00:00:00.5');
    expect(timestampToWire('infinity')).toBe('infinity');
  });

  it('turns UTC timestamptz text into …T…Z', () => {
    expect(timestamptzToWire('2024-02-29 07:04:56+00')).toBe('2024-02-29T07:04:56Z');
    expect(timestamptzToWire('2024-02-29 07:04:56.65+00')).toBe('2024-02-29T07:04:56.650000Z');
    expect(timestamptzToWire('2024-02-29 07:04:56.654321+00')).toBe('2024-02-29T07:04:56.654321Z');
    expect(timestamptzToWire('0044-03-15 12:00:00+00 BC')).toBe('0044-03-15 12:00:00+00 BC');
    expect(timestamptzToWire('-infinity')).toBe('-infinity');
  });

  it('pads time fractions', () => {
    expect(timeToWire('23:59:59')).toBe('23:59:59');
    expect(timeToWire('23:59:59.9')).toBe('23:59:59.900000');
    expect(timeToWire('24:00:00')).toBe('24:00:00');
  });

  it('unescapes COPY escapes', () => {
    expect(unescapeCopyText('a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh')).toBe('a\tb\nc\rd\\e\bf\fg\vh');
    expect(unescapeCopyText('\\\\N')).toBe('\\N');
    expect(unescapeCopyText('plain')).toBe('plain');
  });

  it('decodes each logical type', () => {
    expect(copyDecoder('int')('-32768')).toBe(-32768);
    expect(copyDecoder('bigint')('-9223372036854775808')).toBe('-9223372036854775808');
    expect(copyDecoder('decimal')('-12.3400000000')).toBe('-12.3400000000');
    expect(copyDecoder('float')('0.1')).toBe(0.1);
    expect(copyDecoder('float')('1e+300')).toBe(1e300);
    expect(copyDecoder('float')('NaN')).toBe('NaN');
    expect(copyDecoder('float')('-Infinity')).toBe('-Infinity');
    expect(copyDecoder('bool')('t')).toBe(true);
    expect(copyDecoder('bool')('f')).toBe(false);
    expect(copyDecoder('binary')('\\\\x00ff10')).toBe(Buffer.from([0, 255, 16]).toString('base64'));
    expect(copyDecoder('binary')('\\\\x')).toBe('');
    expect(copyDecoder('json')('{"a":"b\\\\"c"}')).toBe('{"a":"b\\"c"}');
  });

  it('splits a line into a row, with \\N as NULL and "" as empty string', () => {
    const decoders = (['int', 'text', 'text', 'bool'] as const).map(copyDecoder);
    expect(parseCopyLine('1\t\t\\N\tt', decoders)).toEqual([1, '', null, true]);
    expect(() => parseCopyLine('1\t2', decoders)).toThrow(/2 fields, expected 4/);
  });
});

describe('wire -> COPY text', () => {
  it('escapes backslash, tab, newline and CR only', () => {
    expect(escapeCopyText('a\\b\tc\nd\re ünï 😀')).toBe('a\\\\b\\tc\\nd\\re ünï 😀');
    expect(escapeCopyText('\\N')).toBe('\\\\N');
    expect(escapeCopyText('')).toBe('');
  });

  it('encodes values of every wire shape', () => {
    const scalar = copyEncoder('text');
    expect(scalar(null)).toBe('\\N');
    expect(scalar('')).toBe('');
    expect(scalar(true)).toBe('t');
    expect(scalar(false)).toBe('f');
    expect(scalar(42)).toBe('42');
    expect(scalar(-0)).toBe('-0');
    expect(scalar(1e300)).toBe('1e+300');
    expect(scalar('NaN')).toBe('NaN');
    expect(scalar('2024-02-29T07:04:56.654321Z')).toBe('2024-02-29T07:04:56.654321Z');
  });

  it('turns base64 into bytea hex input, escaped for COPY', () => {
    const binary = copyEncoder('binary');
    expect(binary(Buffer.from([0, 255]).toString('base64'))).toBe('\\\\x00ff');
    expect(binary('')).toBe('\\\\x');
    expect(binary(null)).toBe('\\N');
  });

  it('round-trips through escape and unescape', () => {
    const nasty = 'tab\there\nnew line\r\\N back\\slash \\x00 ünï 😀';
    expect(unescapeCopyText(escapeCopyText(nasty))).toBe(nasty);
  });
});
