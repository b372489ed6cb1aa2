/**
 * PostgreSQL types: native type -> LogicalType, COPY text -> wire value (reading) and wire
 * value -> COPY text (writing).
 *
 * Both directions use COPY's text format and PostgreSQL's own text rendering of each type, never
 * node-postgres' type parsers, which are slow and lossy (int8 to number, timestamptz to a
 * millisecond Date). Formatting on the server instead (to_char, json_build_array) was measured
 * and rejected: on 1M rows × 10 columns it took a plain COPY TO from 0.9 s to 3–4 s of server
 * time, while the string fix-ups below cost Node well under a second.
 *
 * Every connection runs with the session settings in `SESSION_SETTINGS`, so that text renderings
 * (dates, times, floats, bytea) do not depend on the server's or the role's defaults.
 */
import type { LogicalType, WireRow, WireValue } from '../types.js';

/**
 * Session settings every deltasync connection sets first. TimeZone UTC: timestamptz renders and
 * parses as UTC. DateStyle ISO: dates render as YYYY-MM-DD whatever the role's default.
 * extra_float_digits 3: shortest exact float output on PostgreSQL 12+, and the most digits older
 * servers give. standard_conforming_strings: backslashes in the literals we build are literal.
 * bytea_output hex: the one bytea rendering we decode.
 */
export const SESSION_SETTINGS = [
  `SET TimeZone = 'UTC'`,
  `SET DateStyle = 'ISO, YMD'`,
  `SET IntervalStyle = 'postgres'`,
  `SET extra_float_digits = 3`,
  `SET standard_conforming_strings = on`,
  `SET client_encoding = 'UTF8'`,
  `SET bytea_output = 'hex'`,
].join('; ');

/** Base type names (pg_type.typname) and the logical type each is carried as. */
const LOGICAL_BY_TYPNAME: Record<string, LogicalType> = {
  int2: 'int',
  int4: 'int',
  int8: 'bigint',
  numeric: 'decimal',
  float4: 'float',
  float8: 'float',
  bool: 'bool',
  text: 'text',
  varchar: 'text',
  bpchar: 'text',
  citext: 'text',
  name: 'text',
  bytea: 'binary',
  date: 'date',
  time: 'time',
  timestamp: 'timestamp',
  timestamptz: 'timestamptz',
  json: 'json',
  jsonb: 'json',
  uuid: 'uuid',
};

/**
 * The logical type of a column from its base type name (pg_type.typname, domains resolved to
 * their base type). Types we do not know (enums, arrays, intervals, inet, timetz, ...) travel as
 * text: they are read with a `::text` cast and PostgreSQL parses the same text back on load.
 */
export function logicalTypeOf(typname: string): LogicalType {
  return LOGICAL_BY_TYPNAME[typname] ?? 'text';
}

/** True when the type is one we know by name, false when it falls back to text. */
export function isKnownType(typname: string): boolean {
  return typname in LOGICAL_BY_TYPNAME;
}

/** `"name"` with embedded quotes doubled. Every identifier we put into SQL goes through this. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `'text'` for SQL we cannot parameterise (COPY); relies on standard_conforming_strings. */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** Six fraction digits, the wire's precision (and PostgreSQL's). */
const TIMESTAMP_LENGTH = 'YYYY-MM-DD HH:MM:SS.ffffff'.length;
const TIME_LENGTH = 'HH:MM:SS.ffffff'.length;
const SECONDS_END = 'YYYY-MM-DD HH:MM:SS'.length;
const DOT = 0x2e;
const DASH = 0x2d;

function endsWithDigit(s: string): boolean {
  const c = s.charCodeAt(s.length - 1);
  return c >= 0x30 && c <= 0x39;
}

/*
 * PostgreSQL prints timestamps with the fraction trimmed ('…:09.5'); the wire wants six digits
 * or none. Values outside years 1..9999 (BC, five-digit years, ±infinity) keep PostgreSQL's own
 * text: a PostgreSQL target parses it back, any other target rejects it loudly rather than
 * storing a wrong date.
 */

/** `YYYY-MM-DD HH:MM:SS[.f…]` (ISO DateStyle) -> wire timestamp. */
export function timestampToWire(s: string): string {
  const n = s.length;
  if (n > SECONDS_END + 1 && n < TIMESTAMP_LENGTH && s.charCodeAt(SECONDS_END) === DOT) {
    if (s.charCodeAt(4) === DASH && endsWithDigit(s)) return s.padEnd(TIMESTAMP_LENGTH, '0');
  }
  return s;
}

/** `YYYY-MM-DD HH:MM:SS[.f…]+00` (TimeZone UTC) -> wire timestamptz `…T…Z`. */
export function timestamptzToWire(s: string): string {
  if (!s.endsWith('+00') || s.charCodeAt(4) !== DASH || s.charCodeAt(10) !== 0x20) return s;
  const local = s.slice(0, -3);
  if (local.length !== SECONDS_END && local.charCodeAt(SECONDS_END) !== DOT) return s;
  const padded = local.length === SECONDS_END ? local : local.padEnd(TIMESTAMP_LENGTH, '0');
  return `${padded.slice(0, 10)}T${padded.slice(11)}Z`;
}

/** `HH:MM:SS[.f…]` -> wire time with six fraction digits when there is a fraction. */
export function timeToWire(s: string): string {
  return s.length > 9 && s.length < TIME_LENGTH ? s.padEnd(TIME_LENGTH, '0') : s;
}

const COPY_UNESCAPES: Record<string, string> = {
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
};

/** Undoes COPY TO's text escapes (the six control characters and the backslash itself). */
export function unescapeCopyText(field: string): string {
  if (!field.includes('\\')) return field;
  return field.replace(/\\([\s\S])/g, (_, c: string) => COPY_UNESCAPES[c] ?? c);
}

/** Turns one non-NULL field of COPY TO's text output into a wire value. */
export type CopyDecoder = (field: string) => WireValue;

const asIs: CopyDecoder = (s) => s;

function decodeFloat(s: string): WireValue {
  const n = Number(s);
  // NaN and ±Infinity stay the strings PostgreSQL printed, which are the wire's spellings.
  return Number.isFinite(n) ? n : s;
}

function decodeBinary(s: string): WireValue {
  // bytea_output hex gives \x…, with COPY doubling the backslash.
  return Buffer.from(s.slice(3), 'hex').toString('base64');
}

/**
 * The decoder for a column. Output functions of bigint, numeric, date and uuid never print a
 * backslash, so their text is taken as is; text-like types are unescaped.
 */
export function copyDecoder(type: LogicalType): CopyDecoder {
  switch (type) {
    case 'int':
      return Number;
    case 'float':
      return decodeFloat;
    case 'bool':
      return (s) => s === 't';
    case 'binary':
      return decodeBinary;
    case 'time':
      return timeToWire;
    case 'timestamp':
      return timestampToWire;
    case 'timestamptz':
      return timestamptzToWire;
    case 'bigint':
    case 'decimal':
    case 'date':
    case 'uuid':
      return asIs;
    case 'text':
    case 'json':
      return unescapeCopyText;
  }
}

/** NULL in COPY's text format. */
export const COPY_NULL = '\\N';

/**
 * One line of COPY TO's text output -> a wire row. Tabs and newlines inside values are escaped,
 * so raw tabs only ever separate fields. The split array becomes the row, saving an allocation.
 */
export function parseCopyLine(line: string, decoders: CopyDecoder[]): WireRow {
  const fields: WireValue[] = line.split('\t');
  if (fields.length !== decoders.length) {
    throw new Error(`COPY row has ${fields.length} fields, expected ${decoders.length}`);
  }
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i] as string;
    fields[i] = f === COPY_NULL ? null : decoders[i]!(f);
  }
  return fields;
}

const COPY_SPECIALS = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = {
  '\\': '\\\\',
  '\t': '\\t',
  '\n': '\\n',
  '\r': '\\r',
};

/** A string as a field of COPY's text format: backslash, tab, newline and CR escaped. */
export function escapeCopyText(value: string): string {
  return COPY_SPECIALS.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]!) : value;
}

/** Turns one wire value into one field of COPY's text format. */
export type CopyEncoder = (value: WireValue) => string;

function encodeScalar(value: WireValue): string {
  if (value === null) return COPY_NULL;
  if (typeof value === 'string') return escapeCopyText(value);
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  return value ? 't' : 'f';
}

function encodeBinary(value: WireValue): string {
  if (value === null) return COPY_NULL;
  if (typeof value !== 'string') throw new TypeError(`binary wire value must be base64 text`);
  // bytea's hex input '\x…'; the backslash itself must be escaped inside COPY text.
  return '\\\\x' + Buffer.from(value, 'base64').toString('hex');
}

/**
 * The COPY text encoder for a column of the given logical type. Everything but binary is the
 * wire text as PostgreSQL parses it: '…T…Z' timestamps, 'NaN'/'Infinity' floats, digit strings
 * for bigint and decimal, the JSON document's text.
 */
export function copyEncoder(type: LogicalType): CopyEncoder {
  return type === 'binary' ? encodeBinary : encodeScalar;
}
