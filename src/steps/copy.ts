/**
 * copy: pushes deltas from the outbox to each destination directory (a network disk, a folder
 * another host collects from). For each destination, deltas go in logId order: every part is
 * copied to a temporary name while its checksum is computed, checked against the manifest, then
 * renamed; the manifest goes last, so a loader never sees a delta before all its parts.
 * A destination stops at its first error; the others go on.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import type { DestinationConfig } from '../config/schema.js';
import { DeltaError, UnavailableError } from '../errors.js';
import { faultPoint } from '../faults.js';
import {
  isTemporaryName,
  publishTemporary,
  temporaryPathFor,
  writeFileAtomic,
} from '../format/atomic-file.js';
import { createHasher, hashFile } from '../format/checksum.js';
import { listManifests } from '../format/delta-dir.js';
import { compareLogIds, logIdOfFile } from '../format/logid.js';
import { parseManifest, partsOf, type ManifestPart } from '../format/manifest.js';
import { readState, writeState } from '../format/state.js';
import { logSummary, type Logger } from '../log.js';
import { elapsedSeconds, fileError, withStepLock, type StepContext } from './common.js';

export interface DestinationResult {
  name: string;
  /** Manifest files copied, in order. */
  copied: string[];
  rows: number;
  bytes: number;
  error?: unknown;
}

export interface CopyResult {
  destinations: DestinationResult[];
  deltas: number;
  bytes: number;
}

function damaged(
  part: ManifestPart,
  where: string,
  got: { bytes: number; xxhash64: string },
): DeltaError {
  return new DeltaError(
    `${part.file} ${where} is ${got.bytes} bytes with checksum ${got.xxhash64}; the manifest says ${part.bytes} bytes, ${part.xxhash64}`,
    {
      file: part.file,
      hint:
        where === 'in the outbox'
          ? 'the outbox copy is damaged: re-extract or restore it'
          : 'the destination disk wrote something else: check it, then run copy again',
    },
  );
}

/**
 * Copies one part to a temporary name, proving twice that the bytes are the ones the manifest
 * describes: as they are read from the outbox, and as they read back from the destination
 * before the rename publishes them.
 */
async function copyPart(outbox: string, dir: string, part: ManifestPart): Promise<void> {
  const hasher = await createHasher();
  let bytes = 0;
  const verify = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      const xxhash64 = hasher.digestHex();
      done(
        bytes !== part.bytes || xxhash64 !== part.xxhash64
          ? damaged(part, 'in the outbox', { bytes, xxhash64 })
          : undefined,
      );
    },
  });
  const finalPath = join(dir, part.file);
  const tmp = temporaryPathFor(finalPath);
  try {
    const source = createReadStream(join(outbox, part.file), { highWaterMark: 1 << 20 });
    await pipeline(source, verify, createWriteStream(tmp, { flags: 'wx', mode: 0o644 })).catch(
      (err) => {
        if (
          (err as NodeJS.ErrnoException).code === 'ENOENT' &&
          (err as NodeJS.ErrnoException).path === join(outbox, part.file)
        ) {
          throw new DeltaError(`${part.file} is missing from the outbox`, { file: part.file });
        }
        throw err;
      },
    );
    const written = await hashFile(tmp);
    if (written.bytes !== part.bytes || written.xxhash64 !== part.xxhash64)
      throw damaged(part, `at ${dir}`, written);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await publishTemporary(tmp, finalPath);
}

/**
 * Removes the temporary files an interrupted copy (killed, out of space) left at a destination.
 * Only those of deltas after the destination's state: under the copy lock nothing else of this
 * job writes them, and loaders never read temporary names.
 */
async function removeLeftovers(dest: DestinationConfig, after: string, log: Logger): Promise<void> {
  for (const name of await readdir(dest.dir)) {
    if (!isTemporaryName(name)) continue;
    const logId = logIdOfFile(name.replace(/^\./, ''));
    if (logId === null || compareLogIds(logId, after) <= 0) continue;
    log.warn({ destination: dest.name, file: name }, 'removing a file left by an interrupted copy');
    await rm(join(dest.dir, name), { force: true });
  }
}

/**
 * After a failed copy of a delta, removes the parts this run placed at the destination, so that
 * nobody finds half a delta there. Not when its manifest is there (or may be): then the delta was
 * copied whole before, a state write was lost, and the parts (the same bytes) belong to it.
 */
async function removeHalfCopied(dir: string, manifestFile: string, parts: string[]): Promise<void> {
  const manifestThere = await stat(join(dir, manifestFile)).then(
    () => true,
    (err: NodeJS.ErrnoException) => err.code !== 'ENOENT',
  );
  if (manifestThere) return;
  await Promise.all(parts.map((f) => rm(join(dir, f), { force: true }).catch(() => undefined)));
}

async function copyToDestination(
  ctx: StepContext,
  dest: DestinationConfig,
): Promise<DestinationResult> {
  const { config, log } = ctx;
  const outbox = config.outbox!;
  const step = `copy.${dest.name}`;
  const result: DestinationResult = { name: dest.name, copied: [], rows: 0, bytes: 0 };
  try {
    // A destination that is not there is a mount that failed, not a folder to create here.
    const s = await stat(dest.dir).catch(() => null);
    if (!s?.isDirectory()) {
      throw new UnavailableError(`destination ${dest.name}: ${dest.dir} is not a directory`, {
        hint: 'check that the network disk is mounted; copy does not create destination directories',
      });
    }
    let state = await readState(config.stateDir, config.name, step);
    await removeLeftovers(dest, state.logId, log).catch((err) => {
      throw fileError(err, `destination ${dest.name}: cannot clean ${dest.dir}`);
    });
    for (const entry of await listManifests(outbox, state.logId)) {
      const text = await readFile(entry.path, 'utf8');
      const manifest = parseManifest(text, entry.file, config.name);
      const placed: string[] = [];
      try {
        for (const part of partsOf(manifest)) {
          await copyPart(outbox, dest.dir, part);
          placed.push(part.file);
          await faultPoint('copy:after-part');
        }
        await faultPoint('copy:before-manifest');
        await writeFileAtomic(join(dest.dir, entry.file), text);
      } catch (err) {
        await removeHalfCopied(dest.dir, entry.file, placed);
        throw fileError(err, `destination ${dest.name}: cannot copy ${entry.file} to ${dest.dir}`);
      }
      state = {
        ...state,
        logId: manifest.toLogId,
        updatedAt: new Date().toISOString(),
        delta: entry.file,
      };
      await faultPoint('copy:before-state');
      await writeState(config.stateDir, state);
      result.copied.push(entry.file);
      result.rows += manifest.tables.reduce((n, t) => n + t.rows, 0);
      result.bytes += partsOf(manifest).reduce((n, p) => n + p.bytes, 0);
      log.debug({ destination: dest.name, delta: entry.file }, 'delta copied');
    }
  } catch (err) {
    result.error = err;
    log.error(
      { destination: dest.name, err: (err as Error).message },
      'copy to destination stopped',
    );
  }
  return result;
}

async function copyOnce(ctx: StepContext): Promise<CopyResult> {
  const started = process.hrtime.bigint();
  const results: DestinationResult[] = [];
  for (const dest of ctx.config.destinations!) results.push(await copyToDestination(ctx, dest));
  const copied = new Set(results.flatMap((r) => r.copied));
  const bytes = results.reduce((n, r) => n + r.bytes, 0);
  logSummary(ctx.log, {
    step: 'copy',
    delta: [...copied].sort().at(-1) ?? null,
    deltas: copied.size,
    tables: 0,
    rows: results.reduce((n, r) => n + r.rows, 0),
    bytes,
    seconds: elapsedSeconds(started),
  });
  const failed = results.find((r) => r.error !== undefined);
  if (failed) throw failed.error;
  return { destinations: results, deltas: copied.size, bytes };
}

/** Runs copy under the job's copy lock. Throws the first destination's error after trying all. */
export function copy(ctx: StepContext): Promise<CopyResult> {
  return withStepLock(ctx.config, 'copy', () => copyOnce(ctx));
}
