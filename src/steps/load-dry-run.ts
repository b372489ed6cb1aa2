/**
 * `load --dry-run`: what a load would do now, without doing any of it. It reads what a load reads
 * (the replica's applied logId and columns, the inbox's manifests, each part's presence and size)
 * and walks the chain of deltas the way load does, stopping where a load would stop (a gap, a
 * manifest that does not check out, a part missing or of the wrong size, a table or column the
 * replica lacks under `load.missingColumns: 'stop'`).
 *
 * It changes nothing: no replica write (not even `deltasync_applied` is created), no state file,
 * no acknowledgement, no prune, and no lock. Not taking the load lock is deliberate: a dry run
 * only reads, so it must never make a cron load exit 75, and a load running at the same time
 * cannot be harmed by it; the report is then a picture of the moment it was read.
 *
 * What it cannot know without applying: part checksums and row counts (a load checks them while
 * it streams the parts), values the replica's column types would refuse, constraint clashes.
 */
import type { JobConfig } from '../config/schema.js';
import { openTarget } from '../db/index.js';
import { APPLIED_TABLE, type TargetWriter } from '../db/types.js';
import { ConfigError, DeltaError, DeltasyncError } from '../errors.js';
import { partsOf, type Manifest, type ManifestTable } from '../format/manifest.js';
import { silentLogger } from '../log.js';
import { openStore, type DeltaStore, type StoreManifest } from '../store/index.js';
import { readLoadState, type StepContext } from './common.js';
import {
  chainBreak,
  checkPartsPresent,
  fullBaseStart,
  manifestReader,
  planTable,
  type RunMemo,
} from './load.js';

type MissingColumnsMode = JobConfig['load']['missingColumns'];

/** A column a delta carries that the replica table lacks, and what load would do about it. */
export interface DryRunMissingColumn {
  name: string;
  type: string;
  /** The statement that adds it (run by load under 'add'; to run by hand under 'stop'). */
  ddl: string;
}

export interface DryRunTable {
  name: string;
  rows: number;
  deletes: number;
  /** A base table: its rows replace the replica table's content (rows not in it are deleted). */
  base: boolean;
  missingColumns: DryRunMissingColumn[];
}

export interface DryRunDelta {
  file: string;
  fromLogId: string;
  toLogId: string;
  createdAt: string;
  tables: DryRunTable[];
  rows: number;
  deletes: number;
  bytes: number;
}

export interface DryRunReport {
  job: string;
  replica: string;
  /** The logId recorded in the replica (`deltasync_applied`), '0' when it applied nothing. */
  appliedLogId: string;
  /** The logId of load's state file (a load would set it to the replica's when they differ). */
  stateLogId: string;
  missingColumns: MissingColumnsMode;
  /** Set when a replica that applied nothing would start at a full base delta. */
  startsAtBase?: { file: string; skipped: number };
  /** The deltas a load would apply, in order. */
  deltas: DryRunDelta[];
  /** Where a load would stop, and the error it would exit with; undefined when it would not. */
  stop?: { file: string; error: DeltaError | ConfigError; delta?: DryRunDelta };
  afterLoad: boolean;
}

/** The replica's applied logId, read without creating `deltasync_applied` as load's prepare would. */
async function appliedOn(target: TargetWriter, job: string): Promise<string> {
  if ((await target.columns(APPLIED_TABLE)) === null) return '0';
  return (await target.appliedLogId(job)) ?? '0';
}

/** A delta table as the report shows it: counts, and the columns the replica table lacks. */
async function describeTable(
  target: TargetWriter,
  table: ManifestTable,
  memo: RunMemo,
): Promise<DryRunTable> {
  // Reflected once per run and shared with planTable, as load does.
  if (!memo.columns.has(table.name)) memo.columns.set(table.name, target.columns(table.name));
  const have = await memo.columns.get(table.name)!;
  const names = new Set(have?.map((c) => c.name));
  return {
    name: table.name,
    rows: table.rows,
    deletes: table.deletes?.rows ?? 0,
    base: table.base ?? false,
    missingColumns: have
      ? table.columns
          .filter((c) => !names.has(c.name))
          .map((c) => ({ name: c.name, type: c.type, ddl: target.addColumnSql(table.name, c) }))
      : [],
  };
}

/**
 * Plans the table with load's own planTable, so that a missing table, key column or (under
 * 'stop') column throws the error a load would. Columns load would add count as present for
 * the deltas after this one, as they would be once it ran.
 */
async function planLikeLoad(
  target: TargetWriter,
  table: ManifestTable,
  memo: RunMemo,
  mode: MissingColumnsMode,
): Promise<void> {
  const plan = await planTable(target, table, memo, mode, silentLogger());
  if (plan.add.length === 0) return;
  const have = (await memo.columns.get(table.name)!) ?? [];
  memo.columns.set(table.name, Promise.resolve([...have, ...plan.add.map((a) => a.column)]));
}

function deltaOf(file: string, manifest: Manifest): DryRunDelta {
  return {
    file,
    fromLogId: manifest.fromLogId,
    toLogId: manifest.toLogId,
    createdAt: manifest.createdAt,
    tables: [],
    rows: manifest.tables.reduce((n, t) => n + t.rows, 0),
    deletes: manifest.tables.reduce((n, t) => n + (t.deletes?.rows ?? 0), 0),
    bytes: partsOf(manifest).reduce((n, p) => n + p.bytes, 0),
  };
}

/**
 * Walks the inbox as a load would and reports it. Errors a load would meet before its first delta
 * (the replica or the inbox unreachable, a state file of another replica) are thrown; errors of a
 * delta end the report at that delta, in `stop`.
 */
export async function loadDryRun(ctx: StepContext): Promise<DryRunReport> {
  const { config } = ctx;
  const state = await readLoadState(config);
  const target = await openTarget(config.target!);
  try {
    const inbox = await openStore(config.inbox!);
    try {
      await inbox.check().catch((err) => {
        if (err instanceof DeltasyncError) err.message = `inbox ${err.message}`;
        throw err;
      });
      return await walk(ctx, target, inbox, state.logId);
    } finally {
      await inbox.close().catch(() => undefined);
    }
  } finally {
    await target.close();
  }
}

async function walk(
  { config }: StepContext,
  target: TargetWriter,
  inbox: DeltaStore,
  stateLogId: string,
): Promise<DryRunReport> {
  const mode = config.load.missingColumns;
  let applied = await appliedOn(target, config.name);
  const report: DryRunReport = {
    job: config.name,
    replica: config.replica,
    appliedLogId: applied,
    stateLogId,
    missingColumns: mode,
    deltas: [],
    afterLoad: config.afterLoad !== undefined,
  };
  const read = manifestReader(config, inbox);
  let entries = await inbox.listManifests(applied);
  // The delta being read, and the part of it planned so far: where a load would stop.
  let current: StoreManifest | undefined;
  let planned: DryRunDelta | undefined;
  try {
    // The same start as load's: a replica that applied nothing begins at the last full base.
    if (applied === '0' && entries.length > 0) {
      current = entries[0];
      const start = await fullBaseStart(entries, read);
      if (start > 0 || (start === 0 && (await read(entries[0]!)).fromLogId !== '0')) {
        report.startsAtBase = { file: entries[start]!.file, skipped: start };
        entries = entries.slice(start);
        applied = (await read(entries[0]!)).fromLogId;
      }
    }
    const memo: RunMemo = { columns: new Map(), skipped: new Map(), warned: new Set() };
    for (const entry of entries) {
      current = entry;
      const manifest = await read(entry);
      const broken = chainBreak(entry.file, manifest, applied);
      if (broken) throw broken;
      await checkPartsPresent(inbox, entry.file, manifest);
      planned = deltaOf(entry.file, manifest);
      for (const t of manifest.tables) {
        planned.tables.push(await describeTable(target, t, memo));
        await planLikeLoad(target, t, memo, mode);
      }
      report.deltas.push(planned);
      planned = undefined;
      applied = manifest.toLogId;
    }
  } catch (err) {
    // Only bad input (65) and what the replica lacks (78) end the report at this delta, with the
    // error a load would exit with; anything else (a server gone, a bug) is thrown as it is.
    if (!(err instanceof DeltaError || err instanceof ConfigError) || !current) throw err;
    report.stop = { file: current.file, error: err, delta: planned };
  }
  return report;
}

/** `1 row`, `2 rows`. */
function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

function tableLines(t: DryRunTable, mode: MissingColumnsMode): string[] {
  const what = [count(t.rows, 'row')];
  if (t.deletes > 0) what.push(count(t.deletes, 'delete'));
  if (t.base) what.push('base: replica rows not in the delta are deleted');
  const lines = [`    ${t.name}: ${what.join(', ')}`];
  for (const c of t.missingColumns) {
    const action = {
      stop: 'load stops before this delta (load.missingColumns: stop); add it',
      add: 'load adds it (load.missingColumns: add)',
      skip: 'load skips its values (load.missingColumns: skip)',
    }[mode];
    lines.push(`      column ${c.name} (${c.type}) missing on the replica: ${action}: ${c.ddl}`);
  }
  return lines;
}

function deltaLines(d: DryRunDelta, mode: MissingColumnsMode, note = ''): string[] {
  return [
    `  ${d.file} (logId ${d.fromLogId} -> ${d.toLogId}, created ${d.createdAt}): ${count(d.rows, 'row')}, ${count(d.deletes, 'delete')}, ${count(d.bytes, 'byte')}${note}`,
    ...d.tables.flatMap((t) => tableLines(t, mode)),
  ];
}

/** The report as a terminal or a cron mail shows it. */
export function formatDryRun(r: DryRunReport): string {
  const lines = [
    `load --dry-run, job ${r.job}, replica ${r.replica}: nothing was changed`,
    `replica applied logId ${r.appliedLogId}` +
      (r.stateLogId === r.appliedLogId
        ? ''
        : ` (the state file says ${r.stateLogId}; a load would set it to the replica's)`),
  ];
  if (r.startsAtBase) {
    lines.push(
      `the replica has applied nothing: a load would start at the full base ${r.startsAtBase.file}, skipping ${count(r.startsAtBase.skipped, 'earlier delta')}`,
    );
  }
  if (r.deltas.length === 0 && !r.stop) lines.push('nothing to apply: the replica is up to date');
  if (r.deltas.length > 0) {
    const rows = r.deltas.reduce((n, d) => n + d.rows, 0);
    const deletes = r.deltas.reduce((n, d) => n + d.deletes, 0);
    lines.push(
      `would apply ${count(r.deltas.length, 'delta')} (${count(rows, 'row')}, ${count(deletes, 'delete')}), in this order:`,
    );
  }
  for (const d of r.deltas) lines.push(...deltaLines(d, r.missingColumns));
  if (r.deltas.length > 0 && r.afterLoad) lines.push('afterLoad would run after each delta');
  if (r.stop) {
    // The delta a load would stop in, as far as it got: the table that stops it is the last.
    if (r.stop.delta) lines.push(...deltaLines(r.stop.delta, r.missingColumns, ', NOT applied:'));
    lines.push(
      `a load would stop at ${r.stop.file} (exit ${r.stop.error.exitCode}): ${r.stop.error.message}`,
    );
  }
  return lines.join('\n');
}
