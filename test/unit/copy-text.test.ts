import { describe, expect, it } from 'vitest';
import {
  decodeField,
  decodeLine,
  encodeField,
  encodeRow,
  escapeField,
  formatFloat,
  unescapeField,
} from '../../src/format/copy-text.js';
import type { LogicalType, WireRow, WireValue } from '../../src/format/wire.js';

/** A small seeded PRNG (mulberry32), so a failing case can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Characters that stress the codec: escapes, the NULL marker's pieces, non-BMP, controls. */
const HOSTILE = [
  '\\',
  '\n',
  '\r',
  '\t',
  '\b',
  '\f',
  '\v',
  'N',
  '.',
  '\0',
  '\u2028',
  '🎉',
  'é',
  'x',
];

function hostileText(next: () => number, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) {
    s += next() < 0.5 ? HOSTILE[Math.floor(next() * HOSTILE.length)] : 'abc'[i % 3];
  }
  return s;
}

const TYPES: LogicalType[] = [
  'int',
  'bigint',
  'decimal',
  'float',
  'bool',
  'text',
  'binary',
  'date',
  'time',
  'timestamp',
  'timestamptz',
  'json',
  'uuid',
];

/** The exact row of every type, with the canonical line it must give. */
const EXACT: { row: WireRow; line: string }[] = [
  {
    row: [
      -2147483648,
      '-9223372036854775808',
      '-12.3400000000',
      1.5,
      true,
      'plain',
      'AAEC/w==',
      '2024-02-29',
      '23:59:59.999999',
      '2024-02-29 23:59:59.999999',
      '2024-02-29T23:59:59.999999Z',
      '{"n": 18446744073709551615}',
      '0e2ab3c4-5d6e-4f70-8a91-b2c3d4e5f607',
    ],
    line:
      '-2147483648\t-9223372036854775808\t-12.3400000000\t1.5\tt\tplain\t\\\\x000102ff\t' +
      '2024-02-29\t23:59:59.999999\t2024-02-29 23:59:59.999999\t2024-02-29 23:59:59.999999+00\t' +
      '{"n": 18446744073709551615}\t0e2ab3c4-5d6e-4f70-8a91-b2c3d4e5f607\n',
  },
  {
    row: [
      0,
      '18446744073709551615',
      'NaN',
      'NaN',
      false,
      '',
      '',
      '0001-01-01',
      '00:00:00',
      '1970-01-01 00:00:00',
      '1970-01-01T00:00:00Z',
      '"\\u0000 \\\\N"',
      '00000000-0000-0000-0000-000000000000',
    ],
    line:
      '0\t18446744073709551615\tNaN\tNaN\tf\t\t\\\\x\t0001-01-01\t00:00:00\t1970-01-01 00:00:00\t' +
      '1970-01-01 00:00:00+00\t"\\\\u0000 \\\\\\\\N"\t00000000-0000-0000-0000-000000000000\n',
  },
  { row: TYPES.map(() => null), line: TYPES.map(() => '\\N').join('\t') + '\n' },
];

describe('canonical lines', () => {
  it.each(EXACT.map((e, i) => [i, e] as const))('row %i encodes and decodes exactly', (_, e) => {
    expect(encodeRow(e.row, TYPES)).toBe(e.line);
    expect(decodeLine(e.line.slice(0, -1), TYPES)).toEqual(e.row);
  });

  it('keeps NULL, the empty string and the text \\N apart', () => {
    const types: LogicalType[] = ['text', 'text', 'text', 'text'];
    const row = [null, '', '\\N', 'N'];
    const line = encodeRow(row, types);
    expect(line).toBe('\\N\t\t\\\\N\tN\n');
    expect(decodeLine(line.slice(0, -1), types)).toEqual(row);
  });

  it('escapes what PostgreSQL escapes, and only that', () => {
    expect(escapeField('a\\b\nc\rd\te\bf\fg\vh')).toBe('a\\\\b\\nc\\rd\\te\\bf\\fg\\vh');
    // Other control characters, quotes and non-ASCII pass as they are, as in PostgreSQL's output.
    expect(escapeField('\0\u0001\u001f"\'🎉\u2028')).toBe('\0\u0001\u001f"\'🎉\u2028');
  });

  it("reads PostgreSQL's other input escapes: octal, hex, and any character for itself", () => {
    expect(unescapeField('\\101\\x42\\7\\x9z')).toBe('AB\u0007\tz');
    // A multi-byte character given byte by byte.
    expect(unescapeField('\\360\\237\\216\\211!')).toBe('🎉!');
    expect(unescapeField('\\xe2\\x82\\xac')).toBe('€');
    expect(unescapeField('\\a\\.\\q')).toBe('a.q');
    expect(unescapeField('\\x')).toBe('x');
    expect(() => unescapeField('ends\\')).toThrow('lone backslash');
  });

  it('maps binary to \\x hex and back to base64', () => {
    expect(encodeField('3q2+7w==', 'binary')).toBe('\\\\xdeadbeef');
    expect(decodeField('\\\\xDEADBEEF', 'binary')).toBe('3q2+7w==');
    expect(() => decodeField('\\\\xabc', 'binary')).toThrow('not \\x + hex');
    expect(() => decodeField('abc', 'binary')).toThrow('not \\x + hex');
  });

  it("trims fractions of a second as PostgreSQL prints them; the wire's have six digits", () => {
    expect(encodeField('12:00:00.500000', 'time')).toBe('12:00:00.5');
    expect(encodeField('2024-01-02 03:04:05.000000', 'timestamp')).toBe('2024-01-02 03:04:05');
    expect(encodeField('2024-01-02T03:04:05.120000Z', 'timestamptz')).toBe(
      '2024-01-02 03:04:05.12+00',
    );
    expect(decodeField('12:00:00.5', 'time')).toBe('12:00:00.500000');
    expect(decodeField('0044-03-15 12:00:00.25 BC', 'timestamp')).toBe(
      '0044-03-15 12:00:00.250000 BC',
    );
    expect(decodeField('2024-01-02 03:04:05.12+00', 'timestamptz')).toBe(
      '2024-01-02T03:04:05.120000Z',
    );
    expect(decodeField('2024-01-02 03:04:05', 'timestamp')).toBe('2024-01-02 03:04:05');
  });

  it('maps timestamptz between the wire and PostgreSQL text; infinity passes', () => {
    expect(encodeField('2024-01-02T03:04:05Z', 'timestamptz')).toBe('2024-01-02 03:04:05+00');
    expect(decodeField('2024-01-02 03:04:05.5+00', 'timestamptz')).toBe(
      '2024-01-02T03:04:05.500000Z',
    );
    expect(encodeField('infinity', 'timestamptz')).toBe('infinity');
    expect(decodeField('-infinity', 'timestamptz')).toBe('-infinity');
  });
});

describe('floats', () => {
  // What PostgreSQL 16 prints for these float8 values with extra_float_digits = 1.
  const POSTGRES: [number, string][] = [
    [1e15, '1e+15'],
    [1e14, '100000000000000'],
    [123456789012345, '123456789012345'],
    [1234567890123456, '1.234567890123456e+15'],
    [0.0001, '0.0001'],
    [0.00001, '1e-05'],
    [1.5e-7, '1.5e-07'],
    [1e100, '1e+100'],
    [1.5e300, '1.5e+300'],
    [-2.5e-5, '-2.5e-05'],
    [0.1, '0.1'],
    [1e22, '1e+22'],
    [5e-324, '5e-324'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [-0, '-0'],
    [0, '0'],
    [-123.456, '-123.456'],
  ];
  it.each(POSTGRES)('%d prints as PostgreSQL prints it: %s', (n, text) => {
    expect(formatFloat(n)).toBe(text);
    expect(Object.is(decodeField(text, 'float'), n)).toBe(true);
  });

  it('round-trips random doubles bit for bit', () => {
    const next = random(7);
    const buf = new DataView(new ArrayBuffer(8));
    for (let i = 0; i < 20_000; i++) {
      buf.setUint32(0, Math.floor(next() * 2 ** 32));
      buf.setUint32(4, Math.floor(next() * 2 ** 32));
      const n = buf.getFloat64(0);
      const back = decodeField(formatFloat(n), 'float');
      if (Number.isNaN(n)) expect(back).toBe('NaN');
      else expect(Object.is(back, n)).toBe(true);
    }
  });

  it('keeps NaN and the infinities as their wire strings', () => {
    for (const v of ['NaN', 'Infinity', '-Infinity']) {
      expect(encodeField(v, 'float')).toBe(v);
      expect(decodeField(v, 'float')).toBe(v);
    }
    expect(encodeField(Infinity, 'float')).toBe('Infinity');
  });
});

describe('round trips (property style)', () => {
  it('any text survives, whatever it holds', () => {
    const next = random(42);
    const types: LogicalType[] = ['int', 'text', 'json', 'text'];
    for (let i = 0; i < 5_000; i++) {
      const row: WireRow = [
        i,
        hostileText(next, Math.floor(next() * 40)),
        JSON.stringify({ s: hostileText(next, 8), big: '18446744073709551615' }),
        next() < 0.2 ? null : hostileText(next, Math.floor(next() * 5)),
      ];
      const line = encodeRow(row, types);
      // Every row is exactly one line, whatever it holds.
      expect(line.indexOf('\n')).toBe(line.length - 1);
      expect(line.split('\t')).toHaveLength(types.length);
      expect(decodeLine(line.slice(0, -1), types)).toEqual(row);
    }
  });

  it('any binary survives', () => {
    const next = random(3);
    for (let i = 0; i < 2_000; i++) {
      const bytes = Buffer.from(Array.from({ length: i % 70 }, () => Math.floor(next() * 256)));
      const wire = bytes.toString('base64');
      expect(decodeField(encodeField(wire, 'binary'), 'binary')).toBe(wire);
    }
  });

  it('integers of every size stay exact', () => {
    const next = random(9);
    for (let i = 0; i < 2_000; i++) {
      const big = (
        BigInt(Math.floor(next() * 2 ** 53)) *
        2n ** 40n *
        (i % 2 ? -1n : 1n)
      ).toString();
      expect(decodeField(encodeField(big, 'bigint'), 'bigint')).toBe(big);
      const small = Math.floor((next() - 0.5) * 2 ** 53);
      expect(decodeField(encodeField(small, 'int'), 'int')).toBe(small);
    }
  });

  it('a 1 MB text with every escape survives', () => {
    const big = '\\N\t\n\r\b\f\v🎉'.repeat(1 << 17);
    const line = encodeRow([1, big], ['int', 'text']);
    expect(decodeLine(line.slice(0, -1), ['int', 'text'])).toEqual([1, big]);
  });
});

describe('refusals', () => {
  const bad: [string, LogicalType[], RegExp][] = [
    ['1\t2\t3', ['int', 'int'], /has 3 columns, the manifest declares 2/],
    ['1', ['int', 'int'], /has 1 columns, the manifest declares 2/],
    ['x', ['int'], /column 1: 'x' is not an int/],
    ['1.5', ['int'], /'1.5' is not an int/],
    ['', ['int'], /'' is not an int/],
    ['9007199254740993', ['int'], /is not an int/],
    ['true', ['bool'], /'true' is not a bool/],
    ['12a', ['bigint'], /'12a' is not a bigint/],
    ['', ['bigint'], /'' is not a bigint/],
    ['1.2.3', ['decimal'], /'1.2.3' is not a decimal/],
    ['1;drop', ['decimal'], /is not a decimal/],
    ['abc', ['float'], /'abc' is not a float/],
    ['a\\', ['text'], /lone backslash/],
  ];
  it.each(bad)('%j as %j', (line, types, message) => {
    expect(() => decodeLine(line, types)).toThrow(message);
  });

  it('refuses a wire value of the wrong kind when encoding (a bug, not data)', () => {
    const wrong: [WireValue, LogicalType][] = [
      ['1', 'int'],
      [1, 'bigint'],
      ['yes', 'bool'],
      [true, 'text'],
      ['x', 'float'],
    ];
    for (const [v, t] of wrong) expect(() => encodeField(v, t)).toThrow(`of type ${t}`);
    expect(() => encodeRow([1], ['int', 'int'])).toThrow('row has 1 values');
  });

  it('reads every form of PostgreSQL numeric text', () => {
    for (const d of ['0', '-12.3400000000', '1e+30', '.5', '5.', 'NaN', 'Infinity', '-Infinity']) {
      expect(decodeField(d, 'decimal')).toBe(d);
    }
  });
});
