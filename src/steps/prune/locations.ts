/**
 * The locations a config prunes, what each holds and who reads it. A source-side config (outbox
 * and destinations) prunes its outbox and each destination; a replica-side config (inbox) its
 * inbox. Readers' positions come from copy's state per destination, the acknowledgements the
 * replicas publish (src/format/ack.ts) and load's own state.
 */
import type { LoadedConfig } from '../../config/load.js';
import type { DestinationConfig } from '../../config/schema.js';
import type { Acknowledgement } from '../../format/ack.js';
import { compareLogIds } from '../../format/logid.js';
import { parseManifest, partsOf } from '../../format/manifest.js';
import { readState } from '../../format/state.js';
import type { Logger } from '../../log.js';
import { readText, type DeltaStore, type StoreSpecInput } from '../../store/index.js';
import { parseStoreSpec, type StoreSpec } from '../../store/spec.js';
import { readLoadState } from '../common.js';
import type { PlanDelta, ReaderPosition } from './plan.js';

/** Manifests are read a few at a time: on a remote store each is a round trip. */
const READ_AHEAD = 8;

/** Every delta of a store, from its manifests; a manifest that cannot be read is marked so. */
export async function deltasIn(store: DeltaStore, job: string, log: Logger): Promise<PlanDelta[]> {
  const manifests = await store.listManifests();
  const out: PlanDelta[] = [];
  for (let i = 0; i < manifests.length; i += READ_AHEAD) {
    const batch = manifests.slice(i, i + READ_AHEAD);
    out.push(
      ...(await Promise.all(
        batch.map(async ({ file, logId }): Promise<PlanDelta> => {
          try {
            const text = await readText(store, file);
            const m = parseManifest(text, file, job);
            const parts = partsOf(m);
            return {
              logId,
              fromLogId: m.fromLogId,
              manifest: file,
              createdAt: m.createdAt,
              parts: parts.map((p) => p.file),
              bytes: Buffer.byteLength(text) + parts.reduce((n, p) => n + p.bytes, 0),
              fullBase: m.fullBase === true,
            };
          } catch (err) {
            log.warn(
              { location: store.where, file, err: (err as Error).message },
              'cannot read a manifest: it and every later delta stay',
            );
            return {
              logId,
              fromLogId: '0',
              manifest: file,
              createdAt: '',
              parts: [],
              bytes: 0,
              fullBase: false,
              unreadable: true,
            };
          }
        }),
      )),
    );
  }
  return out;
}

/** The acknowledgements of `job` in a store (one reader shared with copy and status). */
export { readAcks as acksIn } from '../ack.js';

export function ackReader(ack: Acknowledgement): ReaderPosition {
  return { kind: 'replica', name: ack.replica, logId: ack.logId, since: ack.time };
}

/** One position per reader name and kind: the lowest (a replica acknowledging in two places). */
export function lowestPerReader(readers: ReaderPosition[]): ReaderPosition[] {
  const byName = new Map<string, ReaderPosition>();
  for (const r of readers) {
    const key = `${r.kind}:${r.name}`;
    const seen = byName.get(key);
    if (!seen || compareLogIds(r.logId, seen.logId) < 0) byName.set(key, r);
  }
  return [...byName.values()];
}

export async function copyReader(
  config: LoadedConfig,
  dest: DestinationConfig,
): Promise<ReaderPosition> {
  const s = await readState(config.stateDir, config.name, `copy.${dest.name}`);
  return { kind: 'destination', name: dest.name, logId: s.logId, since: s.updatedAt };
}

/** The replica name this config loads as (`default` unless the config names one). */
export function replicaName(config: LoadedConfig): string {
  return config.replica;
}

/**
 * load's own position on this host: its state file, which mirrors the record in the target (it
 * may lag it after a crash, which only keeps more).
 */
export async function loadReader(config: LoadedConfig): Promise<ReaderPosition> {
  const s = await readLoadState(config);
  return { kind: 'load', name: config.replica, logId: s.logId, since: s.updatedAt };
}

/** What a store spec resolves to, so that an inbox that is also a destination is pruned once. */
export function locationKey(spec: StoreSpec): string {
  return JSON.stringify(spec);
}

export function inboxSpec(config: LoadedConfig): StoreSpec {
  return parseStoreSpec(config.inbox as StoreSpecInput);
}

export function outboxSpec(config: LoadedConfig): StoreSpec {
  return parseStoreSpec(config.outbox as StoreSpecInput);
}
