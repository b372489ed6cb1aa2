import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import xxhash from 'xxhash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createHasher, hashFile } from '../../src/format/checksum.js';
import { testdir } from '../helpers/tmp.js';

type XXHashAPI = Awaited<ReturnType<typeof xxhash>>;
let reference: XXHashAPI;

beforeAll(async () => {
  reference = await xxhash();
});

/** The expected digest, from xxhash-wasm's one-shot API rather than the streaming one under test. */
function expectedHex(data: Uint8Array): string {
  return reference.h64Raw(data, 0n).toString(16).padStart(16, '0');
}

async function digestOf(chunks: Uint8Array[]): Promise<string> {
  const hasher = await createHasher();
  for (const chunk of chunks) hasher.update(chunk);
  return hasher.digestHex();
}

/** Deterministic pseudo-random bytes (an LCG), so a failure can be reproduced. */
function bytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const utf8 = (s: string) => new TextEncoder().encode(s);

describe('createHasher', () => {
  it('gives the published xxhash64 of the empty input (seed 0)', async () => {
    expect(await digestOf([])).toBe('ef46db3751d8e999');
    expect(await digestOf([new Uint8Array(0)])).toBe('ef46db3751d8e999');
  });

  it.each([
    ['one byte', utf8('a')],
    ['ascii', utf8('deltasync')],
    ['unicode', utf8('Grüße, 世界 🎉')],
    ['exactly 32 bytes (one stripe)', bytes(32)],
    ['just over a stripe', bytes(33)],
    ['a megabyte', bytes(1 << 20, 7)],
  ])('matches the one-shot xxhash64 of %s', async (_name, data) => {
    const digest = await digestOf([data]);
    expect(digest).toMatch(/^[0-9a-f]{16}$/);
    expect(digest).toBe(expectedHex(data));
  });

  it('gives the same digest whatever the chunking', async () => {
    const data = bytes(100_003, 3);
    const expected = expectedHex(data);
    const byteByByte = Array.from({ length: 100 }, (_, i) => data.subarray(i, i + 1));
    expect(await digestOf([...byteByByte, data.subarray(100)])).toBe(expected);
    for (const size of [7, 31, 32, 33, 4096, 65_537]) {
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
      expect(await digestOf(chunks), `chunks of ${size}`).toBe(expected);
    }
  });

  it('keeps leading zeros: always 16 hex digits', async () => {
    // Find an input whose hash is below 2^60, i.e. whose hex form starts with a zero.
    let data = utf8('0');
    for (let i = 0; reference.h64Raw(data, 0n) >= 2n ** 60n; i++) data = utf8(String(i));
    const digest = await digestOf([data]);
    expect(digest).toHaveLength(16);
    expect(digest.startsWith('0')).toBe(true);
    expect(BigInt(`0x${digest}`)).toBe(reference.h64Raw(data, 0n));
  });

  it('hashers are independent of each other', async () => {
    const a = await createHasher();
    const b = await createHasher();
    a.update(utf8('left'));
    b.update(utf8('right'));
    expect(a.digestHex()).toBe(expectedHex(utf8('left')));
    expect(b.digestHex()).toBe(expectedHex(utf8('right')));
  });
});

describe('hashFile', () => {
  it('returns the digest and the byte count of a file spanning several read chunks', async () => {
    const data = bytes(3 * (1 << 20) + 12_345, 11);
    const dir = await testdir({ 'part.bin': data });
    expect(await hashFile(join(dir, 'part.bin'))).toEqual({
      xxhash64: expectedHex(data),
      bytes: data.length,
    });
  });

  it('hashes an empty file', async () => {
    const dir = await testdir({ empty: '' });
    expect(await hashFile(join(dir, 'empty'))).toEqual({ xxhash64: 'ef46db3751d8e999', bytes: 0 });
  });

  it('changes when one byte changes', async () => {
    const data = bytes(4096, 5);
    const dir = await testdir({ a: data });
    const before = await hashFile(join(dir, 'a'));
    const flipped = Uint8Array.from(data);
    flipped[2000]! ^= 0x01;
    await writeFile(join(dir, 'a'), flipped);
    const after = await hashFile(join(dir, 'a'));
    expect(after.bytes).toBe(before.bytes);
    expect(after.xxhash64).not.toBe(before.xxhash64);
    expect(after.xxhash64).toBe(expectedHex(flipped));
  });

  it('rejects a missing file', async () => {
    const dir = await testdir();
    await expect(hashFile(join(dir, 'nope'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
