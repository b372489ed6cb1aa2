/** What every store shares: digests while bytes stream, the create-only rule, orphan parts. */
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeltaError, DeltasyncError, UnavailableError } from '../errors.js';
import { TMP_MARKER, isTemporaryName } from '../format/atomic-file.js';
import { createHasher } from '../format/checksum.js';
import { compareLogIds, logIdOfFile, logIdPrefix } from '../format/logid.js';
import {
  isManifestFileName,
  manifestFileName,
  parseManifest,
  type Manifest,
  type ManifestCheck,
} from '../format/manifest.js';
import type { DeltaStore, FileDigest, Leftover, StoreManifest } from './store.js';

/** A pass-through that sizes and hashes what flows through it. */
export interface DigestStream extends Transform {
  digest(): FileDigest;
}

/**
 * Sizes and hashes bytes on their way into a store; with `expect`, fails the stream (before the
 * writer can publish) when they are not the bytes the manifest describes.
 */
export async function digestStream(
  file: string,
  where: string,
  expect?: FileDigest,
): Promise<DigestStream> {
  const hasher = await createHasher();
  let bytes = 0;
  let result: FileDigest | undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      result = { bytes, xxhash64: hasher.digestHex() };
      done(expect && !sameDigest(result, expect) ? mismatch(file, where, result, expect) : null);
    },
  }) as DigestStream;
  stream.digest = () => {
    if (!result) throw new Error(`digest of ${file} asked before the stream ended`);
    return result;
  };
  return stream;
}

export function sameDigest(a: FileDigest, b: FileDigest): boolean {
  return a.bytes === b.bytes && a.xxhash64 === b.xxhash64;
}

export function mismatch(file: string, where: string, got: FileDigest, want: FileDigest) {
  return new DeltaError(
    `${file} read for ${where} is ${got.bytes} bytes with checksum ${got.xxhash64}; the manifest says ${want.bytes} bytes, ${want.xxhash64}`,
    { file, hint: 'the source copy is damaged: re-extract or restore it' },
  );
}

export function toReadable(source: Readable | Uint8Array | string): Readable {
  if (source instanceof Readable) return source;
  return Readable.from([typeof source === 'string' ? Buffer.from(source) : Buffer.from(source)]);
}

/** Size and hash of a stream's bytes. */
export async function digestOf(stream: Readable): Promise<FileDigest> {
  const hasher = await createHasher();
  let bytes = 0;
  for await (const chunk of stream) {
    hasher.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, xxhash64: hasher.digestHex() };
}

/** A whole (small) file of a store as text: manifests, acknowledgements. */
export async function readText(store: DeltaStore, file: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of await store.read(file)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The create-only rule, when `file` turned out to exist already: the same bytes are a success
 * (an earlier run published them and died before recording it), anything else is refused.
 */
export async function acceptExisting(
  store: DeltaStore,
  file: string,
  wanted: FileDigest,
): Promise<FileDigest> {
  const there = await digestOf(await store.read(file));
  if (sameDigest(there, wanted)) return there;
  throw new DeltaError(
    `${file} already exists at ${store.where} with different bytes (${there.bytes} bytes, ${there.xxhash64}; publishing ${wanted.bytes} bytes, ${wanted.xxhash64})`,
    {
      file,
      hint: 'two writers (or two jobs) publish the same delta name here: check the configs; remove the file by hand only if it is known bad',
    },
  );
}

export function missingFile(file: string, where: string, cause?: unknown): DeltaError {
  return new DeltaError(`${file} is missing from ${where}`, { file, cause });
}

/**
 * Parts (published delta files) whose delta has no manifest: what a writer killed between its
 * parts and its manifest leaves. `names` is every published name in the store.
 */
export function orphanParts(names: string[]): Leftover[] {
  const manifests = new Set(names.filter(isManifestFileName));
  return names
    .filter((n) => !isTemporaryName(n) && !isManifestFileName(n))
    .filter((n) => {
      const logId = logIdOfFile(n);
      return (
        logId !== null &&
        n.startsWith(`${logIdPrefix(logId)}.`) &&
        !manifests.has(manifestFileName(logId))
      );
    })
    .map((n) => ({ name: n, kind: 'orphan-part' as const, ref: n }));
}

/** Manifests among `names` with a logId greater than `after`, in logId order (numeric). */
export function manifestsIn(names: string[], after = '0'): StoreManifest[] {
  const found: StoreManifest[] = [];
  for (const file of names) {
    if (isTemporaryName(file) || !isManifestFileName(file)) continue;
    const logId = logIdOfFile(file)!;
    if (compareLogIds(logId, after) > 0) found.push({ file, logId });
  }
  return found.sort((a, b) => compareLogIds(a.logId, b.logId));
}

const UNAVAILABLE_CODES = new Set([
  'ENOSPC',
  'EDQUOT',
  'EACCES',
  'EPERM',
  'EROFS',
  'ENOENT',
  'EIO',
  'ENOTDIR',
  'EFBIG',
]);

/**
 * Names a local file-system failure for the operator: a full disk or a missing mount is a store
 * that cannot be written (69), not a bug. Our own errors pass through.
 */
export function fsError(err: unknown, what: string): unknown {
  if (err instanceof DeltasyncError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code && UNAVAILABLE_CODES.has(code)) {
    const hint =
      code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG'
        ? 'free some space (or raise the limit) and run again; nothing was published'
        : 'check that the directory exists, is mounted and is writable by this user';
    return new UnavailableError(`${what}: ${(err as Error).message}`, { hint, cause: err });
  }
  return err;
}

/** Leftovers of deltas after `after` (all of them for '0'; names without a logId are kept). */
export function afterLogId(leftovers: Leftover[], after: string): Leftover[] {
  if (after === '0') return leftovers;
  return leftovers.filter((l) => {
    const logId = logIdOfFile(l.name);
    return logId === null || compareLogIds(logId, after) > 0;
  });
}

/**
 * A store's read stream whose failures (a connection dropped mid-file) reach the reader as the
 * store's typed errors rather than a driver's.
 */
export function typedErrors(stream: Readable, describe: (err: unknown) => unknown): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  pipeline(stream, out).catch((err) => out.destroy(describe(err) as Error));
  return out;
}

/** Reads and validates a delta's manifest from a store (a missing one is a DeltaError, 65). */
export async function readManifestIn(
  store: DeltaStore,
  file: string,
  check: ManifestCheck | string = {},
): Promise<Manifest> {
  return parseManifest(await readText(store, file), file, check);
}

/**
 * What interrupted writers left among a file-based store's names (a directory, an SFTP folder):
 * temporary files (`.{final}.tmp-{pid}-{random}`) and parts without their manifest.
 */
export function leftoversAmong(names: string[], after: string): Leftover[] {
  const temporary: Leftover[] = names.filter(isTemporaryName).map((n) => ({
    name: n.slice(1, n.indexOf(TMP_MARKER)),
    kind: 'temporary',
    ref: n,
  }));
  return afterLogId([...temporary, ...orphanParts(names)], after);
}

/** Temporary files of one final name, among a file-based store's names. */
export function temporariesOf(names: string[], file: string): string[] {
  return names.filter((n) => n.startsWith(`.${file}${TMP_MARKER}`));
}
