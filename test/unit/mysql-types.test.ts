import { describe, expect, it } from 'vitest';
import { ConfigError, DeltaError } from '../../src/errors.js';
import { onDuplicateClause } from '../../src/db/mysql/load.js';
import {
  logicalTypeOf,
  quoteIdent,
  quoteTable,
  readConverter,
  shortestFloat32,
  sqlString,
  canonicalFraction,
  tsvField,
  writeEncoder,
  type NativeColumn,
} from '../../src/db/mysql/types.js';
import type { ColumnInfo, LogicalType } from '../../src/db/types.js';

function native(dataType: string, columnType = dataType, jsonChecked = false): NativeColumn {
  return { name: 'c', dataType, columnType, jsonChecked };
}

describe('mysql logicalTypeOf', () => {
  it.each<[string, string, LogicalType]>([
    ['tinyint', 'tinyint(1)', 'bool'],
    ['tinyint', 'tinyint(1) unsigned', 'bool'],
    ['tinyint', 'tinyint(4)', 'int'],
    ['tinyint', 'tinyint', 'int'],
    ['bit', 'bit(1)', 'bool'],
    ['bit', 'bit(12)', 'bigint'],
    ['smallint', 'smallint(6)', 'int'],
    ['mediumint', 'mediumint unsigned', 'int'],
    ['int', 'int(10) unsigned', 'int'],
    ['year', 'year(4)', 'int'],
    ['bigint', 'bigint(20) unsigned', 'bigint'],
    ['decimal', 'decimal(38,10)', 'decimal'],
    ['float', 'float', 'float'],
    ['double', 'double', 'float'],
    ['varchar', 'varchar(20)', 'text'],
    ['enum', "enum('A','b')", 'text'],
    ['set', "set('x')", 'text'],
    ['longtext', 'longtext', 'text'],
    ['varbinary', 'varbinary(16)', 'binary'],
    ['longblob', 'longblob', 'binary'],
    ['geometry', 'geometry', 'binary'],
    ['date', 'date', 'date'],
    ['time', 'time(6)', 'time'],
    ['datetime', 'datetime(6)', 'timestamp'],
    ['timestamp', 'timestamp(6)', 'timestamptz'],
    ['json', 'json', 'json'],
    ['uuid', 'uuid', 'uuid'],
  ])('%s %s -> %s', (dataType, columnType, expected) => {
    expect(logicalTypeOf(native(dataType, columnType), 't')).toBe(expected);
  });

  it('treats a json_valid-checked LONGTEXT (MariaDB JSON) as json', () => {
    expect(logicalTypeOf(native('longtext', 'longtext', true), 't')).toBe('json');
  });

  it('refuses an unknown type with a ConfigError naming the column', () => {
    expect(() => logicalTypeOf(native('vector', 'vector(3)'), 'items')).toThrow(ConfigError);
    expect(() => logicalTypeOf(native('vector', 'vector(3)'), 'items')).toThrow(/items\.c/);
  });
});

describe('mysql identifiers and literals', () => {
  it('quotes identifiers', () => {
    expect(quoteIdent('a`b')).toBe('`a``b`');
    expect(quoteTable('db.t')).toBe('`db`.`t`');
  });

  it('escapes string literals', () => {
    expect(sqlString("it's \\ a\nb\r\0\x1a")).toBe("'it\\'s \\\\ a\\nb\\r\\0\\Z'");
  });

  it('escapes LOAD DATA fields', () => {
    expect(tsvField('a\tb\nc\r\\d\0')).toBe('a\\tb\\nc\\r\\\\d\\0');
    expect(tsvField('\\N')).toBe('\\\\N');
  });

  it('builds the ON DUPLICATE KEY UPDATE clause from the non-key columns', () => {
    expect(onDuplicateClause(['id', 'a', 'b'], ['id'])).toBe(
      'ON DUPLICATE KEY UPDATE `a` = VALUES(`a`), `b` = VALUES(`b`)',
    );
    expect(onDuplicateClause(['k1', 'k2'], ['k1', 'k2'])).toBe(
      'ON DUPLICATE KEY UPDATE `k1` = VALUES(`k1`)',
    );
  });
});

describe('mysql driver value -> wire value', () => {
  it('gives fractional seconds one spelling: six digits or none', () => {
    expect(canonicalFraction('2020-01-01 00:00:00.12')).toBe('2020-01-01 00:00:00.120000');
    expect(canonicalFraction('2020-01-01 00:00:00.120000')).toBe('2020-01-01 00:00:00.120000');
    expect(canonicalFraction('2020-01-01 00:00:00.000000')).toBe('2020-01-01 00:00:00');
    expect(canonicalFraction('12:34:56')).toBe('12:34:56');
  });

  it('finds the shortest decimal of a float32', () => {
    expect(shortestFloat32(0.10000000149011612)).toBe(0.1);
    expect(shortestFloat32(1234567)).toBe(1234567);
    expect(shortestFloat32(16777216)).toBe(16777216);
    expect(shortestFloat32(3.4028234663852886e38)).toBe(3.4028234663852886e38);
    expect(shortestFloat32(Math.fround(-1.17549435e-38))).toBe(-1.1754944e-38);
  });

  it('converts per type', () => {
    expect(readConverter('bool', 'tinyint')(0)).toBe(false);
    expect(readConverter('bool', 'tinyint')(1)).toBe(true);
    expect(readConverter('bool', 'bit')(Buffer.from([1]))).toBe(true);
    expect(readConverter('bool', 'bit')(Buffer.from([0]))).toBe(false);
    expect(readConverter('bigint', 'bit')(Buffer.from([0x01, 0x00]))).toBe('256');
    expect(readConverter('bigint', 'bigint')('18446744073709551615')).toBe('18446744073709551615');
    expect(readConverter('binary', 'blob')(Buffer.from([0, 255]))).toBe('AP8=');
    expect(readConverter('timestamptz', 'timestamp')('2020-01-02 03:04:05.123450')).toBe(
      '2020-01-02T03:04:05.123450Z',
    );
    expect(readConverter('timestamp', 'datetime')('2020-01-02 03:04:05.000000')).toBe(
      '2020-01-02 03:04:05',
    );
    expect(readConverter('uuid', 'uuid')('AB7C1A3E-0000-4000-8000-000000000001')).toBe(
      'ab7c1a3e-0000-4000-8000-000000000001',
    );
  });
});

describe('mysql wire value -> target', () => {
  const col = (type: LogicalType): ColumnInfo => ({ name: 'c', type });

  it('writes literals', () => {
    expect(writeEncoder(col('bigint'), 'bigint').literal('-9223372036854775808')).toBe(
      '-9223372036854775808',
    );
    expect(writeEncoder(col('decimal'), 'decimal').literal('-12.3400000000')).toBe(
      '-12.3400000000',
    );
    expect(writeEncoder(col('bool'), 'tinyint').literal(true)).toBe('1');
    expect(writeEncoder(col('binary'), 'blob').literal('AP8=')).toBe("X'00ff'");
    expect(writeEncoder(col('binary'), 'blob').literal('')).toBe("X''");
    expect(writeEncoder(col('text'), 'varchar').literal('')).toBe("''");
    expect(writeEncoder(col('text'), 'varchar').literal(null)).toBe('NULL');
    expect(writeEncoder(col('timestamptz'), 'timestamp').literal('2020-01-02T03:04:05.5Z')).toBe(
      "'2020-01-02 03:04:05.5'",
    );
    expect(writeEncoder(col('float'), 'double').literal(1e300)).toBe('1e+300');
  });

  it('writes LOAD DATA fields', () => {
    expect(writeEncoder(col('text'), 'varchar').field(null)).toBe('\\N');
    expect(writeEncoder(col('text'), 'varchar').field('')).toBe('');
    expect(writeEncoder(col('binary'), 'blob').field('AP8=')).toBe('00ff');
    expect(writeEncoder(col('binary'), 'blob').viaHex).toBe(true);
    expect(writeEncoder(col('bool'), 'bit').viaUnsigned).toBe(true);
    expect(writeEncoder(col('bool'), 'bit').field(false)).toBe('0');
  });

  it.each<[LogicalType, unknown]>([
    ['int', 1.5],
    ['int', '1'],
    ['bigint', '12a'],
    ['bigint', 2 ** 60],
    ['decimal', '1e5'],
    ['float', 'NaN'],
    ['bool', 1],
    ['timestamptz', '2020-01-02 03:04:05'],
    ['text', 5],
  ])('refuses a %s wire value %j with a DeltaError', (type, value) => {
    expect(() => writeEncoder(col(type), 'x').literal(value as never)).toThrow(DeltaError);
  });
});
