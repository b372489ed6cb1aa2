/**
 * The stores the store bench copies to and loads from: a local directory, and the CI services'
 * SFTP server (OpenSSH's sshd) and S3 gateway (Ceph's RADOS Gateway), whose connection facts
 * scripts/ci-sshd.sh and scripts/ci-radosgw.sh write to env files under DELTASYNC_CI_DIR. Each
 * location made here is registered with the releasers, so the bench leaves nothing behind.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/store/index.js';
import type { StoreUrlSpec } from './config.js';
import type { Releasers } from './releasers.js';

export type StoreKind = 'dir' | 'sftp' | 's3';
export const STORE_KINDS: StoreKind[] = ['dir', 'sftp', 's3'];

/** A store ready to use, or the reason it is skipped. */
export type StoreSetup =
  { kind: StoreKind; spec: StoreUrlSpec } | { kind: StoreKind; skip: string };

const CI_DIR = process.env.DELTASYNC_CI_DIR ?? '/tmp/deltasync-ci';
/** A bucket of the bench's own, made when missing and removed again when the bench made it. */
const BENCH_BUCKET = 'deltasync-bench';

async function readEnvFile(name: string): Promise<Record<string, string> | null> {
  const file = join(CI_DIR, name);
  if (!existsSync(file)) return null;
  const env: Record<string, string> = {};
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

/** True when something accepts a TCP connection at host:port within two seconds. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function dirStore(releasers: Releasers): Promise<StoreSetup> {
  const dir = await mkdtemp(join(tmpdir(), 'dsbench-store-'));
  releasers.add(`store dir ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return { kind: 'dir', spec: { url: `file://${dir}` } };
}

async function sftpStore(releasers: Releasers): Promise<StoreSetup> {
  const env = await readEnvFile('sshd.env');
  if (!env) return { kind: 'sftp', skip: `${CI_DIR}/sshd.env is missing (scripts/ci-sshd.sh)` };
  const host = env.DELTASYNC_TEST_SFTP_HOST!;
  const port = Number(env.DELTASYNC_TEST_SFTP_PORT);
  if (!(await answers(host, port)))
    return { kind: 'sftp', skip: `sshd at ${host}:${port} does not answer` };
  // The CI server's data dir is on this machine: the location is made (and removed) here, owned
  // by the SFTP user as a real replica host's inbox would be.
  const dataDir = env.DELTASYNC_TEST_SFTP_DIR!;
  const dir = join(dataDir, `dsbench-${randomBytes(4).toString('hex')}`);
  await mkdir(dir);
  releasers.add(`SFTP dir ${dir}`, () => rm(dir, { recursive: true, force: true }));
  await chown(dir, (await stat(dataDir)).uid, -1);
  return {
    kind: 'sftp',
    spec: {
      url: `sftp://${env.DELTASYNC_TEST_SFTP_USER}@${host}:${port}${dir}`,
      privateKeyFile: env.DELTASYNC_TEST_SFTP_KEY,
      knownHostsFile: env.DELTASYNC_TEST_SFTP_KNOWN_HOSTS,
    },
  };
}

async function s3Store(releasers: Releasers): Promise<StoreSetup> {
  const env = await readEnvFile('radosgw.env');
  if (!env) return { kind: 's3', skip: `${CI_DIR}/radosgw.env is missing (scripts/ci-radosgw.sh)` };
  const endpoint = env.DELTASYNC_TEST_S3_ENDPOINT!;
  const { hostname, port } = new URL(endpoint);
  if (!(await answers(hostname, Number(port || 80))))
    return { kind: 's3', skip: `the S3 gateway at ${endpoint} does not answer` };
  // The bins (children of this process) take the credentials from the SDK's default chain.
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) {
    if (env[name] !== undefined) process.env[name] = env[name];
  }
  const { CreateBucketCommand, DeleteBucketCommand, HeadBucketCommand, S3Client } =
    await import('@aws-sdk/client-s3');
  const client = new S3Client({ endpoint, forcePathStyle: true });
  try {
    const exists = await client.send(new HeadBucketCommand({ Bucket: BENCH_BUCKET })).then(
      () => true,
      () => false,
    );
    if (!exists) {
      await client.send(new CreateBucketCommand({ Bucket: BENCH_BUCKET }));
      releasers.add(`S3 bucket ${BENCH_BUCKET}`, async () => {
        const c = new S3Client({ endpoint, forcePathStyle: true });
        try {
          await c.send(new DeleteBucketCommand({ Bucket: BENCH_BUCKET }));
        } finally {
          c.destroy();
        }
      });
    }
  } finally {
    client.destroy();
  }
  const spec: StoreUrlSpec = {
    url: `s3://${BENCH_BUCKET}/dsbench-${randomBytes(4).toString('hex')}`,
    endpoint,
    forcePathStyle: true,
  };
  releasers.add(`S3 prefix ${spec.url}`, () => emptyStore(spec));
  return { kind: 's3', spec };
}

/** Removes every file under a store's location, through deltasync's own store. */
async function emptyStore(spec: StoreUrlSpec): Promise<void> {
  const store = await openStore(spec as never);
  try {
    for (const file of await store.list('')) await store.remove(file);
    for (const leftover of await store.leftovers()) await store.removeLeftover(leftover);
  } finally {
    await store.close();
  }
}

/** A fresh, empty location in each kind of store, or why that kind is skipped. */
export async function setUpStore(kind: StoreKind, releasers: Releasers): Promise<StoreSetup> {
  switch (kind) {
    case 'dir':
      return dirStore(releasers);
    case 'sftp':
      return sftpStore(releasers);
    case 's3':
      return s3Store(releasers);
  }
}
