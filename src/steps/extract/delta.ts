/**
 * One delta: a short loop over small named steps. Open the delta's source snapshot; open each
 * capture mode in it (each fixes its window); name the delta; write every table; publish.
 */
import type { Outbox } from '../outbox.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cursor } from '../../format/manifest.js';
import { DeltaWriter } from '../../format/delta-writer.js';
import { maxLogId } from '../../format/logid.js';
import { writeState, type StepState } from '../../format/state.js';
import { faultPoint } from '../../faults.js';
import { fileError, type StepContext } from '../common.js';
import { openChangelog } from './modes/changelog.js';
import { openLogId } from './modes/logid.js';
import type { ModeContext, ModeDelta, OpenMode, TableCapture } from './modes/mode.js';
import { openSnapshot } from './modes/snapshot.js';
import { openTimestamp } from './modes/timestamp.js';
import type { SourceReader } from '../../db/types.js';
import { pruneSnapshots } from './snapshot.js';
import { recordColumns, type ColumnsChanged } from './columns.js';

/**
 * The modes in the order they open and write: logid first (its engine may have to wait, then
 * open the snapshot everything else reads in), then the budgeted modes that share the row limit.
 */
const MODES: [TableCapture['config']['mode'], OpenMode][] = [
  ['logid', openLogId],
  ['changelog', openChangelog],
  ['timestamp', openTimestamp],
  ['snapshot', openSnapshot],
];

export interface DeltaOutcome {
  state: StepState;
  file: string | null;
  rows: number;
  bytes: number;
  tables: number;
  /** A limit cut this delta short: there is more to extract now. */
  limited: boolean;
}

export interface DeltaRequest {
  plans: TableCapture[];
  state: StepState;
  /** Tables to write as a base in this delta (resync, changed columns). */
  base: ReadonlySet<string>;
  /** Tables whose source columns changed since the last delta (noted in the manifest). */
  columnsChanged: ReadonlyMap<string, ColumnsChanged>;
  /** Where the delta is written, then published. */
  outbox: Outbox;
  /** `delta.heartbeatSeconds` has passed since the last delta: write one even when empty. */
  heartbeat?: boolean;
}

export async function extractDelta(
  ctx: StepContext,
  source: SourceReader,
  req: DeltaRequest,
): Promise<DeltaOutcome> {
  const { config, log } = ctx;
  const { plans, state } = req;
  let written = 0;
  const limit = config.delta.maxRowsPerDelta;
  const modeContext: ModeContext = {
    source,
    config,
    log,
    cursors: state.cursors ?? {},
    last: state.logId,
    legacyState: state.cursors === undefined,
    base: req.base,
    budget: () => (limit ? limit - written : undefined),
  };

  await source.beginSnapshot();
  const modes = new Map<string, ModeDelta>();
  for (const [mode, open] of MODES) {
    const mine = plans.filter((p) => p.config.mode === mode);
    if (mine.length > 0) modes.set(mode, await open(modeContext, mine));
  }

  if (config.capture.settleLagSeconds > 0 && [...modes.values()].some((m) => m.highLogId)) {
    // For engines whose mark is only the plain maximum (MariaDB without PROCESS): gives a
    // transaction that took a lower logId just before the mark time to commit. PostgreSQL and
    // SQLite marks are exact and need none.
    await sleep(config.capture.settleLagSeconds * 1000);
  }

  // The delta's own logId: after the last one, and at least every logId it ships.
  let toLogId = (BigInt(state.logId) + 1n).toString();
  for (const m of modes.values()) if (m.highLogId) toLogId = maxLogId(toLogId, m.highLogId);

  const writer = new DeltaWriter({
    dir: req.outbox.dir,
    job: config.name,
    fromLogId: state.logId,
    toLogId,
    maxRowsPerPart: config.delta.maxRowsPerPart,
    compression: config.delta.compression,
    signingKey: config.signingKey,
  });
  const cursors: Record<string, Cursor> = { ...state.cursors };
  let limited = [...modes.values()].some((m) => m.limited);
  try {
    for (const [mode] of MODES) {
      const m = modes.get(mode);
      if (!m) continue;
      for (const p of plans.filter((q) => q.config.mode === mode)) {
        const base = m.isBase(p);
        const tw = writer.beginTable(p.shaper.target, p.shaper.key, p.shaper.columns, {
          base,
          columnsChanged: req.columnsChanged.get(p.config.name),
        });
        ctx.progress?.table(p.config.name, undefined, () => tw.rows);
        const outcome = await m.write(p, tw, toLogId);
        await tw.finish();
        written = writer.rowCount;
        if (outcome.cursor !== undefined) cursors[p.config.name] = outcome.cursor;
        if (outcome.base)
          log.info({ table: p.config.name, rows: outcome.rows }, 'table written whole (base)');
        limited ||= outcome.limited;
      }
      Object.assign(cursors, m.shared());
    }
    // The manifest lists tables parents first, whatever order they were written in.
    writer.orderTables(plans.map((p) => p.shaper.target));
    if (writer.rowCount === 0 && !writer.hasBase && !req.heartbeat) {
      await writer.abort();
      return await keepCursors(ctx, state, cursors);
    }
    await faultPoint('extract:before-manifest');
    const { manifest, file } = await writer.finish({ cursors });
    await req.outbox.publish(file);
    const next: StepState = {
      job: config.name,
      step: 'extract',
      logId: toLogId,
      updatedAt: new Date().toISOString(),
      delta: file,
      cursors,
    };
    await faultPoint('extract:before-state');
    await writeState(config.stateDir, next);
    await recordColumns(config.stateDir, config.name, plans);
    for (const p of plans.filter((q) => q.config.mode === 'snapshot')) {
      const c = cursors[p.config.name];
      await pruneSnapshots(
        config.stateDir,
        config.name,
        p.config.name,
        typeof c === 'string' ? c : null,
      );
    }
    const bytes = manifest.tables
      .flatMap((t) => [...t.parts, ...(t.deletes?.parts ?? [])])
      .reduce((n, p) => n + p.bytes, 0);
    const tables = manifest.tables.filter((t) => t.rows + (t.deletes?.rows ?? 0) > 0).length;
    log.debug({ delta: file, rows: writer.rowCount, limited }, 'delta extracted');
    return { state: next, file, rows: writer.rowCount, bytes, tables, limited };
  } catch (err) {
    // Removes the parts published so far and the one being written, temporary files included.
    await writer.abort();
    throw fileError(err, `cannot write delta ${toLogId} into ${req.outbox.store.where}`);
  }
}

/** Nothing to ship: the cursors may still have moved (a window of rolled-back ids). */
async function keepCursors(
  ctx: StepContext,
  state: StepState,
  cursors: Record<string, Cursor>,
): Promise<DeltaOutcome> {
  const moved = JSON.stringify(cursors) !== JSON.stringify(state.cursors ?? {});
  const next = moved ? { ...state, cursors, updatedAt: new Date().toISOString() } : state;
  if (moved) await writeState(ctx.config.stateDir, next);
  return { state: next, file: null, rows: 0, bytes: 0, tables: 0, limited: false };
}
