/**
 * Format 2's row codec: one wire row <-> one line of PostgreSQL COPY text (docs/format.md, "Rows
 * in format 2"). The canonical text of each logical type is what PostgreSQL's COPY TO STDOUT
 * prints with the session set to UTC, ISO dates, hex bytea and shortest floats, so a PostgreSQL
 * source streams its COPY output into parts untouched and a replica COPYs parts straight in.
 * This codec is the path for every other engine and for rows that JavaScript must see (filters,
 * computed columns, snapshot hashing): it must be exact, and it must be fast.
 */
import type { LogicalType, WireRow, WireValue } from './wire.js';

/** The field that means NULL. */
export const NULL_FIELD = '\\N';

/** Characters a field escapes: the ones PostgreSQL's COPY TO escapes. */
const NEEDS_ESCAPE = /[\\\n\r\t\b\f\v]/;
const ESCAPABLE = /[\\\n\r\t\b\f\v]/g;
const ESCAPES: Record<string, string> = {
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
  '\v': '\\v',
};

/** Escapes a text value for a field: backslash and the control characters PostgreSQL escapes. */
export function escapeField(text: string): string {
  return NEEDS_ESCAPE.test(text) ? text.replace(ESCAPABLE, (c) => ESCAPES[c]!) : text;
}

/** The character each single-letter escape stands for (PostgreSQL's COPY FROM reading). */
const UNESCAPES: Record<string, string> = {
  n: '\n',
  r: '\r',
  t: '\t',
  b: '\b',
  f: '\f',
  v: '\v',
};

/**
 * Reads an escaped field back to its text. Accepts everything PostgreSQL's COPY FROM accepts:
 * the letter escapes, `\ddd` octal and `\xhh` hex (each one byte; bytes of a multi-byte UTF-8
 * character may come as several), and any other escaped character standing for itself.
 */
export function unescapeField(field: string): string {
  if (!field.includes('\\')) return field;
  let out = '';
  // Bytes from octal/hex escapes waiting to be decoded as UTF-8 together.
  let bytes: number[] | null = null;
  const flushBytes = () => {
    if (bytes) out += Buffer.from(bytes).toString('utf8');
    bytes = null;
  };
  let from = 0;
  for (let i = field.indexOf('\\'); i !== -1; i = field.indexOf('\\', from)) {
    if (i > from) {
      flushBytes();
      out += field.slice(from, i);
    }
    const c = field[i + 1];
    if (c === undefined) throw new Error('ends with a lone backslash');
    const octal = /^[0-7]{1,3}/.exec(field.slice(i + 1, i + 4));
    const hex = c === 'x' ? /^[0-9A-Fa-f]{1,2}/.exec(field.slice(i + 2, i + 4)) : null;
    if (octal) {
      (bytes ??= []).push(Number.parseInt(octal[0], 8) & 0xff);
      from = i + 1 + octal[0].length;
    } else if (hex) {
      (bytes ??= []).push(Number.parseInt(hex[0], 16));
      from = i + 2 + hex[0].length;
    } else {
      flushBytes();
      out += UNESCAPES[c] ?? c;
      from = i + 2;
    }
  }
  flushBytes();
  return out + field.slice(from);
}

/**
 * A float as PostgreSQL prints a float8 with extra_float_digits >= 1: the shortest digits that
 * read back to the same double, in fixed notation when the decimal exponent is in [-4, 15) and
 * as `d.ddde+XX` (at least two exponent digits) otherwise.
 */
export function formatFloat(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  // In this range JavaScript prints the same shortest digits in the same fixed notation.
  const abs = Math.abs(n);
  if (abs >= 1e-4 && abs < 1e15) return String(n);
  // toExponential() without digits gives the shortest round-trip digits, as PostgreSQL's Ryu.
  const e = n.toExponential();
  const at = e.indexOf('e');
  const sign = n < 0 ? '-' : '';
  const digits = e.slice(sign.length, at).replace('.', '');
  const exp = Number(e.slice(at + 1));
  if (exp >= -4 && exp < 15) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    if (digits.length <= exp + 1) return sign + digits + '0'.repeat(exp + 1 - digits.length);
    return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  const mantissa = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const e10 = Math.abs(exp);
  return `${sign}${mantissa}e${exp < 0 ? '-' : '+'}${e10 < 10 ? '0' : ''}${e10}`;
}

const INTEGER = /^-?[0-9]+$/;
/** PostgreSQL numeric text: digits with an optional fraction and exponent, NaN, ±Infinity. */
const DECIMAL = /^(?:[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Infinity)$/;

/** A wire value of the wrong kind for its type: a bug in an engine, not bad data. */
function badValue(value: WireValue, type: LogicalType): Error {
  return new Error(`${JSON.stringify(value)} is not a wire value of type ${type}`);
}

/** One wire value as its canonical field text, escaped. */
export function encodeField(value: WireValue, type: LogicalType): string {
  if (value === null) return NULL_FIELD;
  switch (type) {
    case 'int':
      if (typeof value !== 'number') throw badValue(value, type);
      return String(value);
    case 'float':
      if (typeof value === 'number') return formatFloat(value);
      if (value === 'NaN' || value === 'Infinity' || value === '-Infinity') return value;
      throw badValue(value, type);
    case 'bool':
      if (typeof value !== 'boolean') throw badValue(value, type);
      return value ? 't' : 'f';
    case 'binary':
      if (typeof value !== 'string') throw badValue(value, type);
      // `\x` + hex, with the backslash escaped for the file.
      return `\\\\x${Buffer.from(value, 'base64').toString('hex')}`;
    case 'timestamptz':
      if (typeof value !== 'string') throw badValue(value, type);
      return wireToTimestamptz(value);
    case 'time':
    case 'timestamp':
      if (typeof value !== 'string') throw badValue(value, type);
      return escapeField(fraction(value, false));
    case 'bigint':
    case 'decimal':
    case 'date':
    case 'uuid':
      // Never hold a character that needs escaping; a string is checked, not escaped.
      if (typeof value !== 'string') throw badValue(value, type);
      return NEEDS_ESCAPE.test(value) ? escapeField(value) : value;
    default:
      // text, json
      if (typeof value !== 'string') throw badValue(value, type);
      return escapeField(value);
  }
}

/**
 * Fractions of a second: the wire has six digits (none when zero), PostgreSQL prints them without
 * trailing zeros. `pad` gives the wire's, otherwise PostgreSQL's. Dates hold no '.', so the first
 * one starts the fraction.
 */
function fraction(text: string, pad: boolean): string {
  // The common cases, without allocating: the wire's six digits ending in a non-zero digit, and
  // PostgreSQL's already trimmed digits.
  const last = text.charCodeAt(text.length - 1);
  if (!pad && last >= 49 && last <= 57) return text;
  const dot = text.indexOf('.');
  if (dot === -1) return text;
  let end = dot + 1;
  while (end < text.length && text.charCodeAt(end) >= 48 && text.charCodeAt(end) <= 57) end++;
  const digits = text.slice(dot + 1, end);
  const kept = pad ? digits.padEnd(6, '0') : digits.replace(/0+$/, '');
  return text.slice(0, dot) + (kept ? `.${kept}` : '') + text.slice(end);
}

/** `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` -> `YYYY-MM-DD HH:MM:SS[.ffffff]+00`; others (infinity) as is. */
function wireToTimestamptz(value: string): string {
  const n = value.length;
  if (n === 20 || (n === 27 && value.charCodeAt(19) === 46)) {
    // The usual `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`: sliced in place, the fraction trimmed.
    let end = n - 1;
    while (end > 20 && value.charCodeAt(end - 1) === 48) end--;
    if (end === 20) end = 19;
    if (value.charCodeAt(10) === 84 && value.charCodeAt(n - 1) === 90)
      return `${value.slice(0, 10)} ${value.slice(11, end)}+00`;
  }
  return fraction(wireToTimestamptzAny(value), false);
}

function wireToTimestamptzAny(value: string): string {
  const t = value.indexOf('T');
  if (t === -1 || !value.endsWith('Z')) return escapeField(value);
  return `${value.slice(0, t)} ${value.slice(t + 1, -1)}+00`;
}

/** The reverse of wireToTimestamptz. */
function timestamptzToWire(text: string): string {
  if (!text.endsWith('+00')) return text;
  const space = text.indexOf(' ');
  if (space === -1) return text;
  return `${text.slice(0, space)}T${text.slice(space + 1, -3)}Z`;
}

/** One field's text (already split out of its line, still escaped) as a wire value. */
export function decodeField(field: string, type: LogicalType): WireValue {
  if (field === NULL_FIELD) return null;
  switch (type) {
    case 'int': {
      const n = Number(field);
      if (!INTEGER.test(field) || !Number.isSafeInteger(n)) {
        throw new Error(`'${field}' is not an int`);
      }
      return n;
    }
    case 'float': {
      if (field === 'NaN' || field === 'Infinity' || field === '-Infinity') return field;
      const n = Number(field);
      if (Number.isNaN(n) || field === '') throw new Error(`'${field}' is not a float`);
      return n;
    }
    case 'bigint':
      if (!INTEGER.test(field)) throw new Error(`'${field}' is not a bigint`);
      return field;
    case 'decimal':
      if (!DECIMAL.test(field)) throw new Error(`'${field}' is not a decimal`);
      return field;
    case 'bool':
      if (field === 't') return true;
      if (field === 'f') return false;
      throw new Error(`'${field}' is not a bool (t or f)`);
    case 'binary': {
      const text = unescapeField(field);
      if (!/^\\x(?:[0-9A-Fa-f]{2})*$/.test(text)) throw new Error(`binary value is not \\x + hex`);
      return Buffer.from(text.slice(2), 'hex').toString('base64');
    }
    case 'timestamptz':
      return timestamptzToWire(fraction(unescapeField(field), true));
    case 'time':
    case 'timestamp':
      return fraction(unescapeField(field), true);
    default:
      return unescapeField(field);
  }
}

/** One wire row as a line of canonical COPY text, '\n' included. */
export function encodeRow(row: WireRow, types: readonly LogicalType[]): string {
  if (row.length !== types.length) {
    throw new Error(`row has ${row.length} values, the columns are ${types.length}`);
  }
  let line = encodeField(row[0]!, types[0]!);
  for (let i = 1; i < types.length; i++) line += '\t' + encodeField(row[i]!, types[i]!);
  return line + '\n';
}

/**
 * One line (without its '\n') as a wire row. Throws a plain Error saying what is wrong with the
 * line; the part reader adds which file and which row.
 */
export function decodeLine(line: string, types: readonly LogicalType[]): WireRow {
  const row: WireRow = new Array<WireValue>(types.length);
  let start = 0;
  for (let i = 0; i < types.length; i++) {
    let end = line.indexOf('\t', start);
    if (end === -1) {
      if (i !== types.length - 1) {
        throw new Error(`has ${i + 1} columns, the manifest declares ${types.length}`);
      }
      end = line.length;
    } else if (i === types.length - 1) {
      throw new Error(
        `has ${line.split('\t').length} columns, the manifest declares ${types.length}`,
      );
    }
    const field = line.slice(start, end);
    try {
      row[i] = decodeField(field, types[i]!);
    } catch (err) {
      throw new Error(`column ${i + 1}: ${(err as Error).message}`);
    }
    start = end + 1;
  }
  return row;
}
