/**
 * Acknowledgements as the steps use them (format in src/format/ack.ts): load publishes one per
 * replica next to the deltas it reads; copy and status read them at each destination, so the
 * source side learns what each replica applied through its own outbound connections.
 */
import type { LoadedConfig } from '../config/load.js';
import { DeltasyncError, UnavailableError } from '../errors.js';
import {
  ackFileName,
  makeAck,
  parseAck,
  replicaOfAckFile,
  serializeAck,
  type Acknowledgement,
} from '../format/ack.js';
import type { Logger } from '../log.js';
import { readText, type DeltaStore } from '../store/index.js';

/** The replica name a load config acknowledges under (`replica`, `default` when unset). */
export function replicaName(config: LoadedConfig): string {
  return config.replica ?? 'default';
}

/**
 * Publishes `<job>.<replica>.ack.json` saying the replica has applied `logId`. Replaced on every
 * run (its time tells the source side the loader is alive). A store that refuses it is a 69:
 * the deltas stay applied, but the source side cannot see it and will not prune.
 */
export async function publishAck(
  store: DeltaStore,
  job: string,
  replica: string,
  logId: string,
): Promise<Acknowledgement> {
  const file = ackFileName(job, replica);
  const ack = makeAck(job, replica, logId);
  try {
    await store.replace(file, serializeAck(ack));
  } catch (err) {
    const what = `cannot publish the acknowledgement ${file} at ${store.where} (the deltas are applied)`;
    const hint =
      'let this host write (and replace) that file in the inbox; load publishes it on every run';
    if (err instanceof DeltasyncError) {
      err.message = `${what}: ${err.message}`;
      throw err;
    }
    throw new UnavailableError(`${what}: ${(err as Error).message}`, { hint, cause: err });
  }
  return ack;
}

/** Acknowledgements of `job` in a store, one per replica; an unreadable one is logged and skipped. */
export async function readAcks(
  store: DeltaStore,
  job: string,
  log: Logger,
): Promise<Acknowledgement[]> {
  const acks: Acknowledgement[] = [];
  for (const name of await store.list(`${job}.`)) {
    if (replicaOfAckFile(job, name) === null) continue;
    try {
      acks.push(parseAck(await readText(store, name), name));
    } catch (err) {
      log.warn(
        { file: name, err: (err as Error).message },
        'ignoring an unreadable acknowledgement',
      );
    }
  }
  return acks;
}
