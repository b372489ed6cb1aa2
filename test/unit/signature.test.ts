import { describe, expect, it } from 'vitest';
import { DeltaError } from '../../src/errors.js';
import { canonicalJson, keyId, sign, verifySignature } from '../../src/format/signature.js';

const KEY = 'k'.repeat(32);
const OLD = 'o'.repeat(32);
const manifest = { b: 1, a: { y: [1, 'two', null], x: true }, tables: [] as unknown[] };

describe('canonicalJson', () => {
  it('sorts keys at every level and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: undefined, c: [{ z: 1, y: 2 }] } })).toBe(
      '{"a":{"c":[{"y":2,"z":1}]},"b":1}',
    );
  });

  it('is the same text whatever the key order the object was built in', () => {
    expect(canonicalJson({ x: 1, y: 2 })).toBe(canonicalJson({ y: 2, x: 1 }));
  });
});

describe('sign and verify', () => {
  it('a signed manifest verifies after a JSON round trip', () => {
    const signed = JSON.parse(JSON.stringify(sign(manifest, KEY)));
    expect(signed.signature).toMatchObject({ alg: 'HMAC-SHA256', keyId: keyId(KEY) });
    expect(() => verifySignature(signed, [KEY], 'm')).not.toThrow();
  });

  it('any change after signing is refused', () => {
    const signed = JSON.parse(JSON.stringify(sign(manifest, KEY)));
    signed.a.y[1] = 'three';
    expect(() => verifySignature(signed, [KEY], 'm')).toThrow(/signature does not match/);
  });

  it('an unsigned manifest is refused when keys are required', () => {
    const err = (() => {
      try {
        verifySignature({ ...manifest }, [KEY], 'm.json');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as DeltaError).exitCode).toBe(65);
    expect((err as DeltaError).message).toBe(
      'm.json: delta is not signed, and this loader requires signed deltas',
    );
  });

  it('a key this loader does not have is named as such; a previous key still verifies', () => {
    const signed = JSON.parse(JSON.stringify(sign(manifest, OLD)));
    expect(() => verifySignature(signed, [KEY], 'm')).toThrow(
      new RegExp(`signed with key ${keyId(OLD)}`),
    );
    expect(() => verifySignature(signed, [KEY, OLD], 'm')).not.toThrow();
  });

  it('a signature forged with the right keyId but another secret is refused', () => {
    const forged = JSON.parse(JSON.stringify(sign(manifest, 'x'.repeat(32))));
    forged.signature.keyId = keyId(KEY);
    expect(() => verifySignature(forged, [KEY], 'm')).toThrow(/signature does not match/);
  });
});

describe('part SHA-256 (what carries a signature to the bytes)', () => {
  it('a part whose bytes match xxhash64 and size but not the SHA-256 is refused', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { PartWriter, readPart } = await import('../../src/format/part-codec.js');
    const dir = mkdtempSync(join(tmpdir(), 'deltasync-sha-'));
    try {
      const writer = await PartWriter.create(
        dir,
        'logId00000000000000000001.t.0001.ndjson',
        'none',
        { sha256: true },
      );
      await writer.write(['1', 'a']);
      const part = await writer.finish();
      expect(part.sha256).toMatch(/^[0-9a-f]{64}$/);
      const rows: unknown[] = [];
      for await (const row of readPart(dir, part, 'none', 2)) rows.push(row);
      expect(rows).toEqual([['1', 'a']]);
      // As if an attacker found an xxhash64 collision: only the SHA-256 can tell.
      const forged = { ...part, sha256: 'f'.repeat(64) };
      await expect(async () => {
        for await (const _ of readPart(dir, forged, 'none', 2)) void _;
      }).rejects.toThrow(/SHA-256 does not match/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
