/**
 * Format 2 on MariaDB/MySQL: canonical COPY text (docs/format.md) loaded with `LOAD DATA LOCAL
 * INFILE`, without parsing rows in JavaScript.
 *
 * LOAD DATA with FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n' reads COPY
 * text almost as PostgreSQL writes it: `\N` is NULL, `\\`, `\n`, `\r`, `\t` and `\b` mean the
 * same. What it reads differently is fixed in two places:
 *   - in the bytes (`fixEscapes`), for escapes it does not know or knows otherwise: `\f` and `\v`
 *     (it reads `f` and `v`), `\Z` (it reads 0x1A, PostgreSQL `Z`), and PostgreSQL's octal
 *     `\ddd` and hex `\xhh` escapes (it reads the digits). A chunk without a backslash passes
 *     untouched; otherwise only backslashes are visited, not rows;
 *   - in `SET` expressions on @variables (`copyLoadSql`), for values whose text it reads
 *     differently: booleans `t`/`f`, binary `\x`hex, and timestamps with zone `…+00`.
 */
import { Readable } from 'node:stream';
import type { ResultSetHeader } from 'mysql2';
import { DeltaError } from '../../errors.js';
import type { ColumnInfo } from '../types.js';
import { run, translateError, type Session } from './connection.js';
import { DATA_ERRNOS, drained, INFILE_MAX_PACKET, type ApplyPlan } from './load.js';
import { quoteIdent } from './types.js';

// ---------------------------------------------------------------- escapes

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

// ---------------------------------------------------------------- the statement

/**
 * `LOAD DATA` of COPY text whose lines hold `columns`, into `table` (the stage or the target,
 * whose columns are named as the delta's). `plan` describes the kept columns, in `keep` order;
 * the others are read into @dummy. `replace` makes the last of several lines with one key win
 * (loading straight into an empty target); the stage keeps them all, ordered.
 */
export function copyLoadSql(
  table: string,
  columns: ColumnInfo[],
  keep: number[],
  plan: Pick<ApplyPlan, 'columns' | 'encoders'>,
  replace: boolean,
): string {
  const kept = new Map(keep.map((index, j) => [index, j]));
  const targets: string[] = [];
  const sets: string[] = [];
  columns.forEach((column, index) => {
    const j = kept.get(index);
    if (j === undefined) {
      targets.push('@dummy');
      return;
    }
    const name = quoteIdent(plan.columns[j]!.name);
    const v = `@v${index}`;
    const expression = setExpression(column, v, plan.encoders[j]!.viaUnsigned);
    if (expression === null) {
      targets.push(name);
    } else {
      targets.push(v);
      sets.push(`${name} = ${expression}`);
    }
  });
  return (
    `LOAD DATA LOCAL INFILE 'deltasync-copy' ${replace ? 'REPLACE ' : ''}INTO TABLE ${table}` +
    ` CHARACTER SET utf8mb4` +
    ` FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'` +
    ` (${targets.join(', ')})` +
    (sets.length > 0 ? ` SET ${sets.join(', ')}` : '')
  );
}

/** How a field read into `v` becomes the column's value, or null when it is read as it is. */
function setExpression(column: ColumnInfo, v: string, viaUnsigned: boolean): string | null {
  switch (column.type) {
    case 'bool':
      // Anything but t/f becomes a warning, which refuses the load, not a quiet 0.
      return `CASE ${v} WHEN 't' THEN 1 WHEN 'f' THEN 0 ELSE CAST(${v} AS SIGNED) END`;
    case 'binary':
      // `\x0aff` (LOAD DATA has unescaped `\\x`): the hex after the prefix.
      return `UNHEX(SUBSTRING(${v}, 3))`;
    case 'timestamptz':
      // Canonical text is the UTC wall clock and `+00`; the session's time zone is UTC. Another
      // zone stays in the text, which the server then refuses.
      return `IF(RIGHT(${v}, 3) = '+00', LEFT(${v}, CHAR_LENGTH(${v}) - 3), ${v})`;
    case 'bigint':
    case 'int':
      // A BIT column would take the digits' bytes.
      return viaUnsigned ? `CAST(${v} AS UNSIGNED)` : null;
    default:
      return null;
  }
}

// ---------------------------------------------------------------- running it

/** MariaDB names the column `db`.`table`.`column` in some messages: the column is enough. */
function cleanMessage(message: string): string {
  return message.replace(/`[^`]*`\.`[^`]*`\.`([^`]*)`/g, "'$1'");
}

function refusal(plan: ApplyPlan, message: string, cause?: unknown): DeltaError {
  const row = /at row (\d+)/.exec(message);
  const where = row ? `line ${row[1]} of its rows in the delta` : 'a row of the delta';
  return new DeltaError(
    `table '${plan.tableName}': the replica cannot take ${where}: ${cleanMessage(message).replace(/ at row \d+$/, '')}`,
    {
      hint: 'widen the replica column or fix the source value (MariaDB/MySQL store no NaN or infinities); nothing was applied',
      cause,
    },
  );
}

/**
 * Runs `sql` (from copyLoadSql) with the data as its file; returns the number of lines. A value
 * the server reads with a warning (LOCAL turns errors into warnings unless REPLACE) or an error
 * refuses the load with a DeltaError naming the line and column.
 */
export async function loadCopyText(
  session: Session,
  plan: ApplyPlan,
  sql: string,
  data: AsyncIterable<Buffer>,
): Promise<number> {
  const socket = (session.core as unknown as { stream: NodeJS.WritableStream }).stream;
  async function* paced(): AsyncGenerator<Buffer> {
    for await (const chunk of loadDataChunks(data)) {
      // The driver writes each chunk to the socket without asking: wait until it can take more.
      await drained(socket);
      yield chunk;
    }
  }
  let source: Readable | undefined;
  let header: ResultSetHeader;
  try {
    [header] = await session.conn.query<ResultSetHeader>({
      sql,
      infileStreamFactory: () => (source = Readable.from(paced(), { objectMode: false })),
    });
  } catch (err) {
    // The data's own error (a bad checksum, say) is the one the caller must see.
    const cause = session.lostWith ?? err;
    const errno = (cause as { errno?: number }).errno;
    if (errno !== undefined && DATA_ERRNOS.has(errno)) {
      throw refusal(plan, (cause as { sqlMessage?: string }).sqlMessage ?? String(cause), cause);
    }
    throw translateError(cause, session.where, plan.tableName);
  } finally {
    source?.destroy();
  }
  if (header.warningStatus > 0) {
    const warnings = await run<{ Message: string }[]>(session, 'SHOW WARNINGS LIMIT 1');
    throw refusal(plan, warnings[0]?.Message ?? `${header.warningStatus} warnings`);
  }
  const records = /Records: (\d+)/.exec(header.info ?? '');
  return records ? Number(records[1]) : header.affectedRows;
}
