import { describe, expect, it } from 'vitest';
import { ConfigError, DeltaError } from '../../src/errors.js';
import {
  canonicalFraction,
  driverWriter,
  logicalTypeOf,
  publicColumn,
  quoteIdent,
  readExpression,
  stagingFor,
  wireRead,
  wireReader,
} from '../../src/db/mssql/types.js';
import { column } from '../helpers/mssql.js';

describe('SQL Server native type -> logical type', () => {
  it.each([
    ['tinyint', 'int'],
    ['smallint', 'int'],
    ['int', 'int'],
    ['bigint', 'bigint'],
    ['timestamp', 'bigint'],
    ['rowversion', 'bigint'],
    ['decimal', 'decimal'],
    ['numeric', 'decimal'],
    ['money', 'decimal'],
    ['smallmoney', 'decimal'],
    ['real', 'float'],
    ['float', 'float'],
    ['bit', 'bool'],
    ['char', 'text'],
    ['varchar', 'text'],
    ['nchar', 'text'],
    ['nvarchar', 'text'],
    ['text', 'text'],
    ['ntext', 'text'],
    ['xml', 'text'],
    ['json', 'json'],
    ['binary', 'binary'],
    ['varbinary', 'binary'],
    ['image', 'binary'],
    ['date', 'date'],
    ['time', 'time'],
    ['datetime', 'timestamp'],
    ['datetime2', 'timestamp'],
    ['smalldatetime', 'timestamp'],
    ['datetimeoffset', 'timestamptz'],
    ['uniqueidentifier', 'uuid'],
    ['NVARCHAR', 'text'],
  ])('%s is %s', (native, logical) => {
    expect(logicalTypeOf(native)).toBe(logical);
  });

  it.each(['sql_variant', 'geography', 'geometry', 'hierarchyid', 'vector'])(
    '%s is unsupported',
    (native) => {
      expect(logicalTypeOf(native)).toBeUndefined();
    },
  );
});

describe('toMssqlColumn', () => {
  it.each([
    [{ base_type: 'nvarchar', max_length: 200 }, 'nvarchar(100)', 100],
    [{ base_type: 'nvarchar', max_length: -1 }, 'nvarchar(max)', 'max'],
    [{ base_type: 'nchar', max_length: 20 }, 'nchar(10)', 10],
    [{ base_type: 'varchar', max_length: 8000 }, 'varchar(8000)', 8000],
    [{ base_type: 'char', max_length: 3 }, 'char(3)', 3],
    [{ base_type: 'binary', max_length: 16 }, 'binary(16)', 16],
    [{ base_type: 'varbinary', max_length: -1 }, 'varbinary(max)', 'max'],
    [{ base_type: 'decimal', num_precision: 38, num_scale: 10 }, 'decimal(38,10)', undefined],
    [{ base_type: 'numeric', num_precision: 20, num_scale: 0 }, 'numeric(20,0)', undefined],
    [{ base_type: 'datetime2', num_scale: 3 }, 'datetime2(3)', undefined],
    [{ base_type: 'datetimeoffset', num_scale: 7 }, 'datetimeoffset(7)', undefined],
    [{ base_type: 'time', num_scale: 0 }, 'time(0)', undefined],
    [{ base_type: 'ntext', max_length: 16 }, 'ntext', 'max'],
    [{ base_type: 'money', num_precision: 19, num_scale: 4 }, 'money', undefined],
  ])('%o declares %s', (row, nativeType, length) => {
    const c = column('c', row.base_type, row);
    expect(c.nativeType).toBe(nativeType);
    expect(c.length).toBe(length);
  });

  it('reports rowversion by its current name and carries it as bigint', () => {
    const c = column('rv', 'timestamp', { max_length: 8 });
    expect(c).toMatchObject({ baseType: 'rowversion', nativeType: 'rowversion', type: 'bigint' });
  });

  it('keeps identity, computed and collation, and leaves them out of the public view', () => {
    const c = column('id', 'int', { is_identity: true, collation_name: null });
    expect(c.identity).toBe(true);
    expect(c.computed).toBe(false);
    expect(publicColumn(c)).toEqual({ name: 'id', type: 'int', nativeType: 'int' });
    expect(() => publicColumn(column('v', 'sql_variant'))).toThrow(/no logical type/);
  });
});

describe('readExpression (what the server renders for each type)', () => {
  it.each([
    ['int', '[c]'],
    ['bigint', 'CONVERT(varchar(20), [c])'],
    ['timestamp', 'CONVERT(varchar(20), CONVERT(bigint, [c]))'],
    ['decimal', 'CONVERT(varchar(50), [c])'],
    ['money', 'CONVERT(varchar(30), [c], 2)'],
    ['smallmoney', 'CONVERT(varchar(30), [c], 2)'],
    ['float', '[c]'],
    ['bit', '[c]'],
    ['nvarchar', '[c]'],
    ['xml', 'CONVERT(nvarchar(max), [c])'],
    ['varbinary', '[c]'],
    ['date', 'CONVERT(char(10), [c], 23)'],
    ['time', 'CONVERT(varchar(16), [c], 121)'],
    ['datetime', 'CONVERT(varchar(27), [c], 121)'],
    ['datetime2', 'CONVERT(varchar(27), [c], 121)'],
    ['smalldatetime', 'CONVERT(varchar(27), [c], 121)'],
    [
      'datetimeoffset',
      "CONVERT(varchar(27), CONVERT(datetime2(7), SWITCHOFFSET([c], '+00:00')), 121)",
    ],
    ['uniqueidentifier', 'LOWER(CONVERT(char(36), [c]))'],
  ])('%s -> %s', (native, sql) => {
    expect(readExpression(column('c', native))).toBe(sql);
  });

  it('quotes identifiers, doubling ]', () => {
    expect(quoteIdent('weird] name')).toBe('[weird]] name]');
    expect(readExpression(column('a]b', 'bigint'))).toBe('CONVERT(varchar(20), [a]]b])');
  });
});

describe('driver value -> wire value', () => {
  it.each([
    ['12:34:56', '12:34:56'],
    ['12:34:56.1234567', '12:34:56.123456'],
    ['12:34:56.5', '12:34:56.500000'],
    ['12:34:56.0000000', '12:34:56'],
    // The seventh digit (100 ns) cannot travel: the wire carries microseconds.
    ['12:34:56.0000009', '12:34:56'],
    ['2024-02-29 23:59:59.997', '2024-02-29 23:59:59.997000'],
    ['2024-01-01 10:00:00.000', '2024-01-01 10:00:00'],
  ])('canonicalFraction(%s) = %s', (text, wire) => {
    expect(canonicalFraction(text)).toBe(wire);
  });

  it('datetimeoffset (rendered in UTC by the server) becomes ...Z', () => {
    const read = wireReader('timestamptz');
    expect(read('2024-03-01 08:15:30.1234567')).toBe('2024-03-01T08:15:30.123456Z');
    expect(read('0001-01-01 00:00:00.0000000')).toBe('0001-01-01T00:00:00Z');
    expect(read(null)).toBeNull();
  });

  it('binary becomes base64 with padding', () => {
    expect(wireReader('binary')(Buffer.from([0, 1, 2, 255]))).toBe('AAEC/w==');
    expect(wireReader('binary')(Buffer.alloc(0))).toBe('');
  });

  it('keeps strings (bigint, decimal, uuid), numbers, booleans and empty strings as they are', () => {
    expect(wireReader('bigint')('9223372036854775807')).toBe('9223372036854775807');
    expect(wireReader('decimal')('-12.3400000000')).toBe('-12.3400000000');
    expect(wireReader('uuid')('0e984725-c51c-4bf4-9960-e1c80e27aba0')).toBe(
      '0e984725-c51c-4bf4-9960-e1c80e27aba0',
    );
    expect(wireReader('int')(0)).toBe(0);
    expect(wireReader('bool')(false)).toBe(false);
    expect(wireReader('float')(0.10000000149011612)).toBe(0.10000000149011612);
    expect(wireReader('text')('')).toBe('');
    expect(wireReader('text')(null)).toBeNull();
  });
});

describe('stagingFor (how a wire value reaches the target column)', () => {
  const parsed = (type: Parameters<typeof stagingFor>[0], target: ReturnType<typeof column>) => {
    const s = stagingFor(type, target);
    return { driver: s.driver, length: s.length, value: s.parse('st.c0') };
  };

  it.each([
    ['int', column('t', 'smallint'), { driver: 'SmallInt', value: 'st.c0' }],
    ['int', column('t', 'decimal', { num_precision: 10 }), { driver: 'BigInt', value: 'st.c0' }],
    ['bigint', column('t', 'bigint'), { driver: 'BigInt', value: 'st.c0' }],
    [
      'bigint',
      column('t', 'decimal', { num_precision: 20, num_scale: 0 }),
      { driver: 'VarChar', length: 40, value: 'CONVERT(decimal(20,0), st.c0)' },
    ],
    [
      'decimal',
      column('t', 'decimal', { num_precision: 38, num_scale: 10 }),
      { driver: 'VarChar', length: 100, value: 'CONVERT(decimal(38,10), st.c0)' },
    ],
    ['decimal', column('t', 'money'), { driver: 'VarChar', value: 'CONVERT(money, st.c0)' }],
    ['decimal', column('t', 'varchar', { max_length: 50 }), { driver: 'VarChar', value: 'st.c0' }],
    ['float', column('t', 'real'), { driver: 'Float', value: 'st.c0' }],
    ['bool', column('t', 'bit'), { driver: 'Bit', value: 'st.c0' }],
    ['text', column('t', 'nvarchar', { max_length: 200 }), { driver: 'NVarChar', length: 100 }],
    ['text', column('t', 'varchar', { max_length: 8000 }), { driver: 'NVarChar', length: 'max' }],
    ['text', column('t', 'ntext'), { driver: 'NVarChar', length: 'max' }],
    ['json', column('t', 'nvarchar', { max_length: -1 }), { driver: 'NVarChar', length: 'max' }],
    ['binary', column('t', 'binary', { max_length: 16 }), { driver: 'VarBinary', length: 16 }],
    ['binary', column('t', 'image'), { driver: 'VarBinary', length: 'max' }],
    ['uuid', column('t', 'uniqueidentifier'), { driver: 'UniqueIdentifier', value: 'st.c0' }],
    ['uuid', column('t', 'char', { max_length: 36 }), { driver: 'NVarChar', length: 36 }],
    ['date', column('t', 'date'), { driver: 'VarChar', value: 'CONVERT(date, st.c0, 23)' }],
    ['time', column('t', 'time'), { driver: 'VarChar', value: 'CONVERT(time(7), st.c0)' }],
    [
      'timestamp',
      column('t', 'datetime2', { num_scale: 3 }),
      { driver: 'VarChar', value: 'CONVERT(datetime2(7), st.c0, 121)' },
    ],
    // datetime compared with datetime2 counts exact 1/300 s ticks (compatibility level 130+):
    // a key staged as datetime2 '.003' would never equal the stored .00333...
    [
      'timestamp',
      column('t', 'datetime'),
      { driver: 'VarChar', value: 'CONVERT(datetime, CONVERT(datetime2(7), st.c0, 121))' },
    ],
    [
      'timestamptz',
      column('t', 'datetimeoffset', { num_scale: 7 }),
      { driver: 'VarChar', length: 28, value: 'CONVERT(datetimeoffset(7), st.c0)' },
    ],
  ] as const)('%s into %o', (type, target, expected) => {
    expect(parsed(type, target)).toMatchObject(expected);
  });
});

describe('wire value -> driver value', () => {
  it('bigint strings beyond 2^53 become exact JS bigints', () => {
    const write = driverWriter('bigint', 'BigInt', 'id');
    expect(write('9007199254740993')).toBe(9007199254740993n);
    expect(write('9223372036854775807')).toBe(9223372036854775807n);
    expect(write('-9223372036854775808')).toBe(-9223372036854775808n);
    expect(write(null)).toBeNull();
    expect(() => write('12.5')).toThrow(DeltaError);
    expect(() => write('12.5')).toThrow(/column id: expected digits for type bigint/);
  });

  it('decimal(38,10) strings reach the server untouched, to be parsed there', () => {
    const write = driverWriter('decimal', 'VarChar', 'amount');
    expect(write('1234567890123456789012345678.1234567890')).toBe(
      '1234567890123456789012345678.1234567890',
    );
    expect(write('-0.0000000001')).toBe('-0.0000000001');
    expect(() => write(1.5)).toThrow(DeltaError);
  });

  it('datetimeoffset wire values stay in the UTC ISO 8601 form datetimeoffset parses', () => {
    expect(driverWriter('timestamptz', 'VarChar', 'at')('2024-03-01T08:15:30.123456Z')).toBe(
      '2024-03-01T08:15:30.123456Z',
    );
  });

  it('binary base64 becomes the exact bytes; the empty string stays empty, not NULL', () => {
    const write = driverWriter('binary', 'VarBinary', 'b');
    expect(write('AAEC/w==')).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(write('')).toEqual(Buffer.alloc(0));
    expect(write(null)).toBeNull();
  });

  it('uuids pass as text (the driver accepts either case; the wire is lowercase)', () => {
    const write = driverWriter('uuid', 'UniqueIdentifier', 'u');
    expect(write('0e984725-c51c-4bf4-9960-e1c80e27aba0')).toBe(
      '0e984725-c51c-4bf4-9960-e1c80e27aba0',
    );
  });

  it('bools must be booleans; ints safe integers', () => {
    const bool = driverWriter('bool', 'Bit', 'flag');
    expect(bool(true)).toBe(true);
    expect(bool(false)).toBe(false);
    expect(() => bool(1)).toThrow(DeltaError);
    const int = driverWriter('int', 'Int', 'n');
    expect(int(-2147483648)).toBe(-2147483648);
    expect(() => int(3.5)).toThrow(DeltaError);
    expect(() => int('3')).toThrow(DeltaError);
  });

  it('floats pass through; NaN and infinities cannot be stored by SQL Server', () => {
    const write = driverWriter('float', 'Float', 'f');
    expect(write(-0.1)).toBe(-0.1);
    expect(write(1.7976931348623157e308)).toBe(1.7976931348623157e308);
    for (const special of ['NaN', 'Infinity', '-Infinity']) {
      expect(() => write(special)).toThrow(ConfigError);
    }
  });
});

describe('wireRead (how a column is read as a wire type)', () => {
  it('reads a column as its own type, over any expression (a join alias, a parsed key)', () => {
    const r = wireRead(column('at', 'datetime2', { num_scale: 7 }), 'timestamp', {
      expr: 't.[at]',
    });
    expect(r?.sql).toBe('CONVERT(varchar(27), t.[at], 121)');
    expect(r?.read('2024-01-01 00:00:00.1234567')).toBe('2024-01-01 00:00:00.123456');
    expect(wireRead(column('doc', 'nvarchar', { max_length: -1 }), 'json')?.sql).toBe('[doc]');
  });

  it('on a source, refuses another type', () => {
    expect(wireRead(column('n', 'bigint'), 'int')).toBeUndefined();
    expect(wireRead(column('g', 'geography'), 'text')).toBeUndefined();
  });

  it('on a replica, reads back what load wrote from another type, in the delta type', () => {
    const lenient = { lenient: true };
    expect(wireRead(column('n', 'bigint'), 'int', lenient)?.read('42')).toBe(42);
    expect(wireRead(column('n', 'int'), 'bigint', lenient)?.read(42)).toBe('42');
    const dec = column('n', 'decimal', { num_precision: 20, num_scale: 0 });
    expect(wireRead(dec, 'bigint', lenient)?.read('18446744073709551615')).toBe(
      '18446744073709551615',
    );
    expect(wireRead(column('u', 'nvarchar', { max_length: 72 }), 'uuid', lenient)?.read('x')).toBe(
      'x',
    );
    expect(wireRead(column('d', 'date'), 'timestamp', lenient)).toBeUndefined();
    expect(wireRead(column('n', 'int'), 'int', lenient)?.read(null)).toBeNull();
  });
});
