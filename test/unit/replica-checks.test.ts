/**
 * Which column pairs load checks before writing (issue 9: never quietly different), and which it
 * skips because they cannot differ: the pure planning behind the PG and MariaDB stages.
 */
import { describe, expect, it } from 'vitest';
import { stageColumn as mysqlStage } from '../../src/db/mysql/stage.js';
import { stageColumn as pgStage } from '../../src/db/pg/stage.js';
import type { LogicalType } from '../../src/db/types.js';

const pg = (type: LogicalType, nativeType: string, typname = nativeType, fallback = false) =>
  pgStage('c', type, { nativeType, typname, fallback });

describe('PostgreSQL: staging in the delta type, and the checks', () => {
  it('skips pairs that cannot differ', () => {
    expect(pg('int', 'bigint', 'int8').check).toBe('none');
    expect(pg('bigint', 'numeric').check).toBe('none');
    expect(pg('decimal', 'numeric').check).toBe('none');
    expect(pg('text', 'text').check).toBe('none');
    expect(pg('text', 'character varying').check).toBe('none');
    expect(pg('timestamp', 'timestamp without time zone', 'timestamp').check).toBe('none');
    expect(pg('float', 'real', 'float4').check).toBe('none');
  });

  it('checks what could round, truncate or overflow', () => {
    expect(pg('decimal', 'numeric(10,2)', 'numeric')).toEqual({
      name: 'c',
      stageType: 'numeric',
      targetType: 'numeric(10,2)',
      check: 'roundtrip',
    });
    expect(pg('timestamp', 'timestamp(0) without time zone', 'timestamp').check).toBe('roundtrip');
    expect(pg('text', 'character varying(5)', 'varchar').check).toBe('roundtrip');
    expect(pg('int', 'integer', 'int4').check).toBe('roundtrip');
    expect(pg('json', 'jsonb').check).toBe('parse');
  });

  it('checks nothing when the delta names exactly the target type (a PostgreSQL source)', () => {
    const same = (type: LogicalType, native: string, typname: string) =>
      pgStage('c', type, { nativeType: native, typname, fallback: false }, native).check;
    expect(same('decimal', 'numeric(10,2)', 'numeric')).toBe('none');
    expect(same('timestamp', 'timestamp(0) without time zone', 'timestamp')).toBe('none');
    expect(same('text', 'character varying(5)', 'varchar')).toBe('none');
    expect(same('int', 'integer', 'int4')).toBe('none');
    // Staged in that very type: COPY parses each value once, and the upsert casts nothing.
    expect(
      pgStage(
        'c',
        'decimal',
        { nativeType: 'numeric(10,2)', typname: 'numeric', fallback: false },
        'numeric(10,2)',
      ),
    ).toEqual({
      name: 'c',
      stageType: 'numeric(10,2)',
      targetType: 'numeric(10,2)',
      check: 'none',
    });
    expect(
      pgStage('c', 'bigint', { nativeType: 'bigint', typname: 'int8', fallback: false }, 'bigint')
        .stageType,
    ).toBe('bigint');
    // A narrower or differently spelled source type is still checked.
    const from = (source: string) =>
      pgStage(
        'c',
        'decimal',
        { nativeType: 'numeric(10,2)', typname: 'numeric', fallback: false },
        source,
      ).check;
    expect(from('numeric(12,4)')).toBe('roundtrip');
    expect(from('decimal(10,2)')).toBe('roundtrip');
  });

  it('stages a type it does not know as the target type, unchecked', () => {
    expect(pg('text', 'mood', 'mood', true)).toEqual({
      name: 'c',
      stageType: 'mood',
      targetType: 'mood',
      check: 'none',
    });
  });
});

describe('MariaDB/MySQL: staging in the delta type, and the checks', () => {
  const my = (type: LogicalType, dataType: string, columnType: string) =>
    mysqlStage({ name: 'c', type }, { dataType, columnType });

  it('skips pairs that cannot differ', () => {
    expect(my('int', 'bigint', 'bigint(20)').misfit).toBeNull();
    expect(my('text', 'longtext', 'longtext').misfit).toBeNull();
    expect(my('timestamp', 'datetime', 'datetime(6)').misfit).toBeNull();
    expect(my('float', 'float', 'float').misfit).toBeNull();
  });

  it('checks scale, fractional seconds, length and range', () => {
    expect(my('decimal', 'decimal', 'decimal(10,2)')).toEqual({
      stageType: 'DECIMAL(65,30)',
      misfit: '(s.`c` IS NOT NULL AND (CAST(s.`c` AS DECIMAL(10,2)) <> s.`c`))',
      // A decimal's scale is rounded with only a note when written straight in.
      quiet: '(s.`c` IS NOT NULL AND (CAST(s.`c` AS DECIMAL(10,2)) <> s.`c`))',
    });
    expect(my('timestamp', 'datetime', 'datetime').misfit).toBe(
      '(s.`c` IS NOT NULL AND (CAST(s.`c` AS DATETIME(0)) <> s.`c`))',
    );
    expect(my('text', 'varchar', 'varchar(5)').misfit).toBe(
      '(s.`c` IS NOT NULL AND (CHAR_LENGTH(s.`c`) > 5))',
    );
    expect(my('int', 'int', 'int(10) unsigned').misfit).toBe(
      '(s.`c` IS NOT NULL AND (s.`c` < 0 OR s.`c` > 4294967295))',
    );
  });

  it('tells apart what the server refuses loudly from what it would change quietly', () => {
    expect(my('int', 'int', 'int(10) unsigned').quiet).toBeNull();
    expect(my('text', 'varchar', 'varchar(5)').quiet).toBeNull();
    expect(my('timestamptz', 'timestamp', 'timestamp(6)').quiet).toBeNull();
    expect(my('decimal', 'int', 'int(11)').quiet).toBe(
      '(s.`c` IS NOT NULL AND (s.`c` <> FLOOR(s.`c`)))',
    );
    expect(my('timestamp', 'datetime', 'datetime').quiet).toBe(
      '(s.`c` IS NOT NULL AND (CAST(s.`c` AS DATETIME(0)) <> s.`c`))',
    );
    expect(my('time', 'time', 'time(3)').quiet).toBe(
      '(s.`c` IS NOT NULL AND (CAST(s.`c` AS TIME(3)) <> s.`c`))',
    );
    expect(my('timestamp', 'date', 'date').quiet).toBe(
      '(s.`c` IS NOT NULL AND (CAST(s.`c` AS DATE) <> s.`c`))',
    );
  });

  it('stages a type it does not know as the target type, unchecked', () => {
    expect(my('text', 'enum', "enum('a','b')")).toEqual({
      stageType: "enum('a','b')",
      misfit: null,
      quiet: null,
    });
  });
});
