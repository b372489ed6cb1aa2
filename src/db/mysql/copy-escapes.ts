/**
 * The byte-level half of loading format 2 on MariaDB/MySQL (see copy.ts). LOAD DATA with
 * ESCAPED BY '\\' reads COPY text's `\N`, `\\`, `\n`, `\r`, `\t` and `\b` as PostgreSQL does,
 * but `\f` and `\v` as `f` and `v`, `\Z` as 0x1A (PostgreSQL: `Z`), and PostgreSQL's octal
 * `\ddd` and hex `\xhh` escapes as their digits: those are rewritten in the bytes. A chunk
 * without a backslash passes untouched; otherwise only backslashes are visited, not rows.
 */
import { INFILE_MAX_PACKET } from './load.js';

const BACKSLASH = 0x5c;
const LF = 0x0a;

/** Bytes that need a LOAD DATA escape when an octal/hex escape produces them. */
const LOAD_ESCAPES: Record<number, string> = {
  0x00: '\\0',
  0x09: '\\t',
  0x0a: '\\n',
  0x0d: '\\r',
  0x5c: '\\\\',
};

function isOctal(b: number | undefined): boolean {
  return b !== undefined && b >= 0x30 && b <= 0x37;
}

function hexValue(b: number | undefined): number {
  if (b === undefined) return -1;
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}

/**
 * The escape at `at` (a backslash) as LOAD DATA must see it, and where it ends; or null when
 * LOAD DATA reads it as PostgreSQL does.
 */
function rewrite(text: Buffer, at: number): { bytes: Buffer; end: number } | null {
  const next = text[at + 1];
  if (next === 0x66) return { bytes: Buffer.from([0x0c]), end: at + 2 }; // \f
  if (next === 0x76) return { bytes: Buffer.from([0x0b]), end: at + 2 }; // \v
  if (next === 0x5a) return { bytes: Buffer.from('Z'), end: at + 2 }; // \Z
  let value = -1;
  let end = at + 1;
  if (isOctal(next)) {
    value = 0;
    while (end < at + 4 && isOctal(text[end])) value = value * 8 + text[end++]! - 0x30;
    value &= 0xff;
  } else if (next === 0x78 && hexValue(text[at + 2]) >= 0) {
    value = 0;
    end = at + 2;
    while (end < at + 4 && hexValue(text[end]) >= 0) value = value * 16 + hexValue(text[end++]);
  }
  if (value < 0) return null;
  const escaped = LOAD_ESCAPES[value];
  return { bytes: escaped ? Buffer.from(escaped) : Buffer.from([value]), end };
}

/**
 * Whole lines of COPY text, rewritten where LOAD DATA would read an escape otherwise (exported
 * for tests). Returns `text` itself when nothing needs rewriting.
 */
export function fixEscapes(text: Buffer): Buffer {
  let at = text.indexOf(BACKSLASH);
  if (at < 0) return text;
  const pieces: Buffer[] = [];
  let from = 0;
  while (at >= 0 && at + 1 < text.length) {
    const fixed = rewrite(text, at);
    if (fixed) {
      pieces.push(text.subarray(from, at), fixed.bytes);
      from = fixed.end;
    }
    // An escape is two bytes at least: `\\` never starts another one.
    at = text.indexOf(BACKSLASH, fixed ? fixed.end : at + 2);
  }
  if (pieces.length === 0) return text;
  pieces.push(text.subarray(from));
  return Buffer.concat(pieces);
}

/**
 * The data as whole lines (a line split between chunks is joined, so an escape is never cut),
 * escapes fixed, in pieces of at most INFILE_MAX_PACKET bytes (exported for tests).
 */
export async function* loadDataChunks(data: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let carry: Buffer[] = [];
  function* packets(text: Buffer): Generator<Buffer> {
    const fixed = fixEscapes(text);
    for (let offset = 0; offset < fixed.length; offset += INFILE_MAX_PACKET) {
      yield fixed.subarray(offset, offset + INFILE_MAX_PACKET);
    }
  }
  for await (const chunk of data) {
    const last = chunk.lastIndexOf(LF);
    if (last < 0) {
      carry.push(Buffer.from(chunk));
      continue;
    }
    let start = 0;
    if (carry.length > 0) {
      start = chunk.indexOf(LF) + 1;
      carry.push(chunk.subarray(0, start));
      yield* packets(Buffer.concat(carry));
      carry = [];
    }
    if (start <= last) yield* packets(chunk.subarray(start, last + 1));
    if (last + 1 < chunk.length) carry.push(Buffer.from(chunk.subarray(last + 1)));
  }
  // Canonical text ends with a newline; a last line without one still reaches the server whole.
  if (carry.length > 0) yield* packets(Buffer.concat(carry));
}
