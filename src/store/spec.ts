/**
 * Where a store is, as a config names it: a directory path (as always), a URL
 * (`sftp://user@host[:port]/abs/path`, `s3://bucket/prefix`, `file:///path`), or `{ url, ...options }`.
 * Secrets never sit in a URL of a committed file: SFTP keys come from files (a passphrase from
 * the environment), S3 credentials from the SDK's default chain.
 */
import { userInfo } from 'node:os';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import type { S3StoreOptions } from './s3/s3-store.js';
import type { SftpStoreOptions } from './sftp/sftp-store.js';

/** Options a `{ url, ... }` store spec may carry besides its URL. */
export const storeOptionsShape = {
  /** SFTP: known_hosts file to verify the host key against (default ~/.ssh/known_hosts). */
  knownHostsFile: z.string().min(1).optional(),
  /** SFTP: the host key's fingerprint, pinned: `SHA256:…` as `ssh-keygen -lf` prints it. */
  hostKey: z
    .string()
    .regex(/^SHA256:[A-Za-z0-9+/]{43}$/, "must be 'SHA256:' and 43 base64 characters")
    .optional(),
  /** SFTP: private key file (default ~/.ssh/id_ed25519, then ~/.ssh/id_rsa). */
  privateKeyFile: z.string().min(1).optional(),
  /** SFTP: name of the environment variable that holds the key's passphrase. */
  passphraseEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be the name of an environment variable')
    .optional(),
  /** SFTP and S3: how long to wait for the server to answer. */
  connectTimeoutSeconds: z.number().positive().optional(),
  /** S3: the bucket's region (default AWS_REGION, then us-east-1). */
  region: z.string().min(1).optional(),
  /** S3: endpoint of an S3-compatible server, e.g. `http://127.0.0.1:7480`. */
  endpoint: z.url().optional(),
  /** S3: bucket in the path rather than the host name. */
  forcePathStyle: z.boolean().optional(),
  /** S3: multipart part size (and threshold), MiB. */
  partSizeMiB: z.number().int().min(5).max(5120).optional(),
};

const SFTP_ONLY = ['knownHostsFile', 'hostKey', 'privateKeyFile', 'passphraseEnv'] as const;
const S3_ONLY = ['region', 'endpoint', 'forcePathStyle', 'partSizeMiB'] as const;

export const storeObjectSchema = z
  .object({ url: z.string().min(1), ...storeOptionsShape })
  .strict();
export type StoreObjectSpec = z.infer<typeof storeObjectSchema>;

/** A store as a config names it: a path or URL string, or `{ url, ...options }`. */
export const storeSpecSchema = z
  .union([z.string().min(1), storeObjectSchema])
  .superRefine((spec, ctx) => {
    try {
      parseStoreSpec(spec);
    } catch (err) {
      ctx.addIssue({
        code: 'custom',
        path: typeof spec === 'string' ? [] : ['url'],
        message: (err as Error).message,
      });
    }
  });
export type StoreSpecInput = z.infer<typeof storeSpecSchema>;

export type StoreSpec =
  | { kind: 'dir'; dir: string }
  | ({ kind: 'sftp' } & SftpStoreOptions)
  | ({ kind: 's3' } & S3StoreOptions);

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function refuseOptions(url: string, spec: StoreObjectSpec, keys: readonly string[]): void {
  const wrong = keys.filter((k) => (spec as Record<string, unknown>)[k] !== undefined);
  if (wrong.length > 0)
    throw new ConfigError(`${wrong.join(', ')} cannot be used with ${url.split(':')[0]}: URLs`);
}

/**
 * Normalises a store spec. Throws ConfigError (78) for a malformed URL, an unknown scheme, a
 * password in the URL, or an option of another kind of store.
 */
export function parseStoreSpec(input: StoreSpecInput): StoreSpec {
  const spec: StoreObjectSpec = typeof input === 'string' ? { url: input } : input;
  const text = spec.url;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    if (typeof input !== 'string')
      throw new ConfigError(`'${text}' is not a URL (sftp://, s3:// or file://)`);
    return { kind: 'dir', dir: text };
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`'${text}' is not a valid URL`);
  }
  if (url.password !== '') {
    throw new ConfigError(
      `the URL of ${url.protocol}//${url.hostname} holds a password; secrets never go in a URL`,
      {
        hint: 'use privateKeyFile (and passphraseEnv) for SFTP, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for S3',
      },
    );
  }
  if (url.search !== '' || url.hash !== '')
    throw new ConfigError(`'${text}': put options beside the URL ({ url, ... }), not in it`);
  const path = decodeURIComponent(url.pathname);
  switch (url.protocol) {
    case 'file:':
      refuseOptions(text, spec, [...SFTP_ONLY, ...S3_ONLY, 'connectTimeoutSeconds']);
      if (url.hostname !== '' && url.hostname !== 'localhost')
        throw new ConfigError(`'${text}': a file: URL names no host (file:///path)`);
      return { kind: 'dir', dir: path };
    case 'sftp:': {
      refuseOptions(text, spec, S3_ONLY);
      if (url.hostname === '') throw new ConfigError(`'${text}': no host`);
      if (path === '' || path === '/')
        throw new ConfigError(`'${text}': give the absolute directory on the server`);
      return {
        kind: 'sftp',
        host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port === '' ? 22 : Number(url.port),
        username: url.username === '' ? userInfo().username : decodeURIComponent(url.username),
        path: path.replace(/\/+$/, ''),
        knownHostsFile: spec.knownHostsFile,
        hostKey: spec.hostKey,
        privateKeyFile: spec.privateKeyFile,
        passphraseEnv: spec.passphraseEnv,
        connectTimeoutSeconds: spec.connectTimeoutSeconds,
      };
    }
    case 's3:': {
      refuseOptions(text, spec, SFTP_ONLY);
      if (url.username !== '') throw new ConfigError(`'${text}': an s3: URL holds no user name`);
      if (!BUCKET.test(url.hostname))
        throw new ConfigError(`'${text}': '${url.hostname}' is not a valid bucket name`);
      return {
        kind: 's3',
        bucket: url.hostname,
        prefix: path.replace(/^\/+|\/+$/g, ''),
        region: spec.region,
        endpoint: spec.endpoint,
        forcePathStyle: spec.forcePathStyle,
        partSizeMiB: spec.partSizeMiB,
        connectTimeoutSeconds: spec.connectTimeoutSeconds,
      };
    }
    default:
      throw new ConfigError(`'${text}': unknown store scheme ${url.protocol} (sftp, s3 or file)`);
  }
}

/** The store a destination names: its directory, or its URL with the options beside it. */
export function destinationStoreSpec(dest: {
  name: string;
  dir?: string;
  url?: string;
}): StoreSpecInput {
  const { name: _name, dir, ...spec } = dest;
  return dir ?? (spec as StoreObjectSpec);
}
