/**
 * status: how far each step has got, from the state files and the directories alone, so it
 * answers instantly and needs no database password.
 */
import { listManifests } from '../format/delta-dir.js';
import { loadStepName, readState, type StepState } from '../format/state.js';
import type { LoadedConfig } from '../config/load.js';
import { formatPruneReport, retentionStatus, type PruneReport } from './prune/index.js';

export interface StepStatus {
  step: string;
  logId: string;
  updatedAt: string | null;
  delta?: string;
  /** Deltas this step has still to do, when the directory it reads is configured. */
  waiting?: number;
  /** The newest of those, when there are any. */
  waitingUpTo?: string;
  /** load: delta columns the replica lacks and load skips (`load.missingColumns: 'skip'`). */
  skippedColumns?: Record<string, string[]>;
}

export interface JobStatus {
  job: string;
  steps: StepStatus[];
  /** With a `retention` section: per location, the deltas and bytes held and why. */
  retention?: PruneReport;
}

async function stepStatus(
  config: LoadedConfig,
  step: string,
  readsFrom: string | undefined,
): Promise<StepStatus> {
  const state: StepState = await readState(config.stateDir, config.name, step);
  const status: StepStatus = { step, logId: state.logId, updatedAt: state.updatedAt };
  if (state.delta) status.delta = state.delta;
  if (state.skippedColumns) status.skippedColumns = state.skippedColumns;
  if (readsFrom) {
    const waiting = await listManifests(readsFrom, state.logId);
    status.waiting = waiting.length;
    if (waiting.length > 0) status.waitingUpTo = waiting.at(-1)!.logId;
  }
  return status;
}

export async function status(config: LoadedConfig): Promise<JobStatus> {
  const steps: StepStatus[] = [];
  if (config.source || config.outbox) steps.push(await stepStatus(config, 'extract', undefined));
  for (const d of config.destinations ?? [])
    steps.push(await stepStatus(config, `copy.${d.name}`, config.outbox));
  if (config.target || config.inbox)
    steps.push(await stepStatus(config, loadStepName(config.replica), config.inbox));
  const retention = await retentionStatus(config);
  return { job: config.name, steps, ...(retention ? { retention } : {}) };
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
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const skipped = s.steps.flatMap((st) =>
    Object.entries(st.skippedColumns ?? {}).flatMap(([t, cs]) => cs.map((c) => `${t}.${c}`)),
  );
  const notes = skipped.length
    ? [`load skips columns the replica lacks: ${skipped.join(', ')} (load.missingColumns: skip)`]
    : [];
  const retention = s.retention
    ? [
        `retention (keepDeltas ${s.retention.rules.keepDeltas}, keepHours ${s.retention.rules.keepHours}):`,
        formatPruneReport(s.retention, 'the next prune removes'),
      ]
    : [];
  return [`job ${s.job}`, line(header), ...rows.map(line), ...notes, ...retention].join('\n');
}
