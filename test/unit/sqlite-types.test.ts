import { describe, expect, it } from 'vitest';
import { canonicalInstant, fromWire, logicalTypeOf, toWire } from '../../src/db/sqlite/types.js';
import { upsertSql } from '../../src/db/sqlite/sql.js';

describe('SQLite declared types', () => {
  it.each([
    ['INTEGER', 'bigint'],
    ['int', 'bigint'],
    ['BOOLEAN', 'bool'],
    ['VARCHAR(20)', 'text'],
    ['TEXT', 'text'],
    ['BLOB', 'binary'],
    ['REAL', 'float'],
    ['DOUBLE PRECISION', 'float'],
    ['NUMERIC', 'decimal'],
    ['DECIMAL(10,2)', 'decimal'],
    ['DATE', 'date'],
    ['DATETIME', 'timestamp'],
    ['TIMESTAMP', 'timestamp'],
    ['TIMESTAMPTZ', 'timestamptz'],
    ['TIME', 'time'],
    ['JSON', 'json'],
    ['UUID', 'uuid'],
    ['', 'text'],
  ])('%s is %s', (declared, logical) => {
    expect(logicalTypeOf(declared)).toBe(logical);
  });
});

describe('SQLite values on the wire', () => {
  it('keeps 64-bit integers exact', () => {
    expect(toWire(9223372036854775807n, 'bigint')).toBe('9223372036854775807');
    expect(fromWire('-9223372036854775808', 'bigint')).toBe(-9223372036854775808n);
  });

  it('carries binary as base64 and booleans as true/false', () => {
    expect(toWire(Buffer.from([0, 255, 16]), 'binary')).toBe('AP8Q');
    expect(fromWire('AP8Q', 'binary')).toEqual(Buffer.from([0, 255, 16]));
    expect(toWire(1n, 'bool')).toBe(true);
    expect(toWire(0n, 'bool')).toBe(false);
    expect(fromWire(false, 'bool')).toBe(0);
  });

  it('keeps NULL and the empty string apart', () => {
    expect(toWire(null, 'text')).toBeNull();
    expect(toWire('', 'text')).toBe('');
  });

  it('turns non-finite floats into their names', () => {
    expect(toWire(Number.POSITIVE_INFINITY, 'float')).toBe('Infinity');
    expect(toWire(1.5, 'float')).toBe(1.5);
  });
});

describe('canonicalInstant', () => {
  it.each([
    ['2026-03-01 10:11:12', '2026-03-01T10:11:12Z'],
    ['2026-03-01T10:11:12.123456Z', '2026-03-01T10:11:12.123456Z'],
    ['2026-03-01 10:11:12.5+02:00', '2026-03-01T08:11:12.5Z'],
    ['2026-03-01 00:30:00-0130', '2026-03-01T02:00:00Z'],
    ['2026-01-01 00:00:00.000001+05', '2025-12-31T19:00:00.000001Z'],
  ])('%s -> %s', (input, output) => {
    expect(canonicalInstant(input)).toBe(output);
  });

  it('passes text that is no timestamp through, for the target to judge', () => {
    expect(canonicalInstant('yesterday')).toBe('yesterday');
  });
});

describe('upsertSql', () => {
  it('updates only the non-key columns the delta carries, quoting names', () => {
    const sql = upsertSql({
      table: 'we"ird',
      key: ['a', 'b'],
      columns: [
        { name: 'a', type: 'int' },
        { name: 'b', type: 'int' },
        { name: 'c', type: 'text' },
      ],
    });
    expect(sql.replace(/\s+/g, ' ')).toBe(
      'INSERT INTO "we""ird" ("a", "b", "c") VALUES (?, ?, ?) ON CONFLICT ("a", "b") DO UPDATE SET "c" = excluded."c"',
    );
  });

  it('does nothing on conflict when every column is a key', () => {
    expect(upsertSql({ table: 't', key: ['a'], columns: [{ name: 'a', type: 'int' }] })).toMatch(
      /DO NOTHING$/,
    );
  });
});
