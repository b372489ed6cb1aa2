import { readFile, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import xxhash from 'xxhash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { DeltaError, ExitCode } from '../../src/errors.js';
import { copyPartFileName, readCopyBytes, readCopyRows } from '../../src/format/copy-part.js';
import { encodeRow } from '../../src/format/copy-text.js';
import { DeltaWriter } from '../../src/format/delta-writer.js';
import type { ManifestPart, ManifestTable } from '../../src/format/manifest.js';
import type { Compression } from '../../src/format/part-file.js';
import type { ColumnInfo, LogicalType, WireRow } from '../../src/format/wire.js';
import { listDir, testdir } from '../helpers/tmp.js';

const PREFIX = 'logId00000000000000000200';
const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'bigint', nativeType: 'bigint' },
  { name: 'body', type: 'text' },
  { name: 'tags', type: 'text', nativeType: 'text[]' },
];
const TYPES = COLUMNS.map((c) => c.type);
const COMPRESSIONS: Compression[] = ['gzip', 'none'];

let h64: (data: Uint8Array) => string;
beforeAll(async () => {
  const api = await xxhash();
  h64 = (data) => api.h64Raw(data, 0n).toString(16).padStart(16, '0');
});

/** Rows whose text holds every escape, so that a split inside an escape would show. */
function rowsOf(count: number): WireRow[] {
  return Array.from({ length: count }, (_, i) => [
    String(i + 1),
    i % 7 === 0 ? null : `row ${i}\t\\N\n🎉${'x'.repeat(i % 50)}`,
    `{a,"b\\\\c",${i}}`,
  ]);
}

const textOf = (rows: WireRow[]) => rows.map((r) => encodeRow(r, TYPES)).join('');

/** The bytes cut into chunks of varying sizes (1 byte up), as a COPY stream delivers them. */
async function* chunked(bytes: Buffer, seed: number): AsyncGenerator<Buffer> {
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const size = 1 + ((seed * (i + 1) * 7919) % 97);
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

function writer(dir: string, compression: Compression, maxRowsPerPart = 10): DeltaWriter {
  return new DeltaWriter({
    dir,
    job: 'acme',
    fromLogId: '100',
    toLogId: '200',
    maxRowsPerPart,
    compression,
  });
}

async function readTable(
  dir: string,
  t: ManifestTable,
  compression: Compression,
): Promise<WireRow[]> {
  const rows: WireRow[] = [];
  for (const p of t.parts)
    for await (const r of readCopyRows(dir, p, compression, TYPES)) rows.push(r);
  return rows;
}

async function bytesOf(dir: string, part: ManifestPart, compression: Compression): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stream = createReadStream(join(dir, part.file));
  for await (const c of readCopyBytes(stream, part, compression)) chunks.push(c);
  return Buffer.concat(chunks);
}

describe.each(COMPRESSIONS)('writeCopyText (%s)', (compression) => {
  it('splits COPY text into parts of maxRowsPerPart lines whatever the chunk boundaries', async () => {
    for (const seed of [1, 2, 3]) {
      const dir = await testdir();
      const delta = writer(dir, compression);
      const rows = rowsOf(25);
      const text = Buffer.from(textOf(rows));
      const tw = delta.beginTable('docs', ['id'], COLUMNS);
      const written = await tw.writeCopyText(chunked(text, seed));
      expect(written.rows).toBe(25);
      expect(written.lastLine?.toString()).toBe(textOf(rows.slice(-1)).slice(0, -1));
      const t = await tw.finish();
      const ext = compression === 'gzip' ? '.copy.gz' : '.copy';
      expect(t.parts.map((p) => [p.file, p.rows])).toEqual([
        [`${PREFIX}.docs.0001${ext}`, 10],
        [`${PREFIX}.docs.0002${ext}`, 10],
        [`${PREFIX}.docs.0003${ext}`, 5],
      ]);
      expect(t.rows).toBe(25);
      expect(await readTable(dir, t, compression)).toEqual(rows);
      // The bytes reader gives the very text that went in, part after part.
      const back = Buffer.concat(
        await Promise.all(t.parts.map((p) => bytesOf(dir, p, compression))),
      );
      expect(back.equals(text)).toBe(true);
    }
  });

  it('stores exactly the bytes given (no re-encoding), with their true size and checksum', async () => {
    const dir = await testdir();
    const tw = writer(dir, compression, 100).beginTable('docs', ['id'], COLUMNS);
    // Not canonical (octal escape), but COPY text: stored as it came.
    const text = Buffer.from('1\t\\101\t\\N\n2\t\t{}\n');
    await tw.writeCopyText(chunked(text, 5));
    const [part] = (await tw.finish()).parts;
    const data = await readFile(join(dir, part!.file));
    expect(part!.bytes).toBe(data.length);
    expect(part!.xxhash64).toBe(h64(data));
    expect((compression === 'gzip' ? gunzipSync(data) : data).equals(text)).toBe(true);
  });

  it('mixes rows written one by one and COPY text, in order, in the same parts', async () => {
    const dir = await testdir();
    const tw = writer(dir, compression, 4).beginTable('docs', ['id'], COLUMNS);
    const rows = rowsOf(9);
    for (const r of rows.slice(0, 3)) await tw.write(r);
    await tw.writeCopyText(chunked(Buffer.from(textOf(rows.slice(3))), 4));
    const t = await tw.finish();
    expect(t.parts.map((p) => p.rows)).toEqual([4, 4, 1]);
    expect(await readTable(dir, t, compression)).toEqual(rows);
  });

  it('writes delete keys as COPY text in their own parts', async () => {
    const dir = await testdir();
    const tw = writer(dir, compression).beginTable('docs', ['id'], COLUMNS);
    await tw.writeCopyText(chunked(Buffer.from('7\n8\n'), 1), 'deletes');
    await tw.delete(['9']);
    const t = await tw.finish();
    expect(t.parts).toEqual([]);
    expect(t.deletes!.rows).toBe(3);
    const keys: WireRow[] = [];
    for (const p of t.deletes!.parts)
      for await (const r of readCopyRows(dir, p, compression, ['bigint'])) keys.push(r);
    expect(keys).toEqual([['7'], ['8'], ['9']]);
    expect(t.deletes!.parts[0]!.file).toBe(
      copyPartFileName(PREFIX, 'docs', 1, compression, 'deletes'),
    );
  });

  it('makes no part of empty COPY text, and gives no last line', async () => {
    const dir = await testdir();
    const tw = writer(dir, compression).beginTable('docs', ['id'], COLUMNS);
    expect(await tw.writeCopyText(chunked(Buffer.alloc(0), 1))).toEqual({
      rows: 0,
      lastLine: null,
    });
    expect((await tw.finish()).parts).toEqual([]);
    expect(await listDir(dir)).toEqual([]);
  });

  it('refuses text that does not end with a newline, and leaves no file once aborted', async () => {
    const dir = await testdir();
    const delta = writer(dir, compression);
    const tw = delta.beginTable('docs', ['id'], COLUMNS);
    await expect(tw.writeCopyText(chunked(Buffer.from('1\ta\t\\N\n2\tb'), 2))).rejects.toThrow(
      'does not end with a newline',
    );
    await delta.abort();
    expect(await listDir(dir)).toEqual([]);
  });

  it('records nativeType in the manifest columns', async () => {
    const dir = await testdir();
    const t = await writer(dir, compression).beginTable('docs', ['id'], COLUMNS).finish();
    expect(t.columns).toEqual([
      { name: 'id', type: 'bigint', nativeType: 'bigint' },
      { name: 'body', type: 'text' },
      { name: 'tags', type: 'text', nativeType: 'text[]' },
    ]);
  });
});

/** A part holding `text` as given, with a manifest entry that is right for its bytes. */
async function rawPart(
  dir: string,
  text: string,
  compression: Compression,
  rows: number,
): Promise<ManifestPart> {
  const file = copyPartFileName(PREFIX, 'raw', 1, compression);
  const data = compression === 'gzip' ? gzipSync(text) : Buffer.from(text);
  await writeFile(join(dir, file), data);
  return { file, rows, bytes: data.length, xxhash64: h64(data) };
}

async function refusal(
  dir: string,
  part: ManifestPart,
  compression: Compression,
  types: LogicalType[],
  bytes = false,
): Promise<DeltaError> {
  try {
    if (bytes) await bytesOf(dir, part, compression);
    else for await (const _ of readCopyRows(dir, part, compression, types));
  } catch (err) {
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as DeltaError).exitCode).toBe(ExitCode.DATA);
    expect((err as Error).message).toContain(part.file);
    return err as DeltaError;
  }
  throw new Error('expected the part to be refused');
}

describe.each(COMPRESSIONS)('refusals (%s)', (compression) => {
  const two: LogicalType[] = ['int', 'text'];

  it('a row with the wrong number of columns', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '1\ta\n2\tb\textra\n', compression, 2);
    expect((await refusal(dir, part, compression, two)).message).toContain(
      'row 2 has 3 columns, the manifest declares 2',
    );
  });

  it('a value that is not of its type', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '1\ta\nx\tb\n', compression, 2);
    expect((await refusal(dir, part, compression, two)).message).toContain(
      "row 2 column 1: 'x' is not an int",
    );
  });

  it('a last line with no newline, in both readers', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '1\ta\n2\tb', compression, 2);
    for (const bytes of [false, true]) {
      expect((await refusal(dir, part, compression, two, bytes)).message).toContain(
        'last line has no newline',
      );
    }
  });

  it('more or fewer rows than declared, in both readers', async () => {
    const dir = await testdir();
    const more = await rawPart(dir, '1\ta\n2\tb\n3\tc\n', compression, 2);
    const fewer = { ...more, rows: 4 };
    for (const bytes of [false, true]) {
      expect((await refusal(dir, more, compression, two, bytes)).message).toContain(
        'holds more rows than the 2 the manifest declares',
      );
      expect((await refusal(dir, fewer, compression, two, bytes)).message).toContain(
        'holds 3 rows, the manifest says 4',
      );
    }
  });

  it('a checksum or size that does not match, after every byte was yielded', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '1\ta\n2\tb\n', compression, 2);
    const bad = { ...part, xxhash64: '0000000000000000' };
    let seen = 0;
    await expect(
      (async () => {
        for await (const c of readCopyBytes(
          createReadStream(join(dir, part.file)),
          bad,
          compression,
        ))
          seen += c.length;
      })(),
    ).rejects.toThrow(`checksum ${part.xxhash64} does not match`);
    expect(seen).toBe(8);
    expect((await refusal(dir, { ...part, bytes: 1 }, compression, two)).message).toContain(
      'the manifest says 1',
    );
  });

  it('a missing part', async () => {
    const dir = await testdir();
    const part = {
      file: copyPartFileName(PREFIX, 'gone', 1, compression),
      rows: 1,
      bytes: 1,
      xxhash64: '0'.repeat(16),
    };
    expect((await refusal(dir, part, compression, two, true)).message).toContain(
      'part file is missing',
    );
  });
});
