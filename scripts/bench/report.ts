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

/** One store's figures in the store bench: copying a delta there, and loading it from there. */
export interface StoreCase {
  store: string;
  /** Where the delta went (the store's URL), or null when the store was skipped. */
  where: string | null;
  /** Why the store was skipped (its service is not running); the steps are then missing. */
  skipped?: string;
  /** The error that stopped this store's copy, load or check. */
  failed?: string;
  copy?: StepResult;
  load?: StepResult;
  /** The replica loaded from this store has the source's rows and values. */
  same?: boolean;
}

export interface StoreReport {
  rows: number;
  columns: number;
  maxRowsPerPart: number;
  postgres: string;
  cores: number;
  setup: { fillSeconds: number };
  /** The one extract all stores share, into a local outbox. */
  extract: StepResult;
  /** Bytes of the delta's parts (what each copy moves and each load reads). */
  bytes: number;
  stores: StoreCase[];
  ok: boolean;
}

function mbPerSecond(bytes: number, seconds: number): string {
  return seconds > 0 ? (bytes / 1048576 / seconds).toFixed(1) : '–';
}

/** The store bench's report as a table for a terminal. */
export function formatStoreReport(r: StoreReport): string {
  const out: string[] = [];
  const size = r.bytes / 1048576;
  out.push(
    `deltasync store bench: ${int.format(r.rows)} rows x ${r.columns} columns, ${int.format(r.maxRowsPerPart)} rows per part, ` +
      `a ${size.toFixed(1)} MiB delta; PostgreSQL ${r.postgres}; ${r.cores} cores`,
    `setup (not timed below): source filled in ${secs(r.setup.fillSeconds)} s; ` +
      `extract into a local outbox ${secs(r.extract.seconds)} s (peak RSS ${mb(r.extract.peakRssMb)})`,
    '',
  );
  const rows: string[][] = [
    [
      'store',
      'copy s',
      'copy MiB/s',
      'copy RSS',
      'load s',
      'load MiB/s',
      'load rows/s',
      'load RSS',
      'MiB',
      'replica',
    ],
  ];
  for (const s of r.stores) {
    if (s.failed !== undefined || !s.copy || !s.load) {
      const why = s.failed !== undefined ? `FAILED: ${s.failed}` : `skipped: ${s.skipped ?? '?'}`;
      rows.push([s.store, '', '', '', '', '', '', '', '', why]);
      continue;
    }
    rows.push([
      s.store,
      secs(s.copy.seconds),
      mbPerSecond(r.bytes, s.copy.seconds),
      mb(s.copy.peakRssMb),
      secs(s.load.seconds),
      mbPerSecond(r.bytes, s.load.seconds),
      rate(r.rows, s.load.seconds),
      mb(s.load.peakRssMb),
      size.toFixed(1),
      s.same ? '= source' : 'DIFFERS',
    ]);
  }
  out.push(table(rows, [1, 2, 3, 4, 5, 6, 7, 8]), '');
  out.push(
    "seconds: wall clock from spawn to exit, as cron sees it (Node start-up included); MiB/s: the delta's parts over that; --json adds each step's own seconds and Node CPU",
  );
  for (const s of r.stores) if (s.where) out.push(`${s.store}: ${s.where}`);
  out.push(
    '',
    r.ok
      ? 'OK: every store measured has a replica equal to the source'
      : 'FAILED: a store failed or its replica differs from the source',
  );
  return out.join('\n');
}
