/**
 * What the bench found, as one object (printed with --json) and as a table for people.
 */
import type { StepResult } from './run-step.js';

export interface CaseResult {
  /** Short id, e.g. `pg-insert`. */
  id: string;
  title: string;
  steps: StepResult[];
  /** Sum of the steps' wall-clock seconds. */
  seconds: number;
  /** The raw baseline this case is compared with, in seconds, and the ratio against it. */
  baseline?: { name: string; seconds: number; ratio: number };
  /** The ratio this case should stay within (GUIDE.md, or the bench's brief), if any. */
  bar?: number;
  /** True when the ratio is within the bar; undefined when there is no bar. */
  withinBar?: boolean;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface BenchReport {
  rows: number;
  columns: number;
  maxRowsPerPart: number;
  postgres: string;
  mariadb: string | null;
  cores: number;
  setup: { fillSeconds: number; updateSeconds?: number; exportTsvSeconds?: number };
  raw: { pgPipeSeconds: number; mysqlLoadDataSeconds?: number };
  cases: CaseResult[];
  checks: Check[];
  /** Every check passed and every case is within its bar. */
  ok: boolean;
}

export function makeCase(
  id: string,
  title: string,
  steps: StepResult[],
  baseline?: { name: string; seconds: number },
  bar?: number,
): CaseResult {
  const seconds = steps.reduce((sum, s) => sum + s.seconds, 0);
  const result: CaseResult = { id, title, steps, seconds };
  if (baseline) result.baseline = { ...baseline, ratio: seconds / baseline.seconds };
  if (bar !== undefined && result.baseline) {
    result.bar = bar;
    result.withinBar = result.baseline.ratio <= bar;
  }
  return result;
}

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function secs(s: number): string {
  return s.toFixed(2);
}

function rate(rows: number, seconds: number): string {
  return seconds > 0 ? int.format(rows / seconds) : '–';
}

function mb(value: number | null | undefined): string {
  return value === null || value === undefined ? '–' : `${int.format(value)} MB`;
}

function table(rows: string[][], rightAligned: number[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) =>
          rightAligned.includes(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!),
        )
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The report as a table for a terminal. */
export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(
    `deltasync bench: ${int.format(r.rows)} rows x ${r.columns} columns, ${int.format(r.maxRowsPerPart)} rows per part; ` +
      `PostgreSQL ${r.postgres}${r.mariadb ? `, MariaDB ${r.mariadb}` : ''}; ${r.cores} cores`,
  );
  const setup = [`source filled in ${secs(r.setup.fillSeconds)} s`];
  if (r.setup.updateSeconds !== undefined)
    setup.push(`every row updated in ${secs(r.setup.updateSeconds)} s`);
  if (r.setup.exportTsvSeconds !== undefined)
    setup.push(`TSV for LOAD DATA exported in ${secs(r.setup.exportTsvSeconds)} s`);
  out.push(`setup (not timed below): ${setup.join('; ')}`, '');

  // seconds: wall clock from spawn to exit; in-step: what the bin itself reports (no start-up);
  // node CPU: user + system seconds of the bin's process (the rest of the wall clock is the servers').
  const rows: string[][] = [
    ['case', 'step', 'seconds', 'in-step', 'node CPU', 'rows/s', 'peak RSS', 'vs raw', 'bar'],
  ];
  rows.push([
    'raw PG -> PG',
    'COPY TO STDOUT | COPY FROM STDIN',
    secs(r.raw.pgPipeSeconds),
    '',
    '',
    rate(r.rows, r.raw.pgPipeSeconds),
    '',
    '1.00x',
    '',
  ]);
  if (r.raw.mysqlLoadDataSeconds !== undefined) {
    const s = r.raw.mysqlLoadDataSeconds;
    rows.push([
      'raw -> MariaDB',
      'LOAD DATA LOCAL INFILE',
      secs(s),
      '',
      '',
      rate(r.rows, s),
      '',
      '1.00x',
      '',
    ]);
  }
  for (const c of r.cases) {
    const ratio = c.baseline ? `${c.baseline.ratio.toFixed(2)}x` : '';
    const verdict =
      c.bar === undefined ? '' : `<= ${c.bar.toFixed(1)}x ${c.withinBar ? 'ok' : 'MISSED'}`;
    const single = c.steps.length === 1;
    // Every step of a case moves all the rows (copy's summary counts files, not rows); a cycle
    // with nothing to do has no rate.
    const idle = c.id === 'idle';
    c.steps.forEach((step, i) => {
      rows.push([
        i === 0 ? c.title : '',
        step.step,
        secs(step.seconds),
        step.summary.seconds === undefined ? '' : secs(step.summary.seconds),
        step.cpuSeconds === null ? '' : secs(step.cpuSeconds),
        idle ? '' : rate(r.rows, step.seconds),
        mb(step.peakRssMb),
        single ? ratio : '',
        single ? verdict : '',
      ]);
    });
    if (!single) {
      const total = idle ? '' : rate(r.rows, c.seconds);
      const inStep = c.steps.reduce((sum, step) => sum + (step.summary.seconds ?? 0), 0);
      const cpu = c.steps.reduce((sum, step) => sum + (step.cpuSeconds ?? 0), 0);
      rows.push(['', 'total', secs(c.seconds), secs(inStep), secs(cpu), total, '', ratio, verdict]);
    }
  }
  out.push(table(rows, [2, 3, 4, 5, 6, 7]), '');

  const bytes = r.cases.find((c) => c.id === 'pg-insert')?.steps.find((s) => s.step === 'extract')
    ?.summary.bytes;
  if (bytes !== undefined) out.push(`insert delta: ${(bytes / 1048576).toFixed(1)} MiB on disk`);
  for (const check of r.checks)
    out.push(`check ${check.ok ? 'ok    ' : 'FAILED'} ${check.name}: ${check.detail}`);
  const missed = r.cases
    .filter((c) => c.withinBar === false)
    .map(
      (c) =>
        `${c.title} at ${c.baseline!.ratio.toFixed(2)}x of ${c.baseline!.name} (bar ${c.bar}x)`,
    );
  const failed = r.checks.filter((c) => !c.ok).map((c) => c.name);
  out.push('');
  if (r.ok) out.push('OK: every check passed and every case is within its bar');
  if (missed.length > 0) out.push(`MISSED BAR: ${missed.join('; ')}`);
  if (failed.length > 0) out.push(`FAILED CHECK: ${failed.join('; ')}`);
  return out.join('\n');
}
