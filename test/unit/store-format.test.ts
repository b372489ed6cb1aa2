/**
 * The pure parts of the store layer: store specs (URLs and options), known_hosts matching,
 * acknowledgements, and reading a part from any byte stream.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { WireRow } from '../../src/db/types.js';
import { ConfigError, DeltaError } from '../../src/errors.js';
import {
  ackFileName,
  makeAck,
  parseAck,
  replicaOfAckFile,
  serializeAck,
} from '../../src/format/ack.js';
import { PartWriter, partFileName, readPartFrom } from '../../src/format/part-codec.js';
import { parseStoreSpec } from '../../src/store/spec.js';
import { manifestsIn, orphanParts } from '../../src/store/common.js';
import { fingerprintOf, verifyKnownHost } from '../../src/store/sftp/known-hosts.js';
import { jobSchema } from '../../src/config/schema.js';
import { testdir } from '../helpers/tmp.js';

function refusal(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('store specs', () => {
  it('reads a directory path, file:, sftp: and s3: URLs', () => {
    expect(parseStoreSpec('relative/outbox')).toEqual({ kind: 'dir', dir: 'relative/outbox' });
    expect(parseStoreSpec('file:///var/spool/deltas')).toEqual({
      kind: 'dir',
      dir: '/var/spool/deltas',
    });
    expect(parseStoreSpec('sftp://push@replica.example:2222/srv/inbox/')).toMatchObject({
      kind: 'sftp',
      host: 'replica.example',
      port: 2222,
      username: 'push',
      path: '/srv/inbox',
    });
    expect(parseStoreSpec('sftp://push@replica.example/srv/inbox')).toMatchObject({ port: 22 });
    expect(
      parseStoreSpec({
        url: 's3://acme-deltas/jobs/orders/',
        region: 'eu-west-1',
        endpoint: 'http://127.0.0.1:7480',
        forcePathStyle: true,
      }),
    ).toEqual({
      kind: 's3',
      bucket: 'acme-deltas',
      prefix: 'jobs/orders',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:7480',
      forcePathStyle: true,
      partSizeMiB: undefined,
      connectTimeoutSeconds: undefined,
    });
  });

  it('refuses a password in a URL, unknown schemes, options of another store, a missing path', () => {
    expect(refusal(() => parseStoreSpec('sftp://push:hunter2@host/srv')).message).toContain(
      'password',
    );
    expect(refusal(() => parseStoreSpec('s3://AKIA:secret@bucket/p')).message).toContain(
      'password',
    );
    expect(refusal(() => parseStoreSpec('ftp://host/srv')).message).toContain('unknown store');
    expect(
      refusal(() => parseStoreSpec({ url: 's3://bucket/p', privateKeyFile: '/k' })).message,
    ).toContain('privateKeyFile cannot be used with s3');
    expect(refusal(() => parseStoreSpec({ url: 'sftp://h/d', region: 'x' })).message).toContain(
      'region cannot be used with sftp',
    );
    expect(refusal(() => parseStoreSpec('sftp://host')).message).toContain('absolute directory');
    expect(refusal(() => parseStoreSpec('s3://Not_A_Bucket/p')).message).toContain('bucket');
  });

  it('config: a destination is { name, dir } or { name, url, ...options }, errors at the key', () => {
    const ok = jobSchema.safeParse({
      name: 'j',
      destinations: [
        { name: 'disk', dir: '/mnt/x' },
        { name: 'ssh', url: 'sftp://u@h/d', hostKey: `SHA256:${'A'.repeat(43)}` },
      ],
    });
    expect(ok.success).toBe(true);
    const bad = jobSchema.safeParse({
      name: 'j',
      destinations: [
        { name: 'a', url: 'sftp://u:pw@h/d' },
        { name: 'b', dir: '/x', url: 's3://bucket/p' },
        { name: 'c', url: 's3://bucket/p', hostKey: 'SHA256:short' },
      ],
    });
    expect(bad.success).toBe(false);
    const paths = bad.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(paths.some((p) => p.startsWith('destinations.0.url:') && p.includes('password'))).toBe(
      true,
    );
    expect(paths).toContain('destinations.1.dir: give either dir or url');
    expect(paths.some((p) => p.startsWith('destinations.2.hostKey:'))).toBe(true);
  });
});

describe('known_hosts', () => {
  const key = (body: Buffer) =>
    Buffer.concat([
      Buffer.from([0, 0, 0, 11]),
      Buffer.from('ssh-ed25519'),
      Buffer.from([0, 0, 0, body.length]),
      body,
    ]);
  const real = key(randomBytes(32));
  const other = key(randomBytes(32));
  const b64 = (k: Buffer) => k.toString('base64');

  it('accepts a listed key, plain or hashed, with the [host]:port form off port 22', () => {
    expect(verifyKnownHost(`h.example ssh-ed25519 ${b64(real)}`, 'h.example', 22, real)).toEqual({
      ok: true,
    });
    expect(
      verifyKnownHost(`[h.example]:2222 ssh-ed25519 ${b64(real)}`, 'h.example', 2222, real).ok,
    ).toBe(true);
    expect(verifyKnownHost(`h.example ssh-ed25519 ${b64(real)}`, 'h.example', 2222, real).ok).toBe(
      false,
    );
    const salt = randomBytes(20);
    const hash = createHmac('sha1', salt).update('h.example').digest('base64');
    const hashed = `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${b64(real)}`;
    expect(verifyKnownHost(hashed, 'h.example', 22, real).ok).toBe(true);
    expect(
      verifyKnownHost(`*.example,!bad.example ssh-ed25519 ${b64(real)}`, 'h.example', 22, real).ok,
    ).toBe(true);
    expect(
      verifyKnownHost(`*.example,!bad.example ssh-ed25519 ${b64(real)}`, 'bad.example', 22, real)
        .ok,
    ).toBe(false);
  });

  it('tells an unknown key from a changed one, and refuses a revoked one', () => {
    expect(verifyKnownHost('', 'h', 22, real)).toEqual({
      ok: false,
      reason: 'unknown',
      fingerprint: fingerprintOf(real),
    });
    expect(verifyKnownHost(`h ssh-ed25519 ${b64(other)}`, 'h', 22, real)).toMatchObject({
      ok: false,
      reason: 'changed',
    });
    expect(
      verifyKnownHost(
        `h ssh-ed25519 ${b64(real)}\n@revoked * ssh-ed25519 ${b64(real)}`,
        'h',
        22,
        real,
      ),
    ).toMatchObject({ ok: false, reason: 'revoked' });
    expect(fingerprintOf(real)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });
});

describe('acknowledgements', () => {
  it('round-trip, and their name is checked against their content', () => {
    const ack = makeAck('orders', 'mapas', '4200', new Date('2026-11-30T10:00:00Z'));
    const name = ackFileName('orders', 'mapas');
    expect(name).toBe('orders.mapas.ack.json');
    expect(parseAck(serializeAck(ack), name)).toEqual(ack);
    expect(replicaOfAckFile('orders', name)).toBe('mapas');
    expect(replicaOfAckFile('orders', 'other.mapas.ack.json')).toBeNull();
    expect(() => parseAck(serializeAck(ack), 'orders.other.ack.json')).toThrow(DeltaError);
    expect(() => parseAck('{', name)).toThrow(/not valid JSON/);
    expect(() => parseAck(JSON.stringify({ ...ack, logId: 'x' }), name)).toThrow(/logId/);
    expect(() => parseAck(JSON.stringify({ ...ack, formatVersion: 9 }), name)).toThrow(/newer/);
  });
});

describe('listing helpers', () => {
  it('finds manifests after a logId numerically, and parts without a manifest', () => {
    const names = [
      'logId00000000000000000010.MANIFEST.json',
      'logId00000000000000000010.items.000001.ndjson.gz',
      'logId00000000000000000009.MANIFEST.json',
      'logId00000000000000000011.items.000001.ndjson.gz',
      '.logId00000000000000000012.MANIFEST.json.tmp-1-ab',
      'orders.mapas.ack.json',
    ];
    expect(manifestsIn(names, '9').map((m) => m.logId)).toEqual(['10']);
    expect(manifestsIn(names).map((m) => m.logId)).toEqual(['9', '10']);
    expect(orphanParts(names).map((l) => l.name)).toEqual([
      'logId00000000000000000011.items.000001.ndjson.gz',
    ]);
  });
});

describe('readPartFrom', () => {
  it('reads and checks a part from any byte stream, and refuses a damaged one', async () => {
    const dir = await testdir();
    const rows: WireRow[] = [
      [1, 'a'],
      [2, null],
    ];
    const writer = await PartWriter.create(
      dir,
      partFileName('logId00000000000000000200', 'orders', 1, 'gzip'),
      'gzip',
    );
    for (const row of rows) await writer.write(row);
    const part = await writer.finish();
    const bytes = await readFile(join(dir, part.file));
    const read: WireRow[] = [];
    for await (const row of readPartFrom(Readable.from([bytes]), part, 'gzip', 2)) read.push(row);
    expect(read).toEqual(rows);
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 3]! ^= 0xff;
    await expect(async () => {
      for await (const _ of readPartFrom(Readable.from([damaged]), part, 'gzip', 2));
    }).rejects.toThrow(DeltaError);
  });
});
