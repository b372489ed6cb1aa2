/**
 * status: per step, how far it has got (logId), its last run and last success (the run records),
 * what waits for it, gaps, and the lag in time from the source to what the step has done. With a
 * replica configured, load's position is read from the replica's own `deltasync_applied`: local
 * files can be lost or stale, the database cannot. On the source side it also reads the
 * acknowledgements at each destination (outbound connections only) and shows, per replica, what
 * it applied and how far behind it is. `status --check` judges the result (status-check.ts).
 */
import type { LoadedConfig } from '../config/load.js';
import { openTarget } from '../db/index.js';
import { describeError } from '../errors.js';
import { compareLogIds } from '../format/logid.js';
import { manifestFileName } from '../format/manifest.js';
import { loadStepName, readState } from '../format/state.js';
import { silentLogger } from '../log.js';
import {
  openStore,
  readManifestIn,
  type DeltaStore,
  type StoreManifest,
  type StoreSpecInput,
} from '../store/index.js';
import { destinationStoreSpec } from '../store/spec.js';
import { readAcks } from './ack.js';
import { readLastRun, type LastRun } from './last-run.js';
import { formatPruneReport, retentionStatus, type PruneReport } from './prune/index.js';
import { formatDuration } from './status-check.js';

export interface StepStatus {
  step: string;
  logId: string;
  /** load: where logId was read: the replica's `deltasync_applied` (the truth) or the state file. */
  logIdFrom?: 'replica' | 'state file';
  updatedAt: string | null;
  delta?: string;
  /** Deltas this step has still to do, when the store it reads is configured. */
  waiting?: number;
  /** The newest of those, when there are any. */
  waitingUpTo?: string;
  /** load: delta columns the replica lacks and load skips (`load.missingColumns: 'skip'`). */
  skippedColumns?: Record<string, string[]>;
  /** The step's last run as its record tells it (src/steps/last-run.ts); null when never. */
  lastRun: LastRun | null;
  /** When the last successful run finished (ISO 8601); null when none is recorded. */
  lastSuccess: string | null;
  /** The last run's one-line error, when it failed. */
  error?: string;
  /** load: breaks in the chain of waiting deltas, each a one-line description. */
  gaps?: string[];
  /**
   * Seconds from the source state this step's output reflects (`lagFrom`) to now: it keeps
   * growing while the step or anything before it is stalled. Absent when it cannot be told.
   */
  lagSeconds?: number;
  lagFrom?: string;
  /** Deltas held in the store this step writes (extract: the outbox) or reads (load: the inbox). */
  retained?: number;
  /** A remark on the lag: idle source, stalled pipeline, nothing applied yet. */
  note?: string;
}

/** A replica as its acknowledgement at a destination tells it. */
export interface ReplicaStatus {
  replica: string;
  /** The destination its acknowledgement was found at. */
  destination: string;
  /** The logId it has applied. */
  logId: string;
  /** When its loader last acknowledged (ISO 8601). */
  ackedAt: string;
  /** Deltas in the outbox it has not applied yet. */
  behindDeltas: number;
  /** The extracted logId minus the applied one (0 when up to date). */
  behindLogIds: string;
  /** Seconds since the oldest delta it has not applied was created; 0 when up to date. */
  behindSeconds?: number;
}

export interface JobStatus {
  job: string;
  /** When status looked (ISO 8601): lags are measured to this time. */
  checkedAt: string;
  /** `delta.heartbeatSeconds`, when extract writes heartbeats: a lag above it is not idleness. */
  heartbeatSeconds?: number;
  steps: StepStatus[];
  /** One per replica acknowledgement found at the destinations (source side only). */
  replicas?: ReplicaStatus[];
  /** Stores or databases that could not be read, with why. */
  problems?: string[];
  /** With a `retention` section: per location, the deltas and bytes held and why. */
  retention?: PruneReport;
}

/** The stores status opens, each once. */
class Stores {
  private readonly open = new Map<string, Promise<DeltaStore>>();

  get(spec: StoreSpecInput): Promise<DeltaStore> {
    const key = JSON.stringify(spec);
    let store = this.open.get(key);
    if (!store) this.open.set(key, (store = openStore(spec)));
    return store;
  }

  async close(): Promise<void> {
    for (const s of this.open.values()) await (await s.catch(() => null))?.close().catch(() => {});
  }
}

/** Gap checks read at most this many waiting manifests: enough for any sane backlog. */
const GAP_CHECK_LIMIT = 200;

function secondsSince(iso: string, now: number): number {
  return Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
}

/** The fields every step shows from its run record. */
function fromRecord(record: LastRun | null, error?: string) {
  const s: Pick<StepStatus, 'lastRun' | 'lastSuccess' | 'error'> = {
    lastRun: record,
    lastSuccess: record?.lastSuccess?.finished ?? null,
  };
  if (error !== undefined) s.error = error;
  else if (record && record.exitCode !== 0) s.error = record.message;
  return s;
}

/** When a manifest was created, or undefined when it cannot be read (pruned, unreadable). */
async function createdAt(
  store: DeltaStore,
  file: string,
  job: string,
): Promise<string | undefined> {
  return readManifestIn(store, file, job).then(
    (m) => m.createdAt,
    () => undefined,
  );
}

/** Reads the step's record; a record that cannot be read is a problem, not the end of status. */
async function recordOf(
  config: LoadedConfig,
  step: string,
  problems: string[],
): Promise<LastRun | null> {
  return readLastRun(config.stateDir, config.name, step).catch((err: Error) => {
    problems.push(`run record of ${step}: ${err.message}`);
    return null;
  });
}

/**
 * extract: its lag runs from the start of its last successful run (everything committed before
 * then is in a delta); without a record, from the creation of its last delta.
 */
async function extractStatus(
  config: LoadedConfig,
  outbox: DeltaStore | undefined,
  now: number,
  problems: string[],
): Promise<StepStatus> {
  const state = await readState(config.stateDir, config.name, 'extract');
  const record = await recordOf(config, 'extract', problems);
  const s: StepStatus = {
    step: 'extract',
    logId: state.logId,
    updatedAt: state.updatedAt,
    ...fromRecord(record),
  };
  if (state.delta) s.delta = state.delta;
  let from = record?.lastSuccess?.started;
  if (outbox) {
    try {
      s.retained = (await outbox.listManifests()).length;
      if (!from && state.delta) from = await createdAt(outbox, state.delta, config.name);
    } catch (err) {
      problems.push(`outbox: ${(err as Error).message}`);
    }
  }
  if (from) {
    s.lagFrom = from;
    s.lagSeconds = secondsSince(from, now);
  } else {
    s.note = 'extract has never run';
  }
  return s;
}

/** copy to one destination: its lag is the age of the oldest delta not copied there yet. */
async function copyStatus(
  config: LoadedConfig,
  dest: string,
  outbox: DeltaStore | undefined,
  record: LastRun | null,
  now: number,
  problems: string[],
): Promise<StepStatus> {
  const step = `copy.${dest}`;
  const state = await readState(config.stateDir, config.name, step);
  const s: StepStatus = {
    step,
    logId: state.logId,
    updatedAt: state.updatedAt,
    ...fromRecord(record),
  };
  // One copy run serves every destination; its error names the destination it stopped at.
  const other = /^destination ([A-Za-z0-9_-]+): /.exec(s.error ?? '')?.[1];
  if (other !== undefined && other !== dest) delete s.error;
  if (state.delta) s.delta = state.delta;
  if (!outbox) return s;
  try {
    const waiting = await outbox.listManifests(state.logId);
    s.waiting = waiting.length;
    s.lagSeconds = 0;
    if (waiting.length > 0) {
      s.waitingUpTo = waiting.at(-1)!.logId;
      const oldest = await createdAt(outbox, waiting[0]!.file, config.name);
      if (oldest) {
        s.lagFrom = oldest;
        s.lagSeconds = secondsSince(oldest, now);
      } else delete s.lagSeconds;
    }
  } catch (err) {
    problems.push(`outbox: ${(err as Error).message}`);
  }
  return s;
}

/** The replica's applied logId from its own `deltasync_applied`: the truth, unlike state files. */
async function appliedOnReplica(config: LoadedConfig): Promise<string> {
  const target = await openTarget(config.target!);
  try {
    return (await target.appliedLogId(config.name)) ?? '0';
  } finally {
    await target.close().catch(() => undefined);
  }
}

/** Breaks in the chain of waiting deltas (the first one stops load with exit 65). */
async function gapsIn(
  inbox: DeltaStore,
  waiting: StoreManifest[],
  applied: string,
  job: string,
): Promise<string[]> {
  const manifests = await Promise.all(
    waiting.slice(0, GAP_CHECK_LIMIT).map((m) => readManifestIn(inbox, m.file, job)),
  );
  const gaps: string[] = [];
  let previous = applied;
  manifests.forEach((m, i) => {
    // A replica that applied nothing starts at a full base, wherever its chain begins.
    if (m.fromLogId !== previous && !(previous === '0' && i === 0))
      gaps.push(
        `after logId ${previous} the next delta in the inbox, ${waiting[i]!.file}, starts at ${m.fromLogId}`,
      );
    previous = m.toLogId;
  });
  return gaps;
}

/**
 * load: the applied logId is read from the replica when one is configured. Its lag runs from the
 * creation of the delta it applied last: the replica holds the source as of then, so the lag
 * keeps growing when load stops, and when extract or copy stop, and (without heartbeats) when
 * the source is idle.
 */
async function loadStatus(
  config: LoadedConfig,
  inbox: DeltaStore | undefined,
  now: number,
  problems: string[],
): Promise<StepStatus> {
  const step = loadStepName(config.replica);
  const state = await readState(config.stateDir, config.name, step);
  const record = await recordOf(config, step, problems);
  const s: StepStatus = {
    step,
    logId: state.logId,
    logIdFrom: 'state file',
    updatedAt: state.updatedAt,
    ...fromRecord(record),
  };
  if (state.delta) s.delta = state.delta;
  if (state.skippedColumns) s.skippedColumns = state.skippedColumns;
  if (config.target) {
    try {
      s.logId = await appliedOnReplica(config);
      s.logIdFrom = 'replica';
      if (s.logId !== state.logId) delete s.delta;
    } catch (err) {
      problems.push(`replica (deltasync_applied): ${describeError(err)}`);
    }
  }
  if (!inbox) return s;
  try {
    s.retained = (await inbox.listManifests()).length;
    const waiting = await inbox.listManifests(s.logId);
    s.waiting = waiting.length;
    if (waiting.length > 0) {
      s.waitingUpTo = waiting.at(-1)!.logId;
      const gaps = await gapsIn(inbox, waiting, s.logId, config.name);
      if (gaps.length > 0) s.gaps = gaps;
    }
  } catch (err) {
    problems.push(`inbox: ${describeError(err)}`);
  }
  if (s.logId === '0') {
    s.note = 'the replica has applied nothing of this job yet';
    return s;
  }
  const from =
    (inbox && (await createdAt(inbox, manifestFileName(s.logId), config.name))) ??
    // Pruned already (keepDeltas 0): the state file's time of applying it is the best bound.
    (state.logId === s.logId ? (state.updatedAt ?? undefined) : undefined);
  if (from) {
    s.lagFrom = from;
    s.lagSeconds = secondsSince(from, now);
  }
  return s;
}

/** How far a replica that applied `logId` is behind the outbox and the extract state. */
async function replicaStatus(
  config: LoadedConfig,
  outbox: DeltaStore | undefined,
  extracted: string,
  ack: { replica: string; logId: string; time: string },
  destination: string,
): Promise<ReplicaStatus> {
  const behind =
    compareLogIds(extracted, ack.logId) > 0 ? BigInt(extracted) - BigInt(ack.logId) : 0n;
  const r: ReplicaStatus = {
    replica: ack.replica,
    destination,
    logId: ack.logId,
    ackedAt: ack.time,
    behindDeltas: 0,
    behindLogIds: behind.toString(),
  };
  if (!outbox) return r;
  const pending = await outbox.listManifests(ack.logId);
  r.behindDeltas = pending.length;
  r.behindSeconds = 0;
  if (pending.length > 0) {
    // One manifest read: the oldest delta the replica has not applied says how old its lag is.
    const oldest = await readManifestIn(outbox, pending[0]!.file, config.name);
    r.behindSeconds = Math.max(0, Math.round((Date.now() - Date.parse(oldest.createdAt)) / 1000));
  }
  return r;
}

/** A remark telling an idle source from a stalled pipeline, from the heartbeat when there is one. */
function idleOrStalled(s: StepStatus, heartbeat: number | undefined): string | undefined {
  if (s.lagSeconds === undefined || s.waiting) return undefined;
  if (heartbeat === undefined)
    return s.lagSeconds > 60
      ? 'no new delta: the source is idle, or extract or copy has stalled; delta.heartbeatSeconds tells them apart'
      : undefined;
  // Heartbeats keep an idle job's lag under about one heartbeat plus a cron interval or two.
  return s.lagSeconds > 2 * heartbeat + 120
    ? `no delta, not even a heartbeat (every ${heartbeat} s), for ${s.lagSeconds} s: extract or copy has stalled`
    : undefined;
}

export interface StatusOptions {
  /** Only this step's position (the metrics of a run): no acknowledgements, no retention. */
  only?: 'extract' | 'copy' | 'load';
}

export async function status(
  config: LoadedConfig,
  options: StatusOptions = {},
): Promise<JobStatus> {
  const wants = (step: 'extract' | 'copy' | 'load') => !options.only || options.only === step;
  const stores = new Stores();
  const steps: StepStatus[] = [];
  const problems: string[] = [];
  const now = Date.now();
  /** A store, or undefined (and a problem noted) when it cannot be opened. */
  const storeOf = async (what: string, spec: StoreSpecInput | undefined) => {
    if (spec === undefined) return undefined;
    try {
      return await stores.get(spec);
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
      return undefined;
    }
  };
  try {
    const outbox = options.only === 'load' ? undefined : await storeOf('outbox', config.outbox);
    let extracted = '0';
    if ((config.source || config.outbox) && wants('extract')) {
      const s = await extractStatus(config, outbox, now, problems);
      extracted = s.logId;
      steps.push(s);
    }
    const replicas: ReplicaStatus[] = [];
    const destinations = wants('copy') ? (config.destinations ?? []) : [];
    const copyRecord = destinations.length ? await recordOf(config, 'copy', problems) : null;
    for (const d of destinations) {
      steps.push(await copyStatus(config, d.name, outbox, copyRecord, now, problems));
      if (options.only) continue;
      try {
        const dest = await stores.get(destinationStoreSpec(d));
        for (const ack of await readAcks(dest, config.name, silentLogger()))
          replicas.push(await replicaStatus(config, outbox, extracted, ack, d.name));
      } catch (err) {
        problems.push(`destination ${d.name}: ${(err as Error).message}`);
      }
    }
    if ((config.target || config.inbox) && wants('load')) {
      const s = await loadStatus(config, await storeOf('inbox', config.inbox), now, problems);
      s.note ??= idleOrStalled(s, config.delta.heartbeatSeconds);
      steps.push(s);
    }
    const result: JobStatus = { job: config.name, checkedAt: new Date(now).toISOString(), steps };
    if (config.delta.heartbeatSeconds !== undefined)
      result.heartbeatSeconds = config.delta.heartbeatSeconds;
    if (destinations.length && !options.only) result.replicas = replicas;
    if (problems.length > 0) result.problems = problems;
    if (options.only) return result;
    const retention = await retentionStatus(config).catch((err: Error) => {
      problems.push(`retention: ${err.message}`);
      result.problems = problems;
      return null;
    });
    if (retention) result.retention = retention;
    return result;
  } finally {
    await stores.close();
  }
}

function formatLag(s: StepStatus): string {
  if (s.lagSeconds === undefined) return '-';
  return formatDuration(s.lagSeconds);
}

export function formatStatus(s: JobStatus): string {
  const rows = s.steps.map((st) => [
    st.step,
    st.logId,
    st.lastSuccess ?? 'never',
    st.lastRun ? `${st.lastRun.finished} (exit ${st.lastRun.exitCode})` : 'never',
    st.waiting === undefined
      ? '-'
      : st.waitingUpTo
        ? `${st.waiting} (up to ${st.waitingUpTo})`
        : '0',
    formatLag(st),
  ]);
  const header = ['step', 'last logId', 'last success', 'last run', 'waiting', 'lag'];
  const lines = [`job ${s.job}`, ...table(header, rows)];
  for (const st of s.steps) {
    if (st.error) lines.push(`${st.step} failed: ${st.error}`);
    for (const g of st.gaps ?? []) lines.push(`${st.step} gap: ${g}`);
    if (st.note) lines.push(`${st.step}: ${st.note}`);
    if (st.logIdFrom === 'replica')
      lines.push(`${st.step}: logId read from the replica's deltasync_applied`);
  }
  const skipped = s.steps.flatMap((st) =>
    Object.entries(st.skippedColumns ?? {}).flatMap(([t, cs]) => cs.map((c) => `${t}.${c}`)),
  );
  if (skipped.length > 0)
    lines.push(
      `load skips columns the replica lacks: ${skipped.join(', ')} (load.missingColumns: skip)`,
    );
  if (s.retention)
    lines.push(
      `retention (keepDeltas ${s.retention.rules.keepDeltas}, keepHours ${s.retention.rules.keepHours}):`,
      formatPruneReport(s.retention, 'the next prune removes'),
    );
  for (const r of s.replicas ?? []) {
    const lag =
      r.behindDeltas === 0 && r.behindLogIds === '0'
        ? 'up to date'
        : `behind by ${r.behindDeltas} deltas, ${r.behindLogIds} logIds${r.behindSeconds === undefined ? '' : `, ${r.behindSeconds} s`}`;
    lines.push(
      `replica ${r.replica} applied logId ${r.logId} (acknowledged ${r.ackedAt} at ${r.destination}), ${lag}`,
    );
  }
  for (const p of s.problems ?? []) lines.push(`cannot read ${p}`);
  return lines.join('\n');
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}
