/**
 * prune: removes the deltas every reader has moved past, from the outbox and each destination (a
 * source-side config) or the inbox (a replica-side config), through any store; the rules are in
 * plan.ts, the crash-safe order in remove.ts. `--dry-run` removes nothing and says what would go
 * and why the rest stays. Runs under the job's prune lock; copy runs it at its end when the config
 * has a `retention` section.
 */
import type { LoadedConfig } from '../../config/load.js';
import { LockHeldError } from '../../errors.js';
import { logSummary, silentLogger, type Logger } from '../../log.js';
import { openStore, type DeltaStore } from '../../store/index.js';
import { destinationStoreSpec, parseStoreSpec } from '../../store/spec.js';
import { elapsedSeconds, withStepLock, type StepContext } from '../common.js';
import {
  ackReader,
  acksIn,
  copyReader,
  deltasIn,
  inboxSpec,
  loadReader,
  locationKey,
  lowestPerReader,
  outboxSpec,
  replicaName,
} from './locations.js';
import {
  describeHolding,
  planPrune,
  type Holding,
  type PlanDelta,
  type ReaderPosition,
  type RetentionRules,
} from './plan.js';
import { removeDelta, sweepOrphans } from './remove.js';

export { describeHolding, planPrune } from './plan.js';
export type { Holding, PlanDelta, PrunePlan, ReaderPosition, RetentionRules } from './plan.js';

/** Defaults when a config has no `retention` section (`deltasync prune` still works). */
export const DEFAULT_RETENTION = { keepDeltas: 10, keepHours: 24, changelog: false };

export function retentionRules(config: LoadedConfig): RetentionRules & { changelog: boolean } {
  return config.retention ?? DEFAULT_RETENTION;
}

export interface LocationReport {
  /** 'outbox', 'inbox', 'destination <name>' (or 'destination <name> (inbox)'). */
  name: string;
  where: string;
  readers: ReaderPosition[];
  /** Deltas and bytes there before this run. */
  deltas: number;
  bytes: number;
  /** Manifests removed (or, in a dry run, that would be). */
  removed: string[];
  removedBytes: number;
  /** Parts of earlier interrupted prunes removed. */
  orphans: string[];
  held: Holding[];
  /** One line per holding, as status and --dry-run print them. */
  reasons: string[];
}

/**
 * Which locations a run prunes: `source` the outbox and destinations (after extract and copy),
 * `replica` the inbox (after load), `all` whatever the config names (`deltasync prune`).
 */
export type PruneScope = 'all' | 'source' | 'replica';

export interface PruneReport {
  dryRun: boolean;
  rules: RetentionRules;
  locations: LocationReport[];
}

interface Location {
  name: string;
  store: DeltaStore;
  readers: ReaderPosition[];
}

/** Opens every location the config prunes and finds its readers. */
async function locationsOf(
  config: LoadedConfig,
  log: Logger,
  opened: DeltaStore[],
  scope: PruneScope,
): Promise<Location[]> {
  const open = async (spec: Parameters<typeof openStore>[0]) => {
    const store = await openStore(spec);
    opened.push(store);
    await store.check();
    return store;
  };
  const byKey = new Map<string, Location>();
  const locations: Location[] = [];
  const source = scope !== 'replica' && config.outbox !== undefined;
  const destinations = source ? (config.destinations ?? []) : [];
  const outboxReaders: ReaderPosition[] = [];
  for (const dest of destinations) {
    const spec = parseStoreSpec(destinationStoreSpec(dest));
    const store = await open(spec);
    const acks = (await acksIn(store, config.name, log)).map(ackReader);
    const copied = await copyReader(config, dest);
    outboxReaders.push(copied, ...acks);
    // Without an acknowledgement nothing is known of what the replicas there applied.
    const location = {
      name: `destination ${dest.name}`,
      store,
      readers: acks.length > 0 ? [...acks, copied] : [],
    };
    byKey.set(locationKey(spec), location);
    locations.push(location);
  }
  if (source) {
    locations.unshift({
      name: 'outbox',
      store: await open(outboxSpec(config)),
      readers: lowestPerReader(outboxReaders),
    });
  }
  if (scope !== 'source' && config.inbox && config.target) {
    const spec = inboxSpec(config);
    const own = await loadReader(config);
    const shared = byKey.get(locationKey(spec));
    if (shared) {
      // The inbox is also a destination of this config: one location, every reader of both.
      shared.name += ' (inbox)';
      shared.readers = lowestPerReader([...shared.readers, own]);
      if (!shared.readers.some((r) => r.kind === 'destination')) {
        shared.readers.push(await copyReader(config, destinationOf(config, shared.name)!));
      }
    } else {
      const store = await open(spec);
      const others = (await acksIn(store, config.name, log))
        .filter((a) => a.replica !== replicaName(config))
        .map(ackReader);
      locations.push({ name: 'inbox', store, readers: lowestPerReader([own, ...others]) });
    }
  }
  return locations;
}

function destinationOf(config: LoadedConfig, locationName: string) {
  return config.destinations?.find((d) => locationName === `destination ${d.name} (inbox)`);
}

async function pruneLocation(
  location: Location,
  config: LoadedConfig,
  log: Logger,
  dryRun: boolean,
  now: Date,
): Promise<LocationReport> {
  const { store } = location;
  const deltas = await deltasIn(store, config.name, log);
  const plan = planPrune(deltas, location.readers, retentionRules(config), now);
  const removed: PlanDelta[] = [];
  let orphans: string[] = [];
  if (dryRun) {
    removed.push(...plan.remove);
  } else {
    for (const delta of plan.remove) {
      await removeDelta(store, delta);
      removed.push(delta);
      log.debug({ location: location.name, delta: delta.manifest }, 'delta pruned');
    }
    orphans = await sweepOrphans(store, plan.floor, log, location.name);
  }
  return {
    name: location.name,
    where: store.where,
    readers: location.readers,
    deltas: deltas.length,
    bytes: deltas.reduce((n, d) => n + d.bytes, 0),
    removed: removed.map((d) => d.manifest),
    removedBytes: removed.reduce((n, d) => n + d.bytes, 0),
    orphans,
    held: plan.held,
    reasons: plan.held.map((h) => describeHolding(h, now)),
  };
}

/** Plans (and unless `dryRun`, carries out) the prune of every location, without the lock. */
async function pruneLocations(
  config: LoadedConfig,
  log: Logger,
  dryRun: boolean,
  scope: PruneScope = 'all',
): Promise<PruneReport> {
  const now = new Date();
  const opened: DeltaStore[] = [];
  const report: PruneReport = { dryRun, rules: retentionRules(config), locations: [] };
  try {
    for (const location of await locationsOf(config, log, opened, scope)) {
      report.locations.push(await pruneLocation(location, config, log, dryRun, now));
    }
  } finally {
    await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  }
  return report;
}

async function pruneOnce(
  ctx: StepContext,
  dryRun: boolean,
  scope: PruneScope,
): Promise<PruneReport> {
  const started = process.hrtime.bigint();
  const report = await pruneLocations(ctx.config, ctx.log, dryRun, scope);
  const removed = report.locations.flatMap((l) => l.removed);
  logSummary(ctx.log, {
    step: dryRun ? 'prune --dry-run' : 'prune',
    delta: removed.sort().at(-1) ?? null,
    deltas: removed.length,
    tables: 0,
    rows: 0,
    bytes: report.locations.reduce((n, l) => n + l.removedBytes, 0),
    seconds: elapsedSeconds(started),
  });
  return report;
}

/**
 * What each location holds and why, for `status`: a dry run without the lock and without a
 * summary line. Null when the config has no `retention` section.
 */
export async function retentionStatus(config: LoadedConfig): Promise<PruneReport | null> {
  if (!config.retention || !prunesSomething(config)) return null;
  return pruneLocations(config, silentLogger(), true);
}

/** What a config prunes: a source side (outbox) or a replica side (inbox and target). */
export function prunesSomething(config: LoadedConfig): boolean {
  return Boolean(config.outbox || (config.inbox && config.target));
}

/** Runs prune under the job's prune lock. */
export function prune(
  ctx: StepContext,
  options: { dryRun?: boolean; scope?: PruneScope } = {},
): Promise<PruneReport> {
  return withStepLock(ctx.config, 'prune', () =>
    pruneOnce(ctx, options.dryRun ?? false, options.scope ?? 'all'),
  );
}

/**
 * The automatic prune at the end of a successful step, when the config has a `retention`
 * section. A prune already running elsewhere is left to finish; any other failure is the step's.
 */
export async function pruneAfterStep(
  ctx: StepContext,
  scope: Exclude<PruneScope, 'all'>,
): Promise<PruneReport | null> {
  if (!ctx.config.retention) return null;
  if (scope === 'source' ? !ctx.config.outbox : !(ctx.config.inbox && ctx.config.target))
    return null;
  try {
    return await prune(ctx, { scope });
  } catch (err) {
    if (err instanceof LockHeldError) {
      ctx.log.debug('another prune is running: leaving it to it');
      return null;
    }
    throw err;
  }
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** The human form of a report (`prune --dry-run`, `prune` on a terminal, and `status`). */
export function formatPruneReport(
  report: PruneReport,
  verb = report.dryRun ? 'would remove' : 'removed',
): string {
  const lines: string[] = [];
  for (const l of report.locations) {
    lines.push(`${l.name} (${l.where}): ${l.deltas} deltas, ${formatBytes(l.bytes)}`);
    if (l.removed.length > 0) {
      lines.push(
        `  ${verb} ${l.removed.length} deltas (${formatBytes(l.removedBytes)}): ${l.removed[0]} … ${l.removed.at(-1)}`,
      );
    } else {
      lines.push(`  ${verb} nothing`);
    }
    if (l.orphans.length > 0)
      lines.push(`  removed ${l.orphans.length} parts left by an interrupted prune`);
    for (const reason of l.reasons) lines.push(`  ${reason}`);
  }
  return lines.join('\n');
}
