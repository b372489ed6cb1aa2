/**
 * Removing deltas through any store in an order that is safe to crash in: the manifest first, so
 * that a delta stops being a delta before any of its parts goes (no reader ever finds a manifest
 * whose parts are gone), then its parts. Parts a killed prune left behind have no manifest and a
 * logId at or below what every reader has passed: the next prune removes them (`sweepOrphans`).
 */
import { faultPoint } from '../../faults.js';
import { compareLogIds, logIdOfFile } from '../../format/logid.js';
import type { Logger } from '../../log.js';
import type { DeltaStore } from '../../store/index.js';
import type { PlanDelta } from './plan.js';

/** Removes one delta: manifest, then parts. A file already gone is not an error. */
export async function removeDelta(store: DeltaStore, delta: PlanDelta): Promise<void> {
  await store.remove(delta.manifest);
  await faultPoint('prune:after-manifest');
  for (const [i, part] of delta.parts.entries()) {
    await store.remove(part);
    if (i === 0) await faultPoint('prune:mid-parts');
  }
}

/**
 * Removes parts whose manifest is gone, at or below `floor` (every reader has passed them, and
 * no writer writes there: writers only add deltas past their own position, which is above it).
 * Returns the names removed.
 */
export async function sweepOrphans(
  store: DeltaStore,
  floor: string,
  log: Logger,
  location: string,
): Promise<string[]> {
  if (floor === '0') return [];
  const removed: string[] = [];
  for (const leftover of await store.leftovers()) {
    if (leftover.kind !== 'orphan-part') continue;
    const logId = logIdOfFile(leftover.name);
    if (logId === null || compareLogIds(logId, floor) > 0) continue;
    log.warn(
      { location, file: leftover.name },
      'removing a part left by an interrupted prune (its manifest is gone)',
    );
    await store.removeLeftover(leftover);
    removed.push(leftover.name);
  }
  return removed;
}
