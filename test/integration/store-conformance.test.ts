/**
 * One conformance suite over every kind of delta store: a directory, an SFTP server (OpenSSH's
 * sshd, scripts/ci-sshd.sh) and S3 (Ceph's RADOS Gateway, scripts/ci-radosgw.sh). The same tests
 * run against each, through the store interface steps use; then what only a remote store can get
 * wrong (unreachable hosts, host keys, credentials).
 */
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, DeltaError, UnavailableError } from '../../src/errors.js';
import { createHasher } from '../../src/format/checksum.js';
import { logIdPrefix } from '../../src/format/logid.js';
import { manifestFileName } from '../../src/format/manifest.js';
import { openStore, readText, type DeltaStore } from '../../src/store/index.js';
import { digestOf } from '../../src/store/common.js';
import { ROOT } from '../helpers/cli.js';
import {
  freshSftpDir,
  s3Server,
  s3Spec,
  sftpServer,
  sftpSpec,
  storeKinds,
} from '../helpers/stores.js';
import { testdir } from '../helpers/tmp.js';

const kinds = storeKinds();
afterAll(() => kinds.forEach((k) => k.cleanup()));

async function bytesOf(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function xxhashOf(data: Buffer): Promise<string> {
  const h = await createHasher();
  h.update(data);
  return h.digestHex();
}

/** A part file name of delta `logId`. */
function partName(logId: string, n = 1): string {
  return `${logIdPrefix(logId)}.items.${String(n).padStart(6, '0')}.ndjson.gz`;
}

async function thrown(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Leftovers of interrupted writes (temporary files, uploads), not parts awaiting a manifest. */
async function unfinished(store: DeltaStore) {
  return (await store.leftovers()).filter((l) => l.kind !== 'orphan-part');
}

/** Waits (bounded by the test timeout) until `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 50));
}

describe.each(kinds)('$kind store', (kind) => {
  const it_ = kind.available ? it : it.skip;
  const withStore = async (
    label: string,
    fn: (store: DeltaStore, spec: object) => Promise<void>,
  ) => {
    const spec = await kind.fresh(label);
    const store = await openStore(spec as never);
    try {
      await fn(store, spec);
    } finally {
      await store.close();
    }
  };

  it_('lists manifests after a logId, in numeric order, ignoring parts and temporary files', () =>
    withStore('list', async (store) => {
      await store.check();
      expect(await store.listManifests()).toEqual([]);
      for (const logId of ['10', '9', '100']) {
        await store.publish(partName(logId), `part ${logId}`);
        await store.publish(manifestFileName(logId), `{"logId": ${logId}}`);
      }
      await store.publish(partName('200'), 'a part without its manifest');
      expect((await store.listManifests()).map((m) => m.logId)).toEqual(['9', '10', '100']);
      expect((await store.listManifests('9')).map((m) => m.file)).toEqual([
        manifestFileName('10'),
        manifestFileName('100'),
      ]);
      expect(await store.listManifests('100')).toEqual([]);
      expect(await store.list(logIdPrefix('10'))).toEqual([manifestFileName('10'), partName('10')]);
    }),
  );

  it_('round-trips binary content through publish, stat and read', () =>
    withStore('binary', async (store) => {
      const data = randomBytes(300_000);
      const digest = await store.publish(
        partName('5'),
        Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
      );
      expect(digest).toEqual({ bytes: data.length, xxhash64: await xxhashOf(data) });
      expect(await store.stat(partName('5'))).toEqual({ bytes: data.length });
      expect((await bytesOf(await store.read(partName('5')))).equals(data)).toBe(true);
    }),
  );

  it_('publishes a large file (multipart on S3) whole', () =>
    withStore('large', async (store) => {
      const data = randomBytes(12 * 1024 * 1024 + 12345);
      const chunks = Array.from({ length: Math.ceil(data.length / 65536) }, (_, i) =>
        data.subarray(i * 65536, (i + 1) * 65536),
      );
      await store.publish(partName('6'), Readable.from(chunks), {
        expect: { bytes: data.length, xxhash64: await xxhashOf(data) },
      });
      expect(await store.stat(partName('6'))).toEqual({ bytes: data.length });
      expect(await digestOf(await store.read(partName('6')))).toEqual({
        bytes: data.length,
        xxhash64: await xxhashOf(data),
      });
      expect(await unfinished(store)).toEqual([]);
      // Create-only holds for large files too (on S3 the multipart completion, which radosgw
      // would let overwrite): the same bytes pass, other bytes are refused, no upload is left.
      await store.publish(partName('6'), Readable.from(chunks));
      const other = Buffer.from(data);
      other[5_000_000] ^= 0xff;
      const err = await thrown(store.publish(partName('6'), Readable.from([other])));
      expect((err as DeltaError).exitCode).toBe(65);
      expect(err.message).toContain(partName('6'));
      expect(await digestOf(await store.read(partName('6')))).toEqual({
        bytes: data.length,
        xxhash64: await xxhashOf(data),
      });
      expect(await unfinished(store)).toEqual([]);
    }),
  );

  it_(
    "publishes a file read from a directory outbox (copy's case), checked; refuses a damaged one",
    () =>
      withStore('from-dir', async (store) => {
        const data = randomBytes(3 * 1024 * 1024 + 7);
        const expect_ = { bytes: data.length, xxhash64: await xxhashOf(data) };
        const outbox = await openStore({ kind: 'dir', dir: await testdir() });
        await outbox.publish(partName('11'), data);
        expect(
          await store.publish(partName('11'), await outbox.read(partName('11')), {
            expect: expect_,
          }),
        ).toEqual(expect_);
        expect((await bytesOf(await store.read(partName('11')))).equals(data)).toBe(true);
        // Again: the same bytes are already there, a success.
        await store.publish(partName('11'), await outbox.read(partName('11')), { expect: expect_ });

        const damaged = Buffer.from(data);
        damaged[2_000_000] ^= 0x01;
        await outbox.publish(partName('12'), damaged);
        const err = await thrown(
          store.publish(partName('12'), await outbox.read(partName('12')), { expect: expect_ }),
        );
        expect((err as DeltaError).exitCode).toBe(65);
        expect(err.message).toContain(partName('12'));
        expect((err as DeltaError).hint).toContain('source copy is damaged');
        expect(await store.stat(partName('12'))).toBeNull();
        expect(await unfinished(store)).toEqual([]);
      }),
  );

  it_('publishes create-only: the same bytes again succeed, different bytes are refused (65)', () =>
    withStore('create-only', async (store) => {
      await store.publish(partName('7'), 'the bytes');
      await store.publish(partName('7'), 'the bytes');
      const err = await thrown(store.publish(partName('7'), 'other bytes'));
      expect(err).toBeInstanceOf(DeltaError);
      expect((err as DeltaError).exitCode).toBe(65);
      expect(err.message).toContain(partName('7'));
      expect(err.message).toContain('different bytes');
      expect(await readText(store, partName('7'))).toBe('the bytes');
      expect(await unfinished(store)).toEqual([]);
    }),
  );

  it_('refuses bytes that are not the expected ones, publishing nothing', () =>
    withStore('expect', async (store) => {
      const err = await thrown(
        store.publish(partName('8'), 'damaged', {
          expect: { bytes: 7, xxhash64: '0000000000000000' },
        }),
      );
      expect((err as DeltaError).exitCode).toBe(65);
      expect(err.message).toContain(partName('8'));
      expect(await store.stat(partName('8'))).toBeNull();
      expect(await unfinished(store)).toEqual([]);
    }),
  );

  it_('names a missing file (65), stats it as null, and removes it without error', () =>
    withStore('missing', async (store) => {
      const err = await thrown(store.read(partName('404')));
      expect(err).toBeInstanceOf(DeltaError);
      expect((err as DeltaError).exitCode).toBe(65);
      expect(err.message).toContain(partName('404'));
      expect(await store.stat(partName('404'))).toBeNull();
      await store.remove(partName('404'));
    }),
  );

  it_('replaces a small file atomically (acknowledgements) and removes files', () =>
    withStore('replace', async (store) => {
      await store.replace('job.replica.ack.json', 'first');
      await store.replace('job.replica.ack.json', 'second');
      expect(await readText(store, 'job.replica.ack.json')).toBe('second');
      expect(await store.list('job.')).toEqual(['job.replica.ack.json']);
      await store.remove('job.replica.ack.json');
      expect(await store.list('job.')).toEqual([]);
    }),
  );

  it_(
    'shows nothing under the final name when the writer is SIGKILLed mid-transfer; the leftover is listed and removed',
    () =>
      withStore('killed', async (store, spec) => {
        const file = partName('9');
        // A child that publishes an endless stream: it can only ever be killed mid-transfer.
        const child = spawn(
          process.execPath,
          [
            '--input-type=module',
            '-e',
            `import { openStore } from ${JSON.stringify(join(ROOT, 'dist/src/store/index.js'))};
             import { Readable } from 'node:stream';
             const store = await openStore(JSON.parse(process.env.SPEC));
             const chunk = Buffer.alloc(1 << 20, 7);
             await store.publish(process.env.FILE, Readable.from((function* () { for (;;) yield chunk; })()));`,
          ],
          { env: { ...process.env, SPEC: JSON.stringify(spec), FILE: file }, stdio: 'inherit' },
        );
        const exited = new Promise((r) => child.once('exit', r));
        try {
          // Mid-transfer: the temporary file (or the multipart upload) exists and grows.
          await until(async () => (await store.leftovers()).some((l) => l.name === file));
          expect(await store.stat(file)).toBeNull();
        } finally {
          child.kill('SIGKILL');
          await exited;
        }
        expect(await store.stat(file)).toBeNull();
        expect(await store.listManifests()).toEqual([]);
        const left = await store.leftovers();
        expect(left.map((l) => [l.name, l.kind])).toEqual([
          [file, kind.kind === 's3' ? 'upload' : 'temporary'],
        ]);
        for (const l of left) await store.removeLeftover(l);
        expect(await store.leftovers()).toEqual([]);
      }),
  );

  it_('lists parts whose delta has no manifest as leftovers', () =>
    withStore('orphans', async (store) => {
      await store.publish(partName('11'), 'complete delta part');
      await store.publish(manifestFileName('11'), '{}');
      await store.publish(partName('12'), 'part of a delta whose writer died');
      expect(await store.leftovers()).toEqual([
        { name: partName('12'), kind: 'orphan-part', ref: partName('12') },
      ]);
      for (const l of await store.leftovers()) await store.removeLeftover(l);
      expect(await store.leftovers()).toEqual([]);
      expect(await store.stat(partName('11'))).not.toBeNull();
    }),
  );
});

describe('directory store failures', () => {
  it('a missing directory is unavailable (69), not created', async () => {
    const dir = join(await testdir(), 'not-mounted');
    const store = await openStore(dir);
    const err = await thrown(store.check());
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err.message).toContain(dir);
  });
});

const sftp = sftpServer();
describe.skipIf(!sftp)('SFTP connection failures', () => {
  const open = async (options: Record<string, unknown>, port = sftp!.port) => {
    const dir = freshSftpDir(sftp!, 'conn');
    const spec = sftpSpec(sftp!, dir, options);
    spec.url = spec.url.replace(`:${sftp!.port}/`, `:${port}/`);
    return openStore(spec as never);
  };

  it('an unreachable host is unavailable (69)', async () => {
    const store = await open({}, 1);
    const err = await thrown(store.check());
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).exitCode).toBe(69);
    expect(err.message).toContain('127.0.0.1:1');
  });

  it('an unknown host key is refused (78) with its SHA256 fingerprint, to pin', async () => {
    const knownHosts = join(await testdir({ known_hosts: '' }), 'known_hosts');
    const store = await open({ knownHostsFile: knownHosts });
    const err = await thrown(store.check());
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain('unknown host key');
    expect(err.message).toContain(sftp!.fingerprint);
    await store.close();
    const pinned = await open({ hostKey: sftp!.fingerprint });
    await pinned.check();
    await pinned.close();
  });

  it('a changed host key is refused (78), whether in known_hosts (hashed too) or pinned', async () => {
    const other = randomBytes(32);
    const blob = Buffer.concat([
      Buffer.from([0, 0, 0, 11]),
      Buffer.from('ssh-ed25519'),
      Buffer.from([0, 0, 0, 32]),
      other,
    ]).toString('base64');
    const name = `[${sftp!.host}]:${sftp!.port}`;
    const salt = randomBytes(20);
    const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
    for (const line of [`${name} ssh-ed25519 ${blob}`, `${hashed} ssh-ed25519 ${blob}`]) {
      const dir = await testdir({ known_hosts: `${line}\n` });
      const store = await open({ knownHostsFile: join(dir, 'known_hosts') });
      const err = await thrown(store.check());
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain('CHANGED');
      expect(err.message).toContain(sftp!.fingerprint);
      await store.close();
    }
    const pinned = await open({ hostKey: `SHA256:${'A'.repeat(43)}` });
    const err = await thrown(pinned.check());
    expect(err.message).toContain('CHANGED');
    await pinned.close();
    // The real key, hashed, is accepted.
    const real = readFileSync(sftp!.knownHosts, 'utf8').split(' ');
    const dir = await testdir({ known_hosts: `${hashed} ${real[1]} ${real[2]}` });
    const ok = await open({ knownHostsFile: join(dir, 'known_hosts') });
    await ok.check();
    await ok.close();
  });

  it('a key with a passphrase logs in with passphraseEnv; without the variable it is 78', async () => {
    const dir = await testdir();
    const key = join(dir, 'k');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'open sesame', '-f', key]);
    appendFileSync(join(sftp!.key, '..', 'authorized_keys'), readFileSync(`${key}.pub`));
    process.env.DELTASYNC_TEST_KEY_PASSPHRASE = 'open sesame';
    try {
      const store = await open({
        privateKeyFile: key,
        passphraseEnv: 'DELTASYNC_TEST_KEY_PASSPHRASE',
      });
      await store.check();
      await store.close();
      const unset = await open({ privateKeyFile: key, passphraseEnv: 'DELTASYNC_TEST_UNSET_VAR' });
      const err = await thrown(unset.check());
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain('DELTASYNC_TEST_UNSET_VAR');
      const none = await open({ privateKeyFile: key });
      expect((await thrown(none.check())).message).toContain('cannot use private key');
    } finally {
      delete process.env.DELTASYNC_TEST_KEY_PASSPHRASE;
    }
  });

  it('a key the server does not accept is a configuration error (78)', async () => {
    const dir = await testdir();
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k')]);
    const store = await open({ privateKeyFile: join(dir, 'k') });
    const err = await thrown(store.check());
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain('refused the key');
    await store.close();
  });
});

const s3 = s3Server();
describe.skipIf(!s3)('S3 failures', () => {
  it('an unreachable endpoint is unavailable (69)', async () => {
    const store = await openStore(
      s3Spec(s3!, 'x', { endpoint: 'http://127.0.0.1:1', connectTimeoutSeconds: 2 }) as never,
    );
    const err = await thrown(store.listManifests());
    expect(err).toBeInstanceOf(UnavailableError);
    await store.close();
  });

  it('wrong credentials are a configuration error (78) naming the bucket', async () => {
    const saved = process.env.AWS_SECRET_ACCESS_KEY;
    process.env.AWS_SECRET_ACCESS_KEY = 'not-the-secret';
    try {
      const store = await openStore(s3Spec(s3!, 'x') as never);
      const err = await thrown(store.listManifests());
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain('access denied to bucket deltasync-test');
      await store.close();
    } finally {
      process.env.AWS_SECRET_ACCESS_KEY = saved;
    }
  });
});
