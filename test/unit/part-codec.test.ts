import { createHash } from 'node:crypto';
import { createWriteStream, readdirSync, readlinkSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { gunzipSync, gzipSync } from 'node:zlib';
import xxhash from 'xxhash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { WireRow } from '../../src/db/types.js';
import { DeltaError, ExitCode } from '../../src/errors.js';
import type { ManifestPart } from '../../src/format/manifest.js';
import {
  MAX_LINE_BYTES,
  PartWriter,
  partFileName,
  readPart,
  type Compression,
} from '../../src/format/part-codec.js';
import { listDir, testdir } from '../helpers/tmp.js';

const PREFIX = 'logId00000000000000000200';
const COMPRESSIONS: Compression[] = ['gzip', 'none'];

let h64Raw: (data: Uint8Array) => bigint;
beforeAll(async () => {
  const api = await xxhash();
  h64Raw = (data) => api.h64Raw(data, 0n);
});

/** One row of every kind of wire value a part carries. */
const KINDS: WireRow[] = [
  [1, null, '', 'plain'],
  [2, '', null, 'Grüße, 世界, مرحبا, 🎉👩‍👩‍👧 and a lone é'],
  [3, 'line one\nline two\r\nthree', 'tab\there', 'quote " backslash \\ slash /'],
  [4, '18446744073709551615', '-9223372036854775808', '12345678901234567890.0000000001'],
  [5, true, false, 'NaN'],
  [6, 1.5, -0.000001, 'Infinity'],
  [7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, '\u0000\u001f\u2028\u2029'],
  [8, '{"n":18446744073709551615}', 'AAEC/w==', '2024-02-29T23:59:59.999999Z'],
];

/** Writes `rows` through PartWriter and returns the published part's manifest entry. */
async function writePart(
  dir: string,
  rows: WireRow[],
  compression: Compression,
  table = 'orders',
): Promise<ManifestPart> {
  const writer = await PartWriter.create(
    dir,
    partFileName(PREFIX, table, 1, compression),
    compression,
  );
  for (const row of rows) await writer.write(row);
  return writer.finish();
}

async function readAll(
  dir: string,
  part: ManifestPart,
  compression: Compression,
  width: number,
): Promise<WireRow[]> {
  const rows: WireRow[] = [];
  for await (const row of readPart(dir, part, compression, width)) rows.push(row);
  return rows;
}

/** Reads the part to its end and returns the error it is refused with; fails if it is accepted. */
async function refusal(
  dir: string,
  part: ManifestPart,
  compression: Compression,
  width: number,
): Promise<DeltaError> {
  try {
    await readAll(dir, part, compression, width);
  } catch (err) {
    expect(err).toBeInstanceOf(DeltaError);
    const e = err as DeltaError;
    expect(e.exitCode).toBe(ExitCode.DATA);
    expect(e.message.startsWith(`${part.file}: `)).toBe(true);
    expect(e.message).not.toContain('\n');
    expect(e.file).toBe(part.file);
    return e;
  }
  throw new Error(`${part.file} was accepted`);
}

/**
 * Writes `text` as a part file by hand (gzipped if asked) and returns a manifest entry whose bytes
 * and checksum match the file, so that only the fault under test is wrong.
 */
async function rawPart(
  dir: string,
  text: string,
  compression: Compression,
  rows: number,
): Promise<ManifestPart> {
  const file = partFileName(PREFIX, 'raw', 1, compression);
  const data = compression === 'gzip' ? gzipSync(text) : Buffer.from(text);
  await writeFile(join(dir, file), data);
  return { file, rows, bytes: data.length, xxhash64: h64Raw(data).toString(16).padStart(16, '0') };
}

/** Flips one bit of the byte at `index` (negative: from the end) of a file. */
async function flipByte(path: string, index: number): Promise<void> {
  const data = await readFile(path);
  const i = index < 0 ? data.length + index : index;
  data[i]! ^= 0x20;
  await writeFile(path, data);
}

function manyRows(count: number): WireRow[] {
  return Array.from({ length: count }, (_, i) => [
    i,
    String(2n ** 63n + BigInt(i)),
    `row ${i} ✓ 🎉 ${'ü'.repeat(i % 50)}\n`,
    i % 3 === 0 ? null : '',
  ]);
}

describe('partFileName', () => {
  it('numbers parts with four digits and names the compression', () => {
    expect(partFileName(PREFIX, 'orders', 1, 'gzip')).toBe(`${PREFIX}.orders.0001.ndjson.gz`);
    expect(partFileName(PREFIX, 'orders', 12, 'none')).toBe(`${PREFIX}.orders.0012.ndjson`);
  });

  it('makes any table name safe for a file name', () => {
    expect(partFileName(PREFIX, 'dbo.Order Lines/../x', 3, 'gzip')).toBe(
      `${PREFIX}.dbo_Order_Lines____x.0003.ndjson.gz`,
    );
  });
});

describe.each(COMPRESSIONS)('round trip (%s)', (compression) => {
  it('reads back every wire value kind exactly', async () => {
    const dir = await testdir();
    const part = await writePart(dir, KINDS, compression);
    expect(part.rows).toBe(KINDS.length);
    const back = await readAll(dir, part, compression, 4);
    expect(back).toEqual(KINDS);
    // null and "" stay apart, and big numbers stay strings
    expect(back[0]![1]).toBeNull();
    expect(back[0]![2]).toBe('');
    expect(back[3]![1]).toBe('18446744073709551615');
  });

  it('publishes the file with its true size and checksum and no temporary file', async () => {
    const dir = await testdir();
    const part = await writePart(dir, KINDS, compression);
    expect(await listDir(dir)).toEqual([part.file]);
    const data = await readFile(join(dir, part.file));
    expect(part.bytes).toBe(data.length);
    expect(part.xxhash64).toBe(h64Raw(data).toString(16).padStart(16, '0'));
    const text = compression === 'gzip' ? gunzipSync(data).toString('utf8') : data.toString('utf8');
    expect(text).toBe(KINDS.map((r) => `${JSON.stringify(r)}\n`).join(''));
  });

  it('streams many rows across write and read chunk boundaries, multi-byte characters included', async () => {
    const dir = await testdir();
    const rows = manyRows(20_000);
    const part = await writePart(dir, rows, compression);
    expect(part.bytes).toBeGreaterThan(compression === 'gzip' ? 50_000 : 1 << 20);
    expect(await readAll(dir, part, compression, 4)).toEqual(rows);
  });

  it('writes and reads an empty part', async () => {
    const dir = await testdir();
    const part = await writePart(dir, [], compression);
    expect(part.rows).toBe(0);
    expect(await readAll(dir, part, compression, 4)).toEqual([]);
  });

  it('abort leaves nothing behind', async () => {
    const dir = await testdir();
    const writer = await PartWriter.create(
      dir,
      partFileName(PREFIX, 't', 1, compression),
      compression,
    );
    for (const row of manyRows(5_000)) await writer.write(row);
    await writer.abort();
    expect(await listDir(dir)).toEqual([]);
  });
});

describe.each(COMPRESSIONS)('refusals (%s)', (compression) => {
  it('a truncated part', async () => {
    const dir = await testdir();
    const part = await writePart(dir, manyRows(2_000), compression);
    const data = await readFile(join(dir, part.file));
    for (const keep of [Math.floor(data.length / 2), data.length - 1]) {
      await writeFile(join(dir, part.file), data.subarray(0, keep));
      await refusal(dir, part, compression, 4);
    }
  });

  it('a truncated part cut at a line boundary is caught by its size', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1]\n[2]\n[3]\n', compression, 3);
    const short = compression === 'gzip' ? gzipSync('[1]\n[2]\n') : Buffer.from('[1]\n[2]\n');
    await writeFile(join(dir, part.file), short);
    expect((await refusal(dir, part, compression, 1)).message).toMatch(/bytes, the manifest says/);
  });

  it('a missing part file', async () => {
    const dir = await testdir();
    const part = await writePart(dir, KINDS, compression);
    await rm(join(dir, part.file));
    expect((await refusal(dir, part, compression, 4)).message).toContain('part file is missing');
  });

  it('a row with the wrong number of columns', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1,"a"]\n[2,"b","extra"]\n[3,"c"]\n', compression, 3);
    const err = await refusal(dir, part, compression, 2);
    expect(err.message).toContain('row 2 has 3 columns, the manifest declares 2');
  });

  it('a row that is not an array', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1,"a"]\n{"id":2}\n', compression, 2);
    expect((await refusal(dir, part, compression, 2)).message).toContain('row 2 has no columns');
  });

  it('a line that is not JSON', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1,"a"]\n[2,"b"\n', compression, 2);
    expect((await refusal(dir, part, compression, 2)).message).toContain('row 2 is not valid JSON');
  });

  it('a last line with no trailing newline', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1,"a"]\n[2,"b"]', compression, 2);
    expect((await refusal(dir, part, compression, 2)).message).toContain(
      'last line has no newline',
    );
  });

  it('more rows than declared', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1]\n[2]\n[3]\n', compression, 2);
    const err = await refusal(dir, part, compression, 1);
    expect(err.message).toContain('holds more rows than the 2 the manifest declares');
  });

  it('fewer rows than declared', async () => {
    const dir = await testdir();
    const part = await rawPart(dir, '[1]\n[2]\n', compression, 3);
    expect((await refusal(dir, part, compression, 1)).message).toContain(
      'holds 2 rows, the manifest says 3',
    );
  });

  it('a size that does not match the manifest', async () => {
    const dir = await testdir();
    const part = await writePart(dir, KINDS, compression);
    const err = await refusal(dir, { ...part, bytes: part.bytes + 1 }, compression, 4);
    expect(err.message).toContain(`is ${part.bytes} bytes, the manifest says ${part.bytes + 1}`);
  });

  it('a checksum that does not match the manifest', async () => {
    const dir = await testdir();
    const part = await writePart(dir, KINDS, compression);
    const err = await refusal(dir, { ...part, xxhash64: '0000000000000000' }, compression, 4);
    expect(err.message).toContain(`checksum ${part.xxhash64} does not match`);
  });
});

describe('flipped bytes', () => {
  it('gzip: a flipped byte anywhere (header, body, CRC trailer) is refused', async () => {
    const dir = await testdir();
    const rows = manyRows(3_000);
    const part = await writePart(dir, rows, 'gzip');
    const path = join(dir, part.file);
    const original = await readFile(path);
    for (const index of [1, 12, Math.floor(original.length / 2), original.length - 6]) {
      await writeFile(path, original);
      await flipByte(path, index);
      await refusal(dir, part, 'gzip', 4);
    }
    await writeFile(path, original);
    expect(await readAll(dir, part, 'gzip', 4)).toEqual(rows);
  });

  it('none: a flipped byte inside a string value is caught by the checksum', async () => {
    const dir = await testdir();
    const part = await writePart(dir, [[1, 'abcdefgh']], 'none');
    const path = join(dir, part.file);
    const text = await readFile(path, 'utf8');
    await flipByte(path, text.indexOf('d')); // "d" -> "D": still valid JSON, same width
    const err = await refusal(dir, part, 'none', 2);
    expect(err.message).toContain(`does not match the manifest's ${part.xxhash64}`);
  });

  it('none: a flipped byte anywhere is refused', async () => {
    const dir = await testdir();
    const rows = manyRows(200);
    const part = await writePart(dir, rows, 'none');
    const path = join(dir, part.file);
    const original = await readFile(path);
    for (const index of [0, 1, 17, Math.floor(original.length / 2), original.length - 2]) {
      await writeFile(path, original);
      await flipByte(path, index);
      await refusal(dir, part, 'none', 4);
    }
  });
});

/** How many of this process's file descriptors are open on `path` (Linux /proc). */
function openDescriptors(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false; // closed while we looked
    }
  }).length;
}

describe.each(COMPRESSIONS)('a reader that stops early (%s)', (compression) => {
  // load stops reading when the database fails mid-part; a long-running process must not keep
  // the part open (and a megabyte buffered) for every such failure.
  async function bigPart(dir: string): Promise<ManifestPart> {
    // Hashes do not compress: the part stays bigger than the reader's 1 MB buffer even gzipped.
    const rows = Array.from({ length: 60_000 }, (_, i) => [
      i,
      createHash('sha256').update(String(i)).digest('base64'),
      null,
      '',
    ]);
    const part = await writePart(dir, rows, compression);
    expect(part.bytes).toBeGreaterThan(2 << 20);
    return part;
  }

  it('releases the part file after a break', async () => {
    const dir = await testdir();
    const part = await bigPart(dir);
    for await (const row of readPart(dir, part, compression, 4)) {
      expect(row[0]).toBe(0);
      expect(openDescriptors(join(dir, part.file))).toBe(1);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(openDescriptors(join(dir, part.file))).toBe(0);
  });

  it('releases the part file when the consumer throws', async () => {
    const dir = await testdir();
    const part = await bigPart(dir);
    const consume = async () => {
      for await (const row of readPart(dir, part, compression, 4)) {
        if (row[0] === 10) throw new Error('target database went away');
      }
    };
    await expect(consume()).rejects.toThrow('target database went away');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(openDescriptors(join(dir, part.file))).toBe(0);
  });
});

describe('line length', () => {
  it(`refuses a line longer than MAX_LINE_BYTES (${MAX_LINE_BYTES}) without reading it whole`, async () => {
    const dir = await testdir();
    const file = partFileName(PREFIX, 'huge', 1, 'none');
    const out = createWriteStream(join(dir, file));
    const block = Buffer.alloc(1 << 20, 'a');
    out.write('["');
    for (let written = 0; written <= MAX_LINE_BYTES; written += block.length) {
      if (!out.write(block)) await once(out, 'drain');
    }
    out.end('"]\n');
    await once(out, 'finish');
    const part: ManifestPart = {
      file,
      rows: 1,
      bytes: MAX_LINE_BYTES + (2 << 20),
      xxhash64: '0'.repeat(16),
    };
    const err = await refusal(dir, part, 'none', 1);
    expect(err.message).toContain(`a line is longer than ${MAX_LINE_BYTES} bytes`);
  });
});
