/**
 * The store servers for integration tests: OpenSSH's sshd and Ceph's RADOS Gateway, started by
 * scripts/ci-sshd.sh and scripts/ci-radosgw.sh, which write their connection facts to env files
 * under DELTASYNC_CI_DIR (default /tmp/deltasync-ci). When a file is missing the suites that need
 * that server are skipped with a reason, unless DELTASYNC_REQUIRE_DBS=1 (CI), where they fail.
 *
 * `storeKinds()` gives one factory per kind of store; each call makes a fresh, empty location
 * (a temp directory, a remote directory, a key prefix) and a spec for it.
 */
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { REQUIRE_DBS } from './databases.js';

export const CI_DIR = process.env.DELTASYNC_CI_DIR ?? '/tmp/deltasync-ci';
export const TEST_BUCKET = 'deltasync-test';

function readEnvFile(name: string, script: string): Record<string, string> | string {
  const file = join(CI_DIR, name);
  if (!existsSync(file)) {
    const reason = `${file} is missing: run 'bash scripts/${script}' (as root) first`;
    if (REQUIRE_DBS) throw new Error(`${reason} — DELTASYNC_REQUIRE_DBS=1 forbids skipping`);
    console.warn(`store suite SKIPPED: ${reason}`);
    return reason;
  }
  const env: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

export interface SftpServer {
  host: string;
  port: number;
  user: string;
  key: string;
  knownHosts: string;
  dir: string;
  fingerprint: string;
}

export function sftpServer(): SftpServer | undefined {
  const env = readEnvFile('sshd.env', 'ci-sshd.sh');
  if (typeof env === 'string') return undefined;
  return {
    host: env.DELTASYNC_TEST_SFTP_HOST!,
    port: Number(env.DELTASYNC_TEST_SFTP_PORT),
    user: env.DELTASYNC_TEST_SFTP_USER!,
    key: env.DELTASYNC_TEST_SFTP_KEY!,
    knownHosts: env.DELTASYNC_TEST_SFTP_KNOWN_HOSTS!,
    dir: env.DELTASYNC_TEST_SFTP_DIR!,
    fingerprint: env.DELTASYNC_TEST_SFTP_FINGERPRINT!,
  };
}

export interface S3Server {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export function s3Server(): S3Server | undefined {
  const env = readEnvFile('radosgw.env', 'ci-radosgw.sh');
  if (typeof env === 'string') return undefined;
  return {
    endpoint: env.DELTASYNC_TEST_S3_ENDPOINT!,
    accessKeyId: env.AWS_ACCESS_KEY_ID!,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY!,
    region: env.AWS_REGION!,
  };
}

/** The credentials of the test gateway, for the SDK's default chain (this process and children). */
export function s3Env(s3: S3Server): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: s3.region,
  };
}

export async function ensureTestBucket(s3: S3Server): Promise<void> {
  const client = new S3Client({
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: TEST_BUCKET })).catch(async () => {
      // Test files run in parallel: another may create it between the look and the creation.
      await client.send(new CreateBucketCommand({ Bucket: TEST_BUCKET })).catch((err) => {
        if ((err as Error).name !== 'BucketAlreadyOwnedByYou') throw err;
      });
    });
  } finally {
    client.destroy();
  }
}

/** A remote directory under the test sshd's data dir, owned by the test user. */
export function freshSftpDir(sftp: SftpServer, label: string): string {
  const dir = join(sftp.dir, `${label}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir);
  const owner = statSync(sftp.dir).uid;
  chownSync(dir, owner, -1);
  return dir;
}

/** A spec for a fresh SFTP location (a new directory on the test server). */
export function sftpSpec(sftp: SftpServer, dir: string, options: Record<string, unknown> = {}) {
  return {
    url: `sftp://${sftp.user}@${sftp.host}:${sftp.port}${dir}`,
    privateKeyFile: sftp.key,
    knownHostsFile: sftp.knownHosts,
    ...options,
  };
}

export function s3Spec(s3: S3Server, prefix: string, options: Record<string, unknown> = {}) {
  return {
    url: `s3://${TEST_BUCKET}/${prefix}`,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    ...options,
  };
}

export interface StoreKind {
  kind: 'dir' | 'sftp' | 's3';
  /** Null when the server is not there (the suite is then skipped, never in CI). */
  available: boolean;
  /** A spec for a new, empty location; removed after the file's tests by `cleanup`. */
  fresh(label: string): Promise<Record<string, unknown>>;
  cleanup(): void;
}

export function storeKinds(): StoreKind[] {
  const dirs: string[] = [];
  const sftp = sftpServer();
  const s3 = s3Server();
  if (s3) Object.assign(process.env, s3Env(s3));
  return [
    {
      kind: 'dir',
      available: true,
      async fresh() {
        const dir = mkdtempSync(join(tmpdir(), 'deltasync-store-'));
        dirs.push(dir);
        return { url: `file://${dir}` };
      },
      cleanup: () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })),
    },
    {
      kind: 'sftp',
      available: sftp !== undefined,
      async fresh(label) {
        const dir = freshSftpDir(sftp!, label);
        dirs.push(dir);
        return sftpSpec(sftp!, dir);
      },
      cleanup: () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })),
    },
    {
      kind: 's3',
      available: s3 !== undefined,
      async fresh(label) {
        await ensureTestBucket(s3!);
        return s3Spec(s3!, `${label}-${randomBytes(4).toString('hex')}`, { partSizeMiB: 5 });
      },
      cleanup: () => undefined,
    },
  ];
}
