/**
 * status: how far each step has got, from the state files and the stores alone, so it needs no
 * database password. On the source side it also reads the acknowledgements at each destination
 * (outbound connections only) and shows, per replica, what it applied and how far behind it is.
 */
import type { LoadedConfig } from '../config/load.js';
import { compareLogIds } from '../format/logid.js';
import { loadStepName, readState, type StepState } from '../format/state.js';
import { silentLogger } from '../log.js';
import { openStore, readManifestIn, type DeltaStore, type StoreSpecInput } from '../store/index.js';
import { destinationStoreSpec } from '../store/spec.js';
import { readAcks } from './ack.js';
import { formatPruneReport, retentionStatus, type PruneReport } from './prune/index.js';

export interface StepStatus {
  step: string;
  logId: string;
  updatedAt: string | null;
  delta?: string;
  /** Deltas this step has still to do, when the store it reads is configured. */
  waiting?: number;
  /** The newest of those, when there are any. */
  waitingUpTo?: string;
  /** load: delta columns the replica lacks and load skips (`load.missingColumns: 'skip'`). */
  skippedColumns?: Record<string, string[]>;
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
  steps: StepStatus[];
  /** One per replica acknowledgement found at the destinations (source side only). */
  replicas?: ReplicaStatus[];
  /** Stores that could not be read, with why. */
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

async function stepStatus(
  config: LoadedConfig,
  step: string,
  readsFrom: DeltaStore | undefined,
): Promise<StepStatus> {
  const state: StepState = await readState(config.stateDir, config.name, step);
  const status: StepStatus = { step, logId: state.logId, updatedAt: state.updatedAt };
  if (state.delta) status.delta = state.delta;
  if (state.skippedColumns) status.skippedColumns = state.skippedColumns;
  if (readsFrom) {
    const waiting = await readsFrom.listManifests(state.logId);
    status.waiting = waiting.length;
    if (waiting.length > 0) status.waitingUpTo = waiting.at(-1)!.logId;
  }
  return status;
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

export async function status(config: LoadedConfig): Promise<JobStatus> {
  const stores = new Stores();
  const steps: StepStatus[] = [];
  const problems: string[] = [];
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
  /** A step's status; when its store cannot be listed, the state alone and a problem. */
  const stepOf = async (step: string, what: string, store: DeltaStore | undefined) => {
    try {
      return await stepStatus(config, step, store);
    } catch (err) {
      if (!store) throw err;
      problems.push(`${what}: ${(err as Error).message}`);
      return stepStatus(config, step, undefined);
    }
  };
  try {
    let extracted = '0';
    if (config.source || config.outbox) {
      const s = await stepStatus(config, 'extract', undefined);
      extracted = s.logId;
      steps.push(s);
    }
    const outbox = await storeOf('outbox', config.outbox);
    const replicas: ReplicaStatus[] = [];
    for (const d of config.destinations ?? []) {
      steps.push(await stepOf(`copy.${d.name}`, 'outbox', outbox));
      try {
        const dest = await stores.get(destinationStoreSpec(d));
        for (const ack of await readAcks(dest, config.name, silentLogger()))
          replicas.push(await replicaStatus(config, outbox, extracted, ack, d.name));
      } catch (err) {
        problems.push(`destination ${d.name}: ${(err as Error).message}`);
      }
    }
    if (config.target || config.inbox)
      steps.push(
        await stepOf(loadStepName(config.replica), 'inbox', await storeOf('inbox', config.inbox)),
      );
    const result: JobStatus = { job: config.name, steps };
    if (config.destinations?.length) result.replicas = replicas;
    if (problems.length > 0) result.problems = problems;
    const retention = await retentionStatus(config);
    if (retention) result.retention = retention;
    return result;
  } finally {
    await stores.close();
  }
}

export function formatStatus(s: JobStatus): string {
  const rows = s.steps.map((st) => [
    st.step,
    st.logId,
    st.updatedAt ?? 'never',
    st.waiting === undefined
      ? '-'
      : st.waitingUpTo
        ? `${st.waiting} (up to ${st.waitingUpTo})`
        : '0',
  ]);
  const header = ['step', 'last logId', 'when', 'waiting'];
  const lines = [`job ${s.job}`, ...table(header, rows)];
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
