/**
 * Prometheus metrics in the text exposition format, one file per job and step:
 * `<metrics.textfileDir>/deltasync_<job>_<step>.prom`, for node_exporter's textfile collector.
 * Each step has its own file, so steps sharing one config (extract and copy on the source host)
 * never clobber each other; each file is written to a temporary name in the same directory and
 * renamed, so the collector never reads half a file (it skips the dot-prefixed temporary name).
 *
 * The job is labelled `deltasync_job`, not `job`: `job` is the label Prometheus gives every
 * scraped target, and a metric of its own named so would be renamed `exported_job` on scrape.
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../format/atomic-file.js';
import type { LastRun } from './last-run.js';
import type { StepStatus } from './status.js';

export function metricsFilePath(dir: string, job: string, step: string): string {
  return join(dir, `deltasync_${job}_${step}.prom`);
}

type Labels = Record<string, string>;

interface Sample {
  labels: Labels;
  value: number;
}

/** One metric family: its help line and the samples. */
interface Family {
  name: string;
  help: string;
  samples: Sample[];
}

/** Label values escaped as the text format asks: backslash, double quote and newline. */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatFamily(f: Family): string {
  const lines = [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} gauge`];
  for (const s of f.samples) {
    const labels = Object.entries(s.labels)
      .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
      .join(',');
    lines.push(`${f.name}{${labels}} ${Number.isFinite(s.value) ? s.value : 'NaN'}`);
  }
  return lines.join('\n');
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

/** The labels of a step's position: the destination of a copy, the replica of a load. */
function positionLabels(base: Labels, st: StepStatus): Labels {
  const [kind, name] = st.step.split('.', 2);
  if (kind === 'copy') return { ...base, destination: name! };
  if (kind === 'load') return { ...base, replica: name ?? 'default' };
  return base;
}

/**
 * The metrics of one run: the run's own (from its record) and, for extract, copy and load, where
 * the step stands (`positions`, from status): lag, waiting and retained deltas.
 */
export function formatMetrics(record: LastRun, command: string, positions: StepStatus[]): string {
  const base: Labels = { deltasync_job: record.job, step: command };
  const run = (value: number) => [{ labels: base, value }];
  const families: Family[] = [
    {
      name: 'deltasync_last_run_timestamp_seconds',
      help: 'When the last run of the step finished (Unix time).',
      samples: run(seconds(record.finished)),
    },
    {
      name: 'deltasync_last_success_timestamp_seconds',
      help: 'When the last successful run of the step finished (Unix time); 0 when none ever did.',
      samples: run(record.lastSuccess ? seconds(record.lastSuccess.finished) : 0),
    },
    {
      name: 'deltasync_last_exit_code',
      help: 'Exit code of the last run (0 done; README "Exit codes and what to do").',
      samples: run(record.exitCode),
    },
    {
      name: 'deltasync_last_run_duration_seconds',
      help: 'How long the last run took.',
      samples: run((Date.parse(record.finished) - Date.parse(record.started)) / 1000),
    },
    {
      name: 'deltasync_last_run_deltas',
      help: 'Deltas the last run wrote, copied or applied.',
      samples: run(record.deltas),
    },
    {
      name: 'deltasync_last_run_rows',
      help: 'Rows the last run wrote, copied or applied.',
      samples: run(record.rows),
    },
    {
      name: 'deltasync_last_run_bytes',
      help: 'Bytes of delta parts the last run wrote, copied or applied.',
      samples: run(record.bytes),
    },
  ];
  const per = (pick: (st: StepStatus) => number | undefined): Sample[] =>
    positions.flatMap((st) => {
      const value = pick(st);
      return value === undefined ? [] : [{ labels: positionLabels(base, st), value }];
    });
  families.push(
    {
      name: 'deltasync_lag_seconds',
      help: 'Seconds from the source state the step has carried through to now (README "Monitoring").',
      samples: per((st) => st.lagSeconds),
    },
    {
      name: 'deltasync_pending_deltas',
      help: 'Deltas waiting for the step (copy: not yet at the destination; load: not yet applied).',
      samples: per((st) => st.waiting),
    },
    {
      name: 'deltasync_retained_deltas',
      help: 'Deltas held in the store the step writes (extract: outbox) or reads (load: inbox).',
      samples: per((st) => st.retained),
    },
    {
      name: 'deltasync_gaps',
      help: 'Breaks in the chain of deltas waiting for load (each stops it with exit 65).',
      samples: per((st) => (st.step.startsWith('load') ? (st.gaps?.length ?? 0) : undefined)),
    },
  );
  return `${families
    .filter((f) => f.samples.length > 0)
    .map(formatFamily)
    .join('\n')}\n`;
}

/** Writes the run's metrics file atomically (temporary name and rename, in the same directory). */
export async function writeMetrics(
  dir: string,
  record: LastRun,
  command: string,
  positions: StepStatus[],
): Promise<string> {
  const path = metricsFilePath(dir, record.job, record.step);
  await writeFileAtomic(path, formatMetrics(record, command, positions));
  return path;
}
