/**
 * An S3 store (AWS S3, Ceph RADOS Gateway, MinIO…): `s3://bucket/prefix`, the prefix acting as a
 * folder and delta files keeping their docs/format.md names under it. Objects appear whole or not
 * at all, so there are no temporary names; an interrupted multipart upload is the only leftover.
 *
 * Every write is create-only (`If-None-Match: *`), and checked first where servers ignore that
 * header (radosgw on CompleteMultipartUpload); every upload carries Content-MD5, which every
 * server verifies. Credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID…), never the
 * URL.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { ConfigError, DeltasyncError, UnavailableError } from '../../errors.js';
import { logIdPrefix } from '../../format/logid.js';
import {
  acceptExisting,
  digestStream,
  manifestsIn,
  missingFile,
  orphanParts,
  toReadable,
  typedErrors,
} from '../common.js';
import type { DeltaStore, FileDigest, Leftover, PublishOptions, StoreManifest } from '../store.js';

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix, without a trailing slash ('' for the bucket's root). */
  prefix: string;
  region?: string;
  /** For S3-compatible servers: `http://127.0.0.1:7480`. */
  endpoint?: string;
  /** Bucket in the path rather than the host name (most S3-compatible servers want it). */
  forcePathStyle?: boolean;
  /** Size of multipart upload parts (and the threshold for using multipart), MiB; at least 5. */
  partSizeMiB?: number;
  connectTimeoutSeconds?: number;
}

const DEFAULT_PART_MIB = 16;

function md5(body: Buffer): string {
  return createHash('md5').update(body).digest('base64');
}

interface AwsError {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as AwsError).$metadata?.httpStatusCode;
}

export class S3Store implements DeltaStore {
  readonly where: string;
  private readonly client: S3Client;
  private readonly keyPrefix: string;
  private readonly partSize: number;

  constructor(private readonly options: S3StoreOptions) {
    this.keyPrefix = options.prefix === '' ? '' : `${options.prefix}/`;
    this.where = `s3://${options.bucket}/${options.prefix}`;
    this.partSize = Math.max(5, options.partSizeMiB ?? DEFAULT_PART_MIB) * 1024 * 1024;
    const timeout = (options.connectTimeoutSeconds ?? 20) * 1000;
    // The SDK warns on stderr, once per process, that future versions will need Node 22: cron
    // would mail that on every run. package.json pins what we support.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle,
      // radosgw (and other S3-compatible servers) reject aws-chunked bodies with 411; Content-MD5
      // is what every server verifies.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2,
      requestHandler: { connectionTimeout: timeout, requestTimeout: 0 },
    });
  }

  private key(file: string): string {
    return `${this.keyPrefix}${file}`;
  }

  /** Names an SDK failure for the operator: 403 is configuration, no answer is unavailability. */
  private fail(err: unknown, what: string): unknown {
    if (err instanceof DeltasyncError) return err;
    const status = statusOf(err);
    const name = (err as AwsError).name ?? '';
    const message = (err as Error).message || name;
    if (status === 403 || name === 'AccessDenied' || name === 'InvalidAccessKeyId') {
      return new ConfigError(
        `${this.where}: access denied to bucket ${this.options.bucket} (${what}): ${message}`,
        {
          hint: 'check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the instance role) and the bucket policy',
        },
      );
    }
    if (name === 'NoSuchBucket' || (status === 404 && what === 'check')) {
      return new ConfigError(`${this.where}: bucket ${this.options.bucket} does not exist`, {
        hint: 'create the bucket, or fix the URL',
      });
    }
    if (status === undefined || status >= 500) {
      return new UnavailableError(`${this.where}: ${what}: ${message}`, {
        hint: 'check that the endpoint is up and reachable from this host',
        cause: err,
      });
    }
    return new UnavailableError(`${this.where}: ${what}: ${status} ${message}`, { cause: err });
  }

  async check(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket })).catch((err) => {
      throw this.fail(err, 'check');
    });
  }

  /**
   * Published names under the prefix starting with `namePrefix` (no sub-folders), listing from
   * `startAfter` (a key) on.
   */
  private async names(startAfter?: string, namePrefix = ''): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client
        .send(
          new ListObjectsV2Command({
            Bucket: this.options.bucket,
            Prefix: this.keyPrefix + namePrefix,
            Delimiter: '/',
            StartAfter: token ? undefined : startAfter,
            ContinuationToken: token,
          }),
        )
        .catch((err) => {
          throw this.fail(err, 'cannot list');
        });
      for (const o of page.Contents ?? []) names.push(o.Key!.slice(this.keyPrefix.length));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return names;
  }

  async listManifests(after = '0'): Promise<StoreManifest[]> {
    // Every file of delta `after` starts with `logId<20 digits>.`; '/' sorts after '.', so the
    // listing starts right past them, and nothing new costs one small LIST.
    return manifestsIn(await this.names(this.key(`${logIdPrefix(after)}/`)), after);
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.names(undefined, prefix)).sort();
  }

  async read(file: string): Promise<Readable> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(file) }),
      );
      return typedErrors(out.Body as Readable, (err) => this.fail(err, `cannot read ${file}`));
    } catch (err) {
      if ((err as AwsError).name === 'NoSuchKey' || statusOf(err) === 404)
        throw missingFile(file, this.where, err);
      throw this.fail(err, `cannot read ${file}`);
    }
  }

  async stat(file: string): Promise<{ bytes: number } | null> {
    try {
      const out = await this.client.send(
        new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.key(file) }),
      );
      return { bytes: out.ContentLength ?? 0 };
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw this.fail(err, `cannot stat ${file}`);
    }
  }

  async publish(
    file: string,
    source: Readable | Uint8Array | string,
    options: PublishOptions = {},
  ): Promise<FileDigest> {
    const digest = await digestStream(file, `publishing at ${this.where}`, options.expect);
    let uploadId: string | undefined;
    let existed = false;
    try {
      await pipeline(toReadable(source), digest, async (hashed: AsyncIterable<unknown>) => {
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const parts: CompletedPart[] = [];
        for await (const chunk of hashed) {
          pending.push(chunk as Buffer);
          pendingBytes += (chunk as Buffer).length;
          if (pendingBytes < this.partSize) continue;
          const body = Buffer.concat(pending);
          pending = [];
          pendingBytes = 0;
          uploadId ??= await this.startUpload(file);
          parts.push(await this.uploadPart(file, uploadId, parts.length + 1, body));
        }
        // Everything has now streamed through the digest: the bytes are the expected ones.
        const rest = Buffer.concat(pending);
        if (uploadId === undefined) {
          existed = !(await this.putCreateOnly(file, rest));
          return;
        }
        if (rest.length > 0)
          parts.push(await this.uploadPart(file, uploadId, parts.length + 1, rest));
        existed = !(await this.completeCreateOnly(file, uploadId, parts));
        if (!existed) uploadId = undefined;
      });
    } catch (err) {
      if (uploadId) await this.abortUpload(file, uploadId).catch(() => undefined);
      throw this.fail(err, `cannot publish ${file}`);
    }
    if (existed) {
      if (uploadId) await this.abortUpload(file, uploadId).catch(() => undefined);
      return acceptExisting(this, file, digest.digest());
    }
    return digest.digest();
  }

  /** PutObject with If-None-Match: *; false when the object already exists. */
  private async putCreateOnly(file: string, body: Buffer): Promise<boolean> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: this.key(file),
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body),
          IfNoneMatch: '*',
        }),
      );
      return true;
    } catch (err) {
      if (statusOf(err) === 412 || statusOf(err) === 409) return false;
      throw err;
    }
  }

  private async startUpload(file: string): Promise<string> {
    const out = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.key(file) }),
    );
    return out.UploadId!;
  }

  private async uploadPart(
    file: string,
    uploadId: string,
    partNumber: number,
    body: Buffer,
  ): Promise<CompletedPart> {
    const out = await this.client.send(
      new UploadPartCommand({
        Bucket: this.options.bucket,
        Key: this.key(file),
        UploadId: uploadId,
        PartNumber: partNumber,
        Body: body,
        ContentLength: body.length,
        ContentMD5: md5(body),
      }),
    );
    return { ETag: out.ETag, PartNumber: partNumber };
  }

  /**
   * Completes an upload only if the object is absent. radosgw ignores If-None-Match on
   * CompleteMultipartUpload, so the object is looked for first (the step's lock keeps other
   * writers of this job out between the look and the completion); servers that honour the header
   * close that window too.
   */
  private async completeCreateOnly(
    file: string,
    uploadId: string,
    parts: CompletedPart[],
  ): Promise<boolean> {
    if (await this.stat(file)) return false;
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.options.bucket,
          Key: this.key(file),
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
          IfNoneMatch: '*',
        }),
      );
      return true;
    } catch (err) {
      if (statusOf(err) === 412 || statusOf(err) === 409) return false;
      throw err;
    }
  }

  private async abortUpload(file: string, uploadId: string): Promise<void> {
    await this.client.send(
      new AbortMultipartUploadCommand({
        Bucket: this.options.bucket,
        Key: this.key(file),
        UploadId: uploadId,
      }),
    );
  }

  async replace(file: string, data: Uint8Array | string): Promise<void> {
    const body = Buffer.from(data);
    await this.client
      .send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: this.key(file),
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body),
        }),
      )
      .catch((err) => {
        throw this.fail(err, `cannot write ${file}`);
      });
  }

  async remove(file: string): Promise<void> {
    await this.client
      .send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.key(file) }))
      .catch((err) => {
        if (statusOf(err) !== 404) throw this.fail(err, `cannot remove ${file}`);
      });
  }

  async leftovers(after = '0'): Promise<Leftover[]> {
    const uploads: Leftover[] = [];
    // As in listManifests: start past every file of delta `after`.
    const startAfter = this.key(`${logIdPrefix(after)}/`);
    let keyMarker: string | undefined = after === '0' ? undefined : startAfter;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.client
        .send(
          new ListMultipartUploadsCommand({
            Bucket: this.options.bucket,
            Prefix: this.keyPrefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        )
        .catch((err) => {
          throw this.fail(err, 'cannot list unfinished uploads');
        });
      for (const u of page.Uploads ?? []) {
        const name = u.Key!.slice(this.keyPrefix.length);
        if (!name.includes('/')) uploads.push({ name, kind: 'upload', ref: u.UploadId! });
      }
      if (!page.IsTruncated) break;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
    return [...uploads, ...orphanParts(await this.names(after === '0' ? undefined : startAfter))];
  }

  async removeLeftover(leftover: Leftover): Promise<void> {
    if (leftover.kind === 'upload') {
      await this.abortUpload(leftover.name, leftover.ref).catch((err) => {
        if (statusOf(err) !== 404)
          throw this.fail(err, `cannot abort the upload of ${leftover.name}`);
      });
    } else {
      await this.remove(leftover.ref);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
