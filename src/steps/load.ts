/**
 * load: applies the deltas waiting in the inbox to the replica, in logId order, each in one
 * transaction that commits only if every part was read whole and matched its row count and
 * checksum. The applied logId is recorded inside the target in that same transaction, so a crash
 * between the commit and the state file can neither skip nor repeat a delta; the state file only
 * mirrors it.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openTarget } from '../db/index.js';
import type { ColumnInfo, TargetTransaction, TargetWriter, WireRow } from '../db/types.js';
import { ConfigError, DeltaError, HookError, UnavailableError } from '../errors.js';
import { listManifests } from '../format/delta-dir.js';
import { compareLogIds } from '../format/logid.js';
import { partsOf, readManifest, type Manifest, type ManifestTable } from '../format/manifest.js';
import { readPart } from '../format/part-codec.js';
import { logSummary, type Logger } from '../log.js';
import { faultPoint } from '../faults.js';
import { runAfterLoad } from './hook.js';
import {
  elapsedSeconds,
  loadStep,
  readLoadState,
  withStepLock,
  writeLoadState,
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

/** Cheap checks before a transaction is opened: every part is there with the size it should have. */
async function checkPartsPresent(inbox: string, file: string, manifest: Manifest): Promise<void> {
  for (const part of partsOf(manifest)) {
    const s = await stat(join(inbox, part.file)).catch(() => null);
    if (!s)
      throw new DeltaError(`${file}: part ${part.file} is missing`, {
        file: part.file,
        hint: 'run copy again, or copy the file by hand',
      });
    if (s.size !== part.bytes) {
      throw new DeltaError(
        `${file}: part ${part.file} is ${s.size} bytes, the manifest says ${part.bytes} (truncated or altered)`,
        {
          file: part.file,
          hint: 'copy the delta again from the source outbox',
        },
      );
    }
  }
}

/**
 * Matches a delta table with the target table. A missing table or key column is a configuration
 * error; a column the target lacks is skipped (and said once per run); target columns the delta
 * does not carry are never touched.
 */
/** What load learns once per run about the replica: its tables' columns, and what it warned of. */
interface RunMemo {
  columns: Map<string, Promise<ColumnInfo[] | null>>;
  warned: Set<string>;
}

async function planTable(
  target: TargetWriter,
  table: ManifestTable,
  memo: RunMemo,
  log: Logger,
): Promise<TablePlan> {
  // Reflected once per run, not once per delta: a backlog of deltas hits the same tables.
  if (!memo.columns.has(table.name)) memo.columns.set(table.name, target.columns(table.name));
  const targetColumns = await memo.columns.get(table.name)!;
  const warned = memo.warned;
  if (!targetColumns) {
    throw new ConfigError(`target table '${table.name}' does not exist`, {
      hint: 'create it on the replica before loading',
    });
  }
  const have = new Set(targetColumns.map((c) => c.name));
  for (const k of table.key) {
    if (!have.has(k))
      throw new ConfigError(`target table '${table.name}' has no key column '${k}'`);
  }
  const keep: number[] = [];
  table.columns.forEach((c, i) => {
    if (have.has(c.name)) keep.push(i);
    else if (!warned.has(`${table.name}.${c.name}`)) {
      warned.add(`${table.name}.${c.name}`);
      log.warn(
        { table: table.name, column: c.name },
        'the target table has no such column; its values are skipped',
      );
    }
  });
  return { table, keep, columns: keep.map((i) => table.columns[i]!) };
}

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

async function* readTable(
  inbox: string,
  manifest: Manifest,
  table: ManifestTable,
): AsyncGenerator<WireRow> {
  for (const part of table.parts)
    yield* readPart(inbox, part, manifest.compression, table.columns.length);
}

/**
 * Applies one delta inside its transaction: upserts table by table in the manifest's order
 * (parents first), then deletes in the reverse order (children first), so that foreign keys on
 * the replica hold when it commits.
 */
async function applyDelta(
  tx: TargetTransaction,
  inbox: string,
  manifest: Manifest,
  plans: TablePlan[],
): Promise<Record<string, { rows: number; deletes: number }>> {
  const counts: Record<string, { rows: number; deletes: number }> = {};
  for (const plan of plans) {
    const rows = project(
      readTable(inbox, manifest, plan.table),
      plan.keep,
      plan.table.columns.length,
    );
    const n = await tx.applyRows({
      table: plan.table.name,
      key: plan.table.key,
      columns: plan.columns,
      rows,
    });
    counts[plan.table.name] = { rows: n, deletes: 0 };
    await faultPoint('load:mid-apply');
  }
  for (const plan of [...plans].reverse()) {
    const deletes = plan.table.deletes;
    if (!deletes || deletes.parts.length === 0) continue;
    const key = plan.table.key.map((k) => plan.table.columns.find((c) => c.name === k)!);
    const keys = (async function* () {
      for (const part of deletes.parts)
        yield* readPart(inbox, part, manifest.compression, key.length);
    })();
    // Every delete row is read (and so checked) even though only the count matters here.
    await tx.deleteRows({ table: plan.table.name, key, rows: keys });
    counts[plan.table.name]!.deletes = deletes.rows;
  }
  return counts;
}

async function loadOnce(ctx: StepContext): Promise<LoadResult> {
  const { config, log } = ctx;
  const started = process.hrtime.bigint();
  const inbox = config.inbox!;
  const inboxStat = await stat(inbox).catch(() => null);
  if (!inboxStat?.isDirectory()) {
    throw new UnavailableError(`inbox ${inbox} is not a directory`, {
      hint: 'check that the disk is mounted and copy has run',
    });
  }
  const state = await readLoadState(config);
  const target = await openTarget(config.target!);
  const result: LoadResult = { applied: [], fromLogId: '0', toLogId: '0', rows: 0, bytes: 0 };
  const tables = new Set<string>();
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
    const memo: RunMemo = { columns: new Map(), warned: new Set() };
    const hookFailures: string[] = [];
    const signingKeys = config.signingKey
      ? [config.signingKey, ...(config.previousSigningKeys ?? [])]
      : undefined;
    for (const entry of await listManifests(inbox, applied)) {
      const manifest = await readManifest(entry.path, { job: config.name, signingKeys });
      if (manifest.fromLogId !== applied) {
        const gap = compareLogIds(manifest.fromLogId, applied) > 0;
        throw new DeltaError(
          gap
            ? `gap: the delta after logId ${applied} is missing; the next one in the inbox, ${entry.file}, starts at ${manifest.fromLogId}`
            : `${entry.file} starts at logId ${manifest.fromLogId}, before the applied logId ${applied}: it overlaps what was loaded`,
          {
            file: entry.file,
            hint: gap
              ? 'wait for copy, or copy the missing delta by hand'
              : 'remove the overlapping delta from the inbox',
          },
        );
      }
      await checkPartsPresent(inbox, entry.file, manifest);
      const plans: TablePlan[] = [];
      for (const t of manifest.tables) plans.push(await planTable(target, t, memo, log));
      const counts = await target.transaction(async (tx) => {
        const inTx = (await tx.appliedLogId(config.name)) ?? '0';
        if (inTx !== applied)
          throw new DeltaError(
            `the target's applied logId moved to ${inTx} during the load; another loader is running`,
          );
        const counts = await applyDelta(tx, inbox, manifest, plans);
        await tx.recordApplied({ job: config.name, logId: manifest.toLogId, delta: entry.file });
        await faultPoint('load:before-commit');
        return counts;
      });
      for (const [name, c] of Object.entries(counts)) if (c.rows + c.deletes > 0) tables.add(name);
      applied = manifest.toLogId;
      await faultPoint('load:before-state');
      await writeLoadState(config, {
        logId: applied,
        updatedAt: new Date().toISOString(),
        delta: entry.file,
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
    if (hookFailures.length > 0) {
      throw new HookError(`after-load hook failed for ${hookFailures.join('; ')}`, {
        hint: 'the deltas are committed; fix the hook and run it by hand if needed',
      });
    }
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
  return result;
}

/** Runs load under the job's load lock. */
export function load(ctx: StepContext): Promise<LoadResult> {
  return withStepLock(ctx.config, loadStep(ctx.config), () => loadOnce(ctx));
}
