/**
 * The byte-level half of format 2 on MariaDB/MySQL (src/db/mysql/copy.ts): PostgreSQL escapes
 * LOAD DATA reads otherwise, rewritten without touching anything else, whatever the chunking;
 * and the LOAD DATA statement's field list. The integration test loads real text.
 */
import { describe, expect, it } from 'vitest';
import { copyLoadSql } from '../../src/db/mysql/copy.js';
import { fixEscapes, loadDataChunks } from '../../src/db/mysql/copy-escapes.js';
import { writeEncoder } from '../../src/db/mysql/types.js';
import type { ColumnInfo } from '../../src/db/types.js';

const fix = (text: string) => fixEscapes(Buffer.from(text, 'latin1')).toString('latin1');

async function collect(chunks: Buffer[]): Promise<string> {
  async function* source() {
    yield* chunks;
  }
  const out: Buffer[] = [];
  for await (const piece of loadDataChunks(source())) {
    out.push(piece);
    // Only whole lines leave, so a failure mid-way leaves the server a clean prefix.
    expect(piece[piece.length - 1]).toBe(0x0a);
  }
  return Buffer.concat(out).toString('latin1');
}

describe('fixEscapes', () => {
  it('leaves what LOAD DATA reads as PostgreSQL does, and returns the same buffer', () => {
    const text = Buffer.from('a\\tb\\nc\\rd\\\\e\\bf\t\\N\t\\\\N\t\\\\x00ff\t\\q\n');
    expect(fixEscapes(text)).toBe(text);
    const plain = Buffer.from('no escapes at all\t1\n');
    expect(fixEscapes(plain)).toBe(plain);
  });

  it('rewrites \\f, \\v, \\Z and octal or hex escapes into what LOAD DATA reads the same', () => {
    expect(fix('a\\fb\\vc\\Zd\n')).toBe('a\fb\vcZd\n');
    expect(fix('\\101\\x41\\x4a\\7z\n')).toBe('AAJ\x07z\n');
    // Bytes LOAD DATA would take as structure or escape come out escaped its way.
    expect(fix('\\11\\012\\x5c\\x0d\\000\n')).toBe('\\t\\n\\\\\\r\\0\n');
    // Three octal digits at most, two hex digits at most; `\x` without one is just `x`.
    expect(fix('\\1012\\x414\\xg\n')).toBe('A2A4\\xg\n');
  });

  it('never reads the second backslash of `\\\\` as the start of an escape', () => {
    expect(fix('\\\\f\\\\\\f\\\\x41\n')).toBe('\\\\f\\\\\f\\\\x41\n');
  });
});

describe('loadDataChunks', () => {
  it('joins lines split anywhere, even inside an escape, and fixes them', async () => {
    const text = 'one\\f\t\\101\n\\\\two\\v\n3\n';
    for (let size = 1; size <= text.length; size++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < text.length; i += size) chunks.push(Buffer.from(text.slice(i, i + size)));
      expect(await collect(chunks), `chunks of ${size}`).toBe('one\f\tA\n\\\\two\v\n3\n');
    }
  });

  it('cuts a line longer than a packet into packets', async () => {
    const line = 'y'.repeat(3 * 1024 * 1024) + '\n';
    async function* source() {
      yield Buffer.from(line);
    }
    const sizes: number[] = [];
    for await (const piece of loadDataChunks(source())) sizes.push(piece.length);
    expect(sizes).toEqual([1024 * 1024, 1024 * 1024, 1024 * 1024, 1]);
  });
});

describe('copyLoadSql', () => {
  // prettier-ignore
  const columns: ColumnInfo[] = [
    { name: 'id', type: 'int' }, { name: 'gone', type: 'text' }, { name: 'b', type: 'bool' },
    { name: 'bin', type: 'binary' }, { name: 'tz', type: 'timestamptz' }, { name: 'bits', type: 'bigint' },
    { name: 'v', type: 'text' },
  ];
  const keep = [0, 2, 3, 4, 5, 6];
  const kept = keep.map((i) => columns[i]!);
  const plan = {
    columns: kept,
    key: ['id'],
    encoders: kept.map((c) => writeEncoder(c, c.name === 'bits' ? 'bit' : 'x')),
    stageTypes: ['BIGINT', 'TINYINT', 'LONGBLOB', 'DATETIME(6)', 'bit(16)', 'LONGTEXT'],
    // A DATETIME(0) target: what the server would cut quietly.
    quiet: [
      null,
      null,
      null,
      '(s.`tz` IS NOT NULL AND (CAST(s.`tz` AS DATETIME(0)) <> s.`tz`))',
      null,
      null,
    ],
  };
  const head =
    "LOAD DATA LOCAL INFILE 'deltasync-copy' INTO TABLE `t` CHARACTER SET utf8mb4" +
    " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'";
  const conversions =
    " `b` = CASE @v2 WHEN 't' THEN 1 WHEN 'f' THEN 0 ELSE CAST(@v2 AS SIGNED) END," +
    ' `bin` = UNHEX(SUBSTRING(@v3, 3)),' +
    " `tz` = IF(RIGHT(@v4, 3) = '+00', LEFT(@v4, CHAR_LENGTH(@v4) - 3), @v4)," +
    ' `bits` = CAST(@v5 AS UNSIGNED)';

  it('into the stage: skipped columns into @dummy, conversions of what LOAD DATA reads otherwise', () => {
    expect(copyLoadSql('`t`', columns, keep, plan, false)).toBe(
      head + ' (`id`, @dummy, @v2, @v3, @v4, @v5, `v`) SET' + conversions,
    );
  });

  it('directly: REPLACE, every kept field in a variable, the quiet checks captured first', () => {
    const tz = "IF(RIGHT(@v4, 3) = '+00', LEFT(@v4, CHAR_LENGTH(@v4) - 3), @v4)";
    expect(copyLoadSql('`t`', columns, keep, plan, true)).toBe(
      head.replace("'deltasync-copy' ", "'deltasync-copy' REPLACE ") +
        ' (@v0, @dummy, @v2, @v3, @v4, @v5, @v6) SET' +
        ' `id` = IF((@deltasync_misfit := COALESCE(@deltasync_misfit, CASE' +
        ` WHEN (CAST(${tz} AS DATETIME(6)) IS NOT NULL AND` +
        ` (CAST(CAST(${tz} AS DATETIME(6)) AS DATETIME(0)) <> CAST(${tz} AS DATETIME(6))))` +
        ` THEN JSON_ARRAY(3, ${tz}, @v0) END)) IS NULL, @v0, @v0),` +
        conversions +
        ', `v` = @v6',
    );
  });
});
