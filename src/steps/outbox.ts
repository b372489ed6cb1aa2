/**
 * The outbox as extract and simulate write it. A directory outbox is written in place, as always
 * (parts, then the manifest, each atomically). A remote outbox (SFTP, S3) is written through a
 * staging directory under the state directory: the delta is written there whole, then published
 * to the store parts first, manifest last, each create-only, and the staged files removed.
 *
 * Recovery, before a run writes anything: complete deltas that an interrupted run published but
 * did not record are adopted, and what it left (temporary files, unfinished uploads, parts
 * without their manifest, staged files) is removed. Only under the extract lock.
 */
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { compareLogIds, logIdOfFile } from '../format/logid.js';
import { partsOf, readManifest } from '../format/manifest.js';
import { writeState, type StepState } from '../format/state.js';
import type { Logger } from '../log.js';
import { openStore, parseStoreSpec, readManifestIn, type DeltaStore } from '../store/index.js';
import { fileError } from './common.js';

export interface Outbox {
  store: DeltaStore;
  /** The local directory a DeltaWriter writes into: the outbox itself, or the staging directory. */
  dir: string;
  /** Makes a delta written in `dir` visible in the store (nothing to do for a directory outbox). */
  publish(manifestFile: string): Promise<void>;
  close(): Promise<void>;
}

/** Where a remote outbox's deltas are written before they are published. */
export function stagingDir(config: LoadedConfig): string {
  return join(config.stateDir, `${config.name}.outbox-staging`);
}

/**
 * Opens the job's outbox for writing. A directory outbox is created if missing (as extract always
 * has); a remote one must be there (69 otherwise), and its staging directory is emptied: under the
 * extract lock, anything in it was left by a dead run.
 */
export async function openOutbox(config: LoadedConfig): Promise<Outbox> {
  const spec = parseStoreSpec(config.outbox!);
  if (spec.kind === 'dir') {
    await mkdir(spec.dir, { recursive: true }).catch((err) => {
      throw fileError(err, `cannot create outbox ${spec.dir}`);
    });
    const store = await openStore(spec);
    return { store, dir: spec.dir, publish: async () => {}, close: () => store.close() };
  }
  const dir = stagingDir(config);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true }).catch((err) => {
    throw fileError(err, `cannot create the staging directory ${dir}`);
  });
  const store = await openStore(spec);
  try {
    await store.check();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return {
    store,
    dir,
    publish: (manifestFile) => publishStaged(dir, manifestFile, store),
    close: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

/**
 * Publishes a delta written in a local staging directory: parts first (each checked against the
 * manifest as it streams), the manifest last, each create-only; then removes the staged files.
 */
export async function publishStaged(
  staging: string,
  manifestFile: string,
  store: DeltaStore,
): Promise<void> {
  const manifest = await readManifest(join(staging, manifestFile));
  for (const part of partsOf(manifest)) {
    await store.publish(part.file, createReadStream(join(staging, part.file)), {
      expect: { bytes: part.bytes, xxhash64: part.xxhash64 },
    });
  }
  await store.publish(manifestFile, createReadStream(join(staging, manifestFile)));
  for (const file of [...partsOf(manifest).map((p) => p.file), manifestFile])
    await rm(join(staging, file), { force: true });
}

/**
 * Brings the extract state up to date with the outbox store: adopts complete deltas an
 * interrupted run published but did not record, then removes what interrupted writers left
 * after the state's logId.
 */
export async function recoverOutbox(
  config: LoadedConfig,
  log: Logger,
  outbox: Outbox,
  state: StepState,
): Promise<StepState> {
  const { store } = outbox;
  for (const entry of await store.listManifests(state.logId)) {
    const manifest = await readManifestIn(store, entry.file, config.name);
    if (manifest.fromLogId !== state.logId) break;
    log.warn({ delta: entry.file }, 'adopting a delta published by an interrupted run');
    state = {
      ...state,
      logId: manifest.toLogId,
      updatedAt: new Date().toISOString(),
      delta: entry.file,
      ...(manifest.cursors ? { cursors: manifest.cursors } : {}),
    };
    await writeState(config.stateDir, state);
  }
  for (const leftover of await store.leftovers()) {
    const logId = logIdOfFile(leftover.name);
    if (logId === null) continue;
    if (compareLogIds(logId, state.logId) <= 0) {
      // Every delta up to the state was published whole: a part there without its manifest was
      // left by a prune killed between the two (docs/format.md, "Deleted deltas").
      if (leftover.kind === 'orphan-part') {
        log.warn({ file: leftover.name }, 'removing a part left by an interrupted prune');
        await store.removeLeftover(leftover);
      }
      continue;
    }
    log.warn(
      { file: leftover.name, kind: leftover.kind },
      'removing a file left by an interrupted extract',
    );
    await store.removeLeftover(leftover);
  }
  return state;
}
