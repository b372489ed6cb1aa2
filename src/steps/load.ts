/**
 * load: applies the deltas waiting in the inbox to the replica, in logId order, each in one
 * transaction that commits only if every part was read whole and matched its row count and
 * checksum. The applied logId is recorded inside the target in that same transaction, so a crash
 * between the commit and the state file can neither skip nor repeat a delta; the state file only
 * mirrors it.
 */
import { openTarget } from '../db/index.js';
import type {
  ColumnInfo,
  TargetColumn,
  TargetTransaction,
  TargetWriter,
  WireRow,
} from '../db/types.js';
import { ConfigError, DeltaError, DeltasyncError, HookError } from '../errors.js';
import { compareLogIds } from '../format/logid.js';
import {
  partsOf,
  type Manifest,
  type ManifestPart,
  type ManifestTable,
} from '../format/manifest.js';
import { readPartFrom } from '../format/part-codec.js';
import { readCopyBytes, readCopyRowsFrom } from '../format/copy-part.js';
import { logSummary, type Logger } from '../log.js';
import { openStore, readManifestIn, type DeltaStore, type StoreManifest } from '../store/index.js';
import { publishAck, replicaName } from './ack.js';
import { faultPoint } from '../faults.js';
import type { JobConfig } from '../config/schema.js';
import { runAfterLoad } from './hook.js';
import { pruneAfterStep } from './prune/index.js';
import {
  countedLines,
  countedRows,
  elapsedSeconds,
  loadStep,
  readLoadState,
  withStepLock,
  writeLoadState,
  type Progress,
  type StepContext,
} from './common.js';

export interface LoadResult {
  applied: string[];
  fromLogId: string;
  toLogId: string;
  rows: number;
  bytes: number;
}

/** How one delta table lands in the target: which of its columns the target has. */
interface TablePlan {
  table: ManifestTable;
  /** Indexes into the delta's columns of the ones to write. */
  keep: number[];
  columns: ColumnInfo[];
}

/**
 * Cheap checks before a transaction is opened: every part is there with the size it should have.
 * Stats run in parallel: on a remote store each is a round trip.
 */
export async function checkPartsPresent(
  inbox: DeltaStore,
  file: string,
  manifest: Manifest,
): Promise<void> {
  const parts = partsOf(manifest);
  const sizes = await Promise.all(parts.map((p) => inbox.stat(p.file)));
  for (const [i, part] of parts.entries()) {
    const s = sizes[i];
    if (!s)
      throw new DeltaError(`${file}: part ${part.file} is missing`, {
        file: part.file,
        hint: 'run copy again, or copy the file by hand',
      });
    if (s.bytes !== part.bytes) {
      throw new DeltaError(
        `${file}: part ${part.file} is ${s.bytes} bytes, the manifest says ${part.bytes} (truncated or altered)`,
        {
          file: part.file,
          hint: 'copy the delta again from the source outbox',
        },
      );
    }
  }
}

/** What load learns once per run about the replica: its tables' columns, and what it skips. */
export interface RunMemo {
  columns: Map<string, Promise<TargetColumn[] | null>>;
  /**
   * Delta columns the replica lacks and load skips (`load.missingColumns: 'skip'`), by table:
   * carried over from the state file, dropped once the replica has the column.
   */
  skipped: Map<string, Set<string>>;
  /** Columns warned of in this run. */
  warned: Set<string>;
}

/** A column a delta carries that the replica lacks, and the statement that would add it. */
interface MissingColumn {
  column: ColumnInfo;
  ddl: string;
}

/**
 * Matches a delta table with the target table, by column name. A missing table or key column is
 * a configuration error; target columns the delta does not carry are never touched. A column the
 * target lacks stops the load before this delta (78, with the ALTER TABLE to run), is added, or
 * is skipped, as `load.missingColumns` says. A column the target generates itself (`GENERATED
 * ALWAYS AS …`, the same schema on both sides) is left out: its value follows from the others.
 */
export async function planTable(
  target: TargetWriter,
  table: ManifestTable,
  memo: RunMemo,
  mode: MissingColumnsMode,
  log: Logger,
): Promise<TablePlan & { add: MissingColumn[] }> {
  // Reflected once per run, not once per delta: a backlog of deltas hits the same tables.
  if (!memo.columns.has(table.name)) memo.columns.set(table.name, target.columns(table.name));
  const targetColumns = await memo.columns.get(table.name)!;
  if (!targetColumns) {
    throw new ConfigError(`target table '${table.name}' does not exist`, {
      hint: 'create it on the replica before loading',
    });
  }
  const have = new Set(targetColumns.map((c) => c.name));
  const generated = new Set(targetColumns.filter((c) => c.generated).map((c) => c.name));
  for (const k of table.key) {
    if (!have.has(k))
      throw new ConfigError(`target table '${table.name}' has no key column '${k}'`);
    if (generated.has(k)) {
      throw new ConfigError(
        `target table '${table.name}' computes its key column '${k}' itself (a generated column), so load cannot write the delta's keys into it`,
        { hint: 'make it a plain column on the replica; nothing of this delta was applied' },
      );
    }
  }
  const keep: number[] = [];
  const add: MissingColumn[] = [];
  table.columns.forEach((c, i) => {
    // The replica computes it from the row's other columns: nothing may be written into it.
    if (generated.has(c.name)) return;
    if (have.has(c.name)) {
      memo.skipped.get(table.name)?.delete(c.name);
      return keep.push(i);
    }
    const ddl = target.addColumnSql(table.name, c);
    if (mode === 'stop') {
      throw new ConfigError(
        `target table '${table.name}' has no column '${c.name}' (${c.type}) that the delta carries; add it: ${ddl}`,
        {
          hint: "or set load.missingColumns to 'add' or 'skip'; nothing of this delta was applied",
        },
      );
    }
    if (mode === 'add') {
      add.push({ column: c, ddl });
      return keep.push(i);
    }
    const skipped = memo.skipped.get(table.name) ?? new Set<string>();
    if (!memo.warned.has(`${table.name}.${c.name}`)) {
      memo.warned.add(`${table.name}.${c.name}`);
      log.warn(
        { table: table.name, column: c.name, type: c.type },
        'the target table has no such column; its values are skipped (load.missingColumns: skip)',
      );
    }
    memo.skipped.set(table.name, skipped.add(c.name));
  });
  return { table, keep, columns: keep.map((i) => table.columns[i]!), add };
}

/** Adds the columns a delta needs (`load.missingColumns: 'add'`); `run` executes one statement. */
async function addColumns(
  plans: (TablePlan & { add: MissingColumn[] })[],
  run: (ddl: string) => Promise<void>,
  memo: RunMemo,
  target: TargetWriter,
  log: Logger,
): Promise<void> {
  for (const plan of plans) {
    if (plan.add.length === 0) continue;
    for (const { column, ddl } of plan.add) {
      await run(ddl);
      log.info(
        { table: plan.table.name, column: column.name, ddl },
        'added a column to the replica',
      );
    }
    memo.columns.set(plan.table.name, target.columns(plan.table.name));
  }
}

/** The skipped columns, as the state file records them. */
function skippedRecord(memo: RunMemo): Record<string, string[]> | undefined {
  const entries = [...memo.skipped].filter(([, c]) => c.size > 0);
  if (entries.length === 0) return undefined;
  return Object.fromEntries(entries.map(([t, c]) => [t, [...c].sort()]));
}

type MissingColumnsMode = JobConfig['load']['missingColumns'];

async function* project(
  rows: AsyncIterable<WireRow>,
  keep: number[],
  width: number,
): AsyncGenerator<WireRow> {
  if (keep.length === width) {
    yield* rows;
    return;
  }
  for await (const row of rows) yield keep.map((i) => row[i]!);
}

/**
 * A part's rows streamed from the store, decoded as its delta's format version writes them
 * (1: NDJSON, 2: COPY text), its size and checksums verified as they pass. `columns`: the delta's
 * columns for a rows part, the key columns for a delete part.
 */
async function* readPartIn(
  inbox: DeltaStore,
  part: ManifestPart,
  manifest: Manifest,
  columns: ColumnInfo[],
): AsyncGenerator<WireRow> {
  const stream = await inbox.read(part.file);
  if (manifest.formatVersion === 1) {
    yield* readPartFrom(stream, part, manifest.compression, columns.length);
  } else {
    const types = columns.map((c) => c.type);
    yield* readCopyRowsFrom(stream, part, manifest.compression, types);
  }
}

async function* readTable(
  inbox: DeltaStore,
  manifest: Manifest,
  table: ManifestTable,
): AsyncGenerator<WireRow> {
  for (const part of table.parts) yield* readPartIn(inbox, part, manifest, table.columns);
}

/** A format-2 table's COPY text: its parts' verified bytes, in order, never parsed. */
async function* copyTextOf(
  inbox: DeltaStore,
  manifest: Manifest,
  table: ManifestTable,
): AsyncGenerator<Buffer> {
  for (const part of table.parts) {
    yield* readCopyBytes(await inbox.read(part.file), part, manifest.compression);
  }
}

/**
 * A table's upserts: a format-2 delta goes to an engine that loads COPY text as bytes (`copyRows`)
 * when it can; anything else is decoded to wire rows for `applyRows`.
 */
async function upsertTable(
  tx: TargetTransaction,
  inbox: DeltaStore,
  manifest: Manifest,
  plan: TablePlan,
  progress?: Progress,
): Promise<number> {
  const { table } = plan;
  if (manifest.formatVersion >= 2 && tx.copyRows) {
    if (table.rows === 0) return 0;
    return tx.copyRows({
      table: table.name,
      key: table.key,
      columns: table.columns,
      keep: plan.keep,
      data: countedLines(copyTextOf(inbox, manifest, table), table, progress),
      keepUnchanged: table.base === true,
      expectedRows: table.rows,
    });
  }
  return tx.applyRows({
    table: table.name,
    key: table.key,
    columns: plan.columns,
    keepUnchanged: table.base === true,
    expectedRows: table.rows,
    rows: countedRows(
      project(readTable(inbox, manifest, table), plan.keep, table.columns.length),
      table,
      progress,
    ),
  });
}

/**
 * Applies one delta inside its transaction: upserts table by table in the manifest's order
 * (parents first), then deletes in the reverse order (children first), so that foreign keys on
 * the replica hold when it commits.
 */
async function applyDelta(
  tx: TargetTransaction,
  inbox: DeltaStore,
  manifest: Manifest,
  plans: TablePlan[],
  progress?: Progress,
): Promise<Record<string, { rows: number; deletes: number }>> {
  const counts: Record<string, { rows: number; deletes: number }> = {};
  for (const plan of plans) {
    const n = await upsertTable(tx, inbox, manifest, plan, progress);
    counts[plan.table.name] = { rows: n, deletes: 0 };
    await faultPoint('load:mid-apply');
  }
  for (const plan of [...plans].reverse()) {
    if (plan.table.base) {
      // A base table replaces the replica's content: what was upserted above stays, every other
      // row goes. The keys are read from the parts again, so memory stays flat; rows that did
      // not change are not touched (no DELETE-all, so no ON DELETE CASCADE on their children).
      const keyAt = plan.table.key.map((k) => plan.table.columns.findIndex((c) => c.name === k));
      const keys = (async function* () {
        for await (const row of readTable(inbox, manifest, plan.table))
          yield keyAt.map((i) => row[i]!);
      })();
      const key = keyAt.map((i) => plan.table.columns[i]!);
      counts[plan.table.name]!.deletes = await tx.deleteRowsNotIn({
        table: plan.table.name,
        key,
        rows: keys,
      });
      continue;
    }
    const deletes = plan.table.deletes;
    if (!deletes || deletes.parts.length === 0) continue;
    const key = plan.table.key.map((k) => plan.table.columns.find((c) => c.name === k)!);
    const keys = (async function* () {
      for (const part of deletes.parts) yield* readPartIn(inbox, part, manifest, key);
    })();
    // Every delete row is read (and so checked) even though only the count matters here.
    await tx.deleteRows({ table: plan.table.name, key, rows: keys });
    counts[plan.table.name]!.deletes = deletes.rows;
  }
  return counts;
}

/**
 * Where a replica that has applied nothing of this job starts: the index of the last delta in
 * the inbox marked `fullBase` (every table's whole content, so whatever came before it does not
 * matter), or -1 when there is none.
 */
export async function fullBaseStart(
  entries: StoreManifest[],
  read: (entry: StoreManifest) => Promise<Manifest>,
): Promise<number> {
  for (let i = entries.length - 1; i >= 0; i--) {
    if ((await read(entries[i]!)).fullBase) return i;
  }
  return -1;
}

/**
 * Why `manifest` cannot follow the applied logId (a gap, or an overlap), or undefined when it
 * does. Shared with `load --dry-run`, which stops where a load would.
 */
export function chainBreak(
  file: string,
  manifest: Manifest,
  applied: string,
): DeltaError | undefined {
  if (manifest.fromLogId === applied) return undefined;
  const gap = compareLogIds(manifest.fromLogId, applied) > 0;
  return new DeltaError(
    gap
      ? `gap: the delta after logId ${applied} is missing; the next one in the inbox, ${file}, starts at ${manifest.fromLogId}`
      : `${file} starts at logId ${manifest.fromLogId}, before the applied logId ${applied}: it overlaps what was loaded`,
    {
      file,
      hint: gap
        ? 'wait for copy, or copy the missing delta by hand'
        : 'remove the overlapping delta from the inbox',
    },
  );
}

/**
 * Reads an inbox manifest as load must: of this job, and signed by the current or a previous key
 * when the job signs (shared with `load --dry-run`, which must refuse exactly what load refuses).
 */
export function manifestReader(
  config: Pick<JobConfig, 'name' | 'signingKey' | 'previousSigningKeys'>,
  inbox: DeltaStore,
): (entry: StoreManifest) => ReturnType<typeof readManifestIn> {
  const signingKeys = config.signingKey
    ? [config.signingKey, ...(config.previousSigningKeys ?? [])]
    : undefined;
  return (entry) => readManifestIn(inbox, entry.file, { job: config.name, signingKeys });
}

async function loadOnce(ctx: StepContext): Promise<LoadResult> {
  const started = process.hrtime.bigint();
  const inbox = await openStore(ctx.config.inbox!);
  try {
    await inbox.check().catch((err) => {
      if (err instanceof DeltasyncError) err.message = `inbox ${err.message}`;
      throw err;
    });
    return await loadFrom(ctx, inbox, started);
  } finally {
    await inbox.close().catch(() => undefined);
  }
}

/**
 * Loads what `inbox` holds past the applied logId, then acknowledges the applied logId there.
 * After a failure the acknowledgement is still published when this run applied something.
 */
async function loadFrom(ctx: StepContext, inbox: DeltaStore, started: bigint): Promise<LoadResult> {
  const { config, log } = ctx;
  const state = await readLoadState(config);
  const target = await openTarget(config.target!);
  const result: LoadResult = { applied: [], fromLogId: '0', toLogId: '0', rows: 0, bytes: 0 };
  const tables = new Set<string>();
  const hookFailures: string[] = [];
  try {
    await target.prepare();
    let applied = (await target.appliedLogId(config.name)) ?? '0';
    if (applied !== state.logId) {
      // The database is the truth: it commits the logId with the data.
      log.warn(
        { stateFile: state.logId, target: applied },
        'state file differs from the target; the target wins',
      );
      await writeLoadState(config, {
        ...state,
        logId: applied,
        updatedAt: new Date().toISOString(),
      });
    }
    result.fromLogId = result.toLogId = applied;
    const memo: RunMemo = {
      columns: new Map(),
      skipped: new Map(Object.entries(state.skippedColumns ?? {}).map(([t, c]) => [t, new Set(c)])),
      warned: new Set(),
    };
    const read = manifestReader(config, inbox);
    let entries = await inbox.listManifests(applied);
    // What the target recorded: the transaction checks it did not move under us.
    let recorded = applied;
    if (applied === '0') {
      const start = await fullBaseStart(entries, read);
      if (start > 0 || (start === 0 && (await read(entries[0]!)).fromLogId !== '0')) {
        log.info(
          { delta: entries[start]!.file, skipped: start },
          'the replica has applied nothing of this job: starting at a full base delta; earlier deltas are skipped',
        );
        entries = entries.slice(start);
        applied = (await read(entries[0]!)).fromLogId;
      }
    }
    for (const entry of entries) {
      const manifest = await read(entry);
      const broken = chainBreak(entry.file, manifest, applied);
      if (broken) throw broken;
      await checkPartsPresent(inbox, entry.file, manifest);
      const mode = config.load.missingColumns;
      const plans: (TablePlan & { add: MissingColumn[] })[] = [];
      for (const t of manifest.tables) plans.push(await planTable(target, t, memo, mode, log));
      // MariaDB/MySQL commit DDL at once: their columns are added before the delta's transaction.
      if (!target.ddlInTransaction)
        await addColumns(plans, (ddl) => target.execute(ddl), memo, target, log);
      const counts = await target.transaction(async (tx) => {
        const inTx = (await tx.appliedLogId(config.name)) ?? '0';
        if (inTx !== recorded)
          throw new DeltaError(
            `the target's applied logId moved to ${inTx} during the load; another loader is running`,
          );
        if (target.ddlInTransaction)
          await addColumns(plans, (ddl) => tx.executeDdl(ddl), memo, target, log);
        await tx.relaxForeignKeys(plans.map((p) => p.table.name));
        const counts = await applyDelta(tx, inbox, manifest, plans, ctx.progress);
        await tx.recordApplied({ job: config.name, logId: manifest.toLogId, delta: entry.file });
        await faultPoint('load:before-commit');
        return counts;
      });
      for (const [name, c] of Object.entries(counts)) if (c.rows + c.deletes > 0) tables.add(name);
      applied = recorded = manifest.toLogId;
      await faultPoint('load:before-state');
      const skippedColumns = skippedRecord(memo);
      await writeLoadState(config, {
        logId: applied,
        updatedAt: new Date().toISOString(),
        delta: entry.file,
        ...(skippedColumns ? { skippedColumns } : {}),
      });
      const rows = Object.values(counts).reduce((n, c) => n + c.rows + c.deletes, 0);
      const hookFailure = await runAfterLoad(
        config,
        target,
        {
          delta: entry.file,
          fromLogId: manifest.fromLogId,
          toLogId: manifest.toLogId,
          rows: Object.values(counts).reduce((n, c) => n + c.rows, 0),
          deletes: Object.values(counts).reduce((n, c) => n + c.deletes, 0),
          tables: counts,
        },
        log,
      );
      if (hookFailure) {
        log.error(
          { delta: entry.file, err: hookFailure },
          'after-load hook failed; the delta stays committed',
        );
        hookFailures.push(`${entry.file}: ${hookFailure}`);
      }
      result.applied.push(entry.file);
      result.toLogId = applied;
      result.rows += rows;
      result.bytes += partsOf(manifest).reduce((n, p) => n + p.bytes, 0);
      log.debug({ delta: entry.file, rows }, 'delta applied');
    }
  } catch (err) {
    if (result.applied.length > 0) {
      await publishAck(inbox, config.name, replicaName(config), result.toLogId).catch((ackErr) =>
        log.warn({ err: (ackErr as Error).message }, 'acknowledgement not published'),
      );
    }
    throw err;
  } finally {
    await target.close();
    logSummary(log, {
      step: 'load',
      delta: result.applied.at(-1) ?? null,
      deltas: result.applied.length,
      tables: tables.size,
      rows: result.rows,
      bytes: result.bytes,
      seconds: elapsedSeconds(started),
    });
  }
  await publishAck(inbox, config.name, replicaName(config), result.toLogId);
  if (hookFailures.length > 0) {
    throw new HookError(`after-load hook failed for ${hookFailures.join('; ')}`, {
      hint: 'the deltas are committed; fix the hook and run it by hand if needed',
    });
  }
  return result;
}

/** Runs load under the job's load lock. */
export function load(ctx: StepContext): Promise<LoadResult> {
  return withStepLock(ctx.config, loadStep(ctx.config), async () => {
    const result = await loadOnce(ctx);
    await pruneAfterStep(ctx, 'replica');
    return result;
  });
}
