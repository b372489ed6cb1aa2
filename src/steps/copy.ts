/**
 * copy: pushes deltas from the outbox to each destination store (a directory or network disk, an
 * SFTP server, S3-compatible object storage). For each destination, deltas go in logId order:
 * every part is published create-only while its size and checksum are checked against the
 * manifest as it streams; the manifest goes last, so a loader never sees a delta before all its
 * parts. A destination stops at its first error; the others go on.
 *
 * Repair: each run also reads the acknowledgements at each destination, and every delta it copied
 * there that no replica has acknowledged yet is checked (presence and size of each part); a
 * missing or damaged part is copied again, so "run copy again" is always true.
 */
import type { DestinationConfig } from '../config/schema.js';
import { DeltaError } from '../errors.js';
import { faultPoint } from '../faults.js';
import type { Acknowledgement } from '../format/ack.js';
import { compareLogIds, logIdOfFile } from '../format/logid.js';
import { parseManifest, partsOf, type Manifest } from '../format/manifest.js';
import { readState, writeState } from '../format/state.js';
import { logSummary, type Logger } from '../log.js';
import { openStore, readText, type DeltaStore, type StoreManifest } from '../store/index.js';
import { destinationStoreSpec } from '../store/spec.js';
import { readAcks } from './ack.js';
import { elapsedSeconds, withStepLock, type StepContext } from './common.js';
import { pruneAfterStep } from './prune/index.js';

export interface DestinationResult {
  name: string;
  /** Manifest files copied, in order. */
  copied: string[];
  /** Manifest files of deltas found incomplete at the destination and completed again. */
  repaired: string[];
  /** Acknowledgements found at the destination, one per replica. */
  acks: Acknowledgement[];
  rows: number;
  bytes: number;
  error?: unknown;
}

export interface CopyResult {
  destinations: DestinationResult[];
  /** The deltas copied to at least one destination, each counted once. */
  deltas: number;
  /** Tables with rows or deletes in those deltas. */
  tables: number;
  /** Rows and deletes in those deltas, as their manifests count them. */
  rows: number;
  /** Bytes of their parts. */
  bytes: number;
}

/**
 * What a set of deltas holds, each counted once however many destinations received it, so that
 * copy's summary line reads like load's for the same deltas: tables with rows or deletes, rows
 * plus deletes, and part bytes.
 */
export function deltaTotals(manifests: Manifest[]): {
  tables: number;
  rows: number;
  bytes: number;
} {
  const tables = new Set<string>();
  let rows = 0;
  for (const m of manifests) {
    for (const t of m.tables) {
      const n = t.rows + (t.deletes?.rows ?? 0);
      if (n > 0) tables.add(t.name);
      rows += n;
    }
  }
  const bytes = manifests.reduce((n, m) => n + partsOf(m).reduce((b, p) => b + p.bytes, 0), 0);
  return { tables: tables.size, rows, bytes };
}

/** A delta of the outbox, read once per run and shared by every destination. */
interface OutboxDelta {
  file: string;
  logId: string;
  text: string;
  manifest: Manifest;
}

/** Labels an error with the destination, keeping its type (and so its exit code). */
function atDestination(err: unknown, dest: DestinationConfig): unknown {
  if (err instanceof Error && !err.message.startsWith('destination ')) {
    err.message = `destination ${dest.name}: ${err.message}`;
  }
  return err;
}

async function readOutboxDelta(
  outbox: DeltaStore,
  file: string,
  job: string,
): Promise<OutboxDelta> {
  const text = await readText(outbox, file);
  const manifest = parseManifest(text, file, job);
  return { file, logId: manifest.toLogId, text, manifest };
}

/** Publishes one part from the outbox to `dest`, checked against the manifest as it streams. */
async function copyPart(
  outbox: DeltaStore,
  dest: DeltaStore,
  part: { file: string; bytes: number; xxhash64: string },
): Promise<void> {
  const source = await outbox.read(part.file).catch((err) => {
    throw err instanceof DeltaError
      ? new DeltaError(`${part.file} is missing from the outbox`, { file: part.file })
      : err;
  });
  await dest.publish(part.file, source, {
    expect: { bytes: part.bytes, xxhash64: part.xxhash64 },
  });
}

/**
 * Copies one delta: parts first, manifest last. After a failure, the parts this run placed are
 * removed, unless the manifest is there (then they belong to a delta copied whole before).
 */
async function copyDelta(outbox: DeltaStore, dest: DeltaStore, delta: OutboxDelta): Promise<void> {
  const placed: string[] = [];
  try {
    for (const part of partsOf(delta.manifest)) {
      await copyPart(outbox, dest, part);
      placed.push(part.file);
      await faultPoint('copy:after-part');
    }
    await faultPoint('copy:before-manifest');
    await dest.publish(delta.file, delta.text);
  } catch (err) {
    const manifestThere = await dest.stat(delta.file).then(
      (s) => s !== null,
      () => true,
    );
    if (!manifestThere) await Promise.all(placed.map((f) => dest.remove(f).catch(() => undefined)));
    throw err;
  }
}

/**
 * Checks a delta copied earlier and not yet acknowledged: every part present with its size, and
 * the manifest. Copies again what is missing or damaged; true when something was.
 */
async function repairDelta(
  outbox: DeltaStore,
  dest: DeltaStore,
  delta: OutboxDelta,
  log: Logger,
  destName: string,
): Promise<boolean> {
  let repaired = false;
  // A manifest there that is not the outbox's was put there by someone else (a delta copied by
  // hand, another outbox): its parts are not ours to add to.
  const manifestThere = await dest.stat(delta.file);
  if (manifestThere && (await readText(dest, delta.file)) !== delta.text) {
    log.warn(
      { destination: destName, file: delta.file },
      'the manifest at the destination differs from the outbox copy; leaving that delta alone',
    );
    return false;
  }
  const parts = partsOf(delta.manifest);
  // Stats in parallel: on a remote store each is a round trip.
  const sizes = await Promise.all(parts.map((p) => dest.stat(p.file)));
  for (const [i, part] of parts.entries()) {
    const there = sizes[i]!;
    if (there?.bytes === part.bytes) continue;
    log.warn(
      { destination: destName, file: part.file, bytes: there?.bytes ?? null, expected: part.bytes },
      there
        ? 'part damaged at the destination: copying it again'
        : 'part missing at the destination: copying it again',
    );
    if (there) await dest.remove(part.file);
    await copyPart(outbox, dest, part);
    repaired = true;
  }
  if (!manifestThere) {
    log.warn(
      { destination: destName, file: delta.file },
      'manifest missing at the destination: copying it again',
    );
    await dest.publish(delta.file, delta.text);
    repaired = true;
  }
  return repaired;
}

/**
 * Removes what an interrupted copy left at a destination (temporary files, unfinished uploads,
 * parts without their manifest), only for deltas after the destination's state: under the copy
 * lock nothing else of this job writes them, and loaders never read them.
 */
async function removeLeftovers(dest: DeltaStore, after: string, log: Logger, destName: string) {
  for (const leftover of await dest.leftovers(after)) {
    if (logIdOfFile(leftover.name) === null) continue;
    log.warn(
      { destination: destName, file: leftover.name, kind: leftover.kind },
      'removing a file left by an interrupted copy',
    );
    await dest.removeLeftover(leftover);
  }
}

async function copyToDestination(
  ctx: StepContext,
  outbox: DeltaStore,
  pending: () => Promise<StoreManifest[]>,
  deltaAt: (file: string) => Promise<OutboxDelta>,
  destConfig: DestinationConfig,
): Promise<DestinationResult> {
  const { config, log } = ctx;
  const step = `copy.${destConfig.name}`;
  const result: DestinationResult = {
    name: destConfig.name,
    copied: [],
    repaired: [],
    acks: [],
    rows: 0,
    bytes: 0,
  };
  let dest: DeltaStore | undefined;
  try {
    dest = await openStore(destinationStoreSpec(destConfig));
    // A destination that is not there is a mount that failed, not a folder to create here.
    await dest.check();
    let state = await readState(config.stateDir, config.name, step);
    await removeLeftovers(dest, state.logId, log, destConfig.name);

    result.acks = await readAcks(dest, config.name, log);
    const acked = result.acks.map((a) => a.logId).sort(compareLogIds)[0] ?? '0';
    for (const m of await outbox.listManifests(acked)) {
      if (compareLogIds(m.logId, state.logId) > 0) break;
      const delta = await deltaAt(m.file);
      if (await repairDelta(outbox, dest, delta, log, destConfig.name))
        result.repaired.push(m.file);
    }

    for (const m of await pending()) {
      if (compareLogIds(m.logId, state.logId) <= 0) continue;
      const delta = await deltaAt(m.file);
      await copyDelta(outbox, dest, delta);
      state = {
        ...state,
        logId: delta.manifest.toLogId,
        updatedAt: new Date().toISOString(),
        delta: delta.file,
      };
      await faultPoint('copy:before-state');
      await writeState(config.stateDir, state);
      result.copied.push(delta.file);
      const totals = deltaTotals([delta.manifest]);
      result.rows += totals.rows;
      result.bytes += totals.bytes;
      log.debug({ destination: destConfig.name, delta: delta.file }, 'delta copied');
    }
  } catch (err) {
    result.error = atDestination(err, destConfig);
    log.error(
      { destination: destConfig.name, err: (err as Error).message },
      'copy to destination stopped',
    );
  } finally {
    await dest?.close().catch(() => undefined);
  }
  return result;
}

async function copyOnce(ctx: StepContext): Promise<CopyResult> {
  const { config } = ctx;
  const started = process.hrtime.bigint();
  const outbox = await openStore(config.outbox!);
  const results: DestinationResult[] = [];
  // Manifests are read once per run, however many destinations need them.
  const read = new Map<string, Promise<OutboxDelta>>();
  try {
    const deltaAt = (file: string) => {
      let p = read.get(file);
      if (!p) read.set(file, (p = readOutboxDelta(outbox, file, config.name)));
      return p;
    };
    const states = await Promise.all(
      config.destinations!.map((d) => readState(config.stateDir, config.name, `copy.${d.name}`)),
    );
    const oldest = states.map((s) => s.logId).sort(compareLogIds)[0] ?? '0';
    let listing: Promise<StoreManifest[]> | undefined;
    // One outbox listing past the destination furthest behind, made only when a destination asks.
    const pending = () => (listing ??= outbox.listManifests(oldest));
    for (const dest of config.destinations!) {
      results.push(await copyToDestination(ctx, outbox, pending, deltaAt, dest));
    }
  } finally {
    await outbox.close();
  }
  // A delta sent to two destinations is one delta of the source: counted once, like load does.
  const copied = [...new Set(results.flatMap((r) => r.copied))].sort();
  const totals = deltaTotals(
    await Promise.all(copied.map(async (file) => (await read.get(file)!).manifest)),
  );
  logSummary(ctx.log, {
    step: 'copy',
    delta: copied.at(-1) ?? null,
    deltas: copied.length,
    ...totals,
    seconds: elapsedSeconds(started),
  });
  const failed = results.find((r) => r.error !== undefined);
  if (failed) throw failed.error;
  return { destinations: results, deltas: copied.length, ...totals };
}

/** Runs copy under the job's copy lock. Throws the first destination's error after trying all. */
export function copy(ctx: StepContext): Promise<CopyResult> {
  return withStepLock(ctx.config, 'copy', async () => {
    const result = await copyOnce(ctx);
    // Only after a successful run: a destination that failed keeps everything for the next one.
    await pruneAfterStep(ctx, 'source');
    return result;
  });
}
