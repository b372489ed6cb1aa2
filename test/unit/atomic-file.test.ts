import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  TMP_MARKER,
  isTemporaryName,
  temporaryPathFor,
  writeFileAtomic,
  writeStreamAtomic,
} from '../../src/format/atomic-file.js';
import { listDir, testdir } from '../helpers/tmp.js';

/** A stream that yields `chunks`, then fails the way a dropped connection or a bad read would. */
function failingStream(chunks: string[], message = 'source went away'): Readable {
  return Readable.from(
    (async function* () {
      for (const chunk of chunks) yield Buffer.from(chunk);
      throw new Error(message);
    })(),
  );
}

describe('isTemporaryName', () => {
  it('recognises the names temporaryPathFor makes', () => {
    const tmp = temporaryPathFor('/x/outbox/logId00000000000000000007.MANIFEST.json');
    const name = tmp.slice('/x/outbox/'.length);
    expect(tmp.startsWith('/x/outbox/')).toBe(true);
    expect(name).toContain(TMP_MARKER);
    expect(isTemporaryName(name)).toBe(true);
  });

  it('gives a different temporary name on every call', () => {
    expect(temporaryPathFor('/x/a')).not.toBe(temporaryPathFor('/x/a'));
  });

  it('does not take published names for temporary ones', () => {
    expect(isTemporaryName('logId00000000000000000007.MANIFEST.json')).toBe(false);
    expect(isTemporaryName('logId00000000000000000007.orders.0001.ndjson.gz')).toBe(false);
    expect(isTemporaryName('job.extract.state.json')).toBe(false);
    expect(isTemporaryName('.hidden')).toBe(false);
  });
});

describe('writeFileAtomic', () => {
  it('writes the content and leaves no temporary file', async () => {
    const dir = await testdir();
    await writeFileAtomic(join(dir, 'a.json'), '{"x":1}\n');
    expect(await readFile(join(dir, 'a.json'), 'utf8')).toBe('{"x":1}\n');
    expect(await listDir(dir)).toEqual(['a.json']);
  });

  it('writes bytes as given', async () => {
    const dir = await testdir();
    const data = Uint8Array.from([0, 255, 10, 13, 128]);
    await writeFileAtomic(join(dir, 'b.bin'), data);
    expect(new Uint8Array(await readFile(join(dir, 'b.bin')))).toEqual(data);
  });

  it('replaces an existing file', async () => {
    const dir = await testdir({ 'state.json': 'old' });
    await writeFileAtomic(join(dir, 'state.json'), 'new');
    expect(await readFile(join(dir, 'state.json'), 'utf8')).toBe('new');
    expect(await listDir(dir)).toEqual(['state.json']);
  });

  it('fails without leaving anything when the directory does not exist', async () => {
    const dir = await testdir();
    await expect(writeFileAtomic(join(dir, 'missing', 'a.json'), 'x')).rejects.toMatchObject({
      code: 'ENOENT',
    });
    expect(await listDir(dir)).toEqual([]);
  });

  it('fails without leaving a temporary file when the write itself fails', async () => {
    const dir = await testdir();
    // Data the file handle refuses, so the failure comes after the temporary file was created.
    const bad = { not: 'bytes' } as unknown as string;
    await expect(writeFileAtomic(join(dir, 'a.json'), bad)).rejects.toThrow();
    expect(await listDir(dir)).toEqual([]);
  });

  it('fails without leaving a temporary file when the target is a directory', async () => {
    const dir = await testdir({ 'taken/inner.txt': 'keep' });
    await expect(writeFileAtomic(join(dir, 'taken'), 'x')).rejects.toThrow();
    expect(await listDir(dir)).toEqual(['taken']);
    expect(await readFile(join(dir, 'taken', 'inner.txt'), 'utf8')).toBe('keep');
  });
});

describe('writeStreamAtomic', () => {
  it('streams the content into place and leaves no temporary file', async () => {
    const dir = await testdir();
    const chunks = Array.from({ length: 50 }, (_, i) => `line ${i} ${'x'.repeat(1000)}\n`);
    await writeStreamAtomic(join(dir, 'part.ndjson'), Readable.from(chunks));
    expect(await readFile(join(dir, 'part.ndjson'), 'utf8')).toBe(chunks.join(''));
    expect(await listDir(dir)).toEqual(['part.ndjson']);
  });

  it('on a failing stream: no final file and no temporary file', async () => {
    const dir = await testdir();
    const path = join(dir, 'part.ndjson');
    await expect(writeStreamAtomic(path, failingStream(['a\n', 'b\n']))).rejects.toThrow(
      'source went away',
    );
    expect(await listDir(dir)).toEqual([]);
  });

  it('on a failing stream: an existing file is left unchanged', async () => {
    const dir = await testdir({ 'part.ndjson': 'previous content\n' });
    const path = join(dir, 'part.ndjson');
    await expect(writeStreamAtomic(path, failingStream(['new\n'.repeat(10_000)]))).rejects.toThrow(
      'source went away',
    );
    expect(await readFile(path, 'utf8')).toBe('previous content\n');
    expect(await listDir(dir)).toEqual(['part.ndjson']);
  });

  it('on a stream that fails before its first byte: nothing is left', async () => {
    const dir = await testdir();
    await expect(writeStreamAtomic(join(dir, 'p'), failingStream([], 'no data'))).rejects.toThrow(
      'no data',
    );
    expect(await listDir(dir)).toEqual([]);
  });

  it('a published file is never seen half-written by a concurrent reader', async () => {
    const dir = await testdir({ 'f.txt': 'A'.repeat(100_000) });
    const path = join(dir, 'f.txt');
    const next = 'B'.repeat(100_000);
    const seen = new Set<string>();
    const writing = writeStreamAtomic(
      path,
      Readable.from(Array.from({ length: 100 }, (_, i) => next.slice(i * 1000, (i + 1) * 1000))),
    );
    let done = false;
    void writing.finally(() => (done = true));
    while (!done) seen.add(await readFile(path, 'utf8'));
    await writing;
    seen.add(await readFile(path, 'utf8'));
    for (const content of seen) expect([`${'A'.repeat(100_000)}`, next]).toContain(content);
    expect(seen.has(next)).toBe(true);
  });
});

describe('sweepTemporaryFiles', () => {
  it('removes temporary files of dead processes and keeps those of live ones', async () => {
    const { spawnSync } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, readdirSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { sweepTemporaryFiles, TMP_MARKER } = await import('../../src/format/atomic-file.js');
    const dir = mkdtempSync(join(tmpdir(), 'deltasync-sweep-'));
    try {
      const dead = spawnSync('true').pid!;
      writeFileSync(join(dir, `.a.state.json${TMP_MARKER}${dead}-abcd`), 'x');
      writeFileSync(join(dir, `.b.state.json${TMP_MARKER}${process.pid}-abcd`), 'x');
      writeFileSync(join(dir, 'a.state.json'), '{}');
      expect(await sweepTemporaryFiles(dir)).toEqual([`.a.state.json${TMP_MARKER}${dead}-abcd`]);
      expect(readdirSync(dir).sort()).toEqual([
        `.b.state.json${TMP_MARKER}${process.pid}-abcd`,
        'a.state.json',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
