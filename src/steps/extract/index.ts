/**
 * extract: everything that changed in the source since the last delta becomes the next delta.
 *
 * Each table keeps its own cursor in the extract state (a logId, a change-log logId, a
 * timestamp-and-key, or the logId of its last snapshot); the delta's own logId continues the
 * chain. A backlog larger than `delta.maxRowsPerDelta` becomes several deltas in one run.
 *
 * Crash safety: parts are published before the manifest and the state after it. A crash before
 * the manifest leaves orphan parts, removed by the next run; a crash after it leaves a complete
 * delta the state does not know, which the next run adopts (with the cursors the manifest
 * carries) instead of extracting it again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { TableConfig } from '../../config/schema.js';
import { openSource } from '../../db/index.js';
import { CHANGELOG_LOGID_COLUMN, type SourceReader } from '../../db/types.js';
import { ConfigError } from '../../errors.js';
import { faultPoint } from '../../faults.js';
import { DeltaWriter } from '../../format/delta-writer.js';
import { compareLogIds, maxLogId } from '../../format/logid.js';
import type { Cursor } from '../../format/manifest.js';
import { readState, writeState, type StepState } from '../../format/state.js';
import { logSummary, type Logger } from '../../log.js';
import { elapsedSeconds, fileError, withStepLock, type StepContext } from '../common.js';
import {
  captureChangelog,
  captureLogId,
  captureSnapshot,
  captureTimestamp,
  type CaptureOutcome,
  type TableCapture,
} from './modes.js';
import { openOutbox, type Outbox } from '../outbox.js';
import { recoverOutbox } from './recover.js';
import { Shaper } from './shape.js';
import { pruneSnapshots } from './snapshot.js';
import { orderTables } from './order.js';

export interface ExtractResult {
  /** Manifest files written by this run, in order. */
  deltas: string[];
  /** The last of them, or null when nothing had changed. */
  delta: string | null;
  fromLogId: string;
  toLogId: string;
  rows: number;
  bytes: number;
}

interface DeltaOutcome {
  state: StepState;
  file: string | null;
  rows: number;
  bytes: number;
  tables: number;
  /** A limit cut this delta short: there is more to extract now. */
  limited: boolean;
}

const changelogCursorKey = (changelog: string) => `changelog:${changelog}`;

/** The source's stable high-water mark over some logId columns, or its plain maximum. */
async function highWater(
  source: SourceReader,
  tables: { table: string; logIdColumn: string }[],
  maxWaitSeconds: number,
  log: Logger,
): Promise<string | null> {
  const high = await source.stableHighWater({ tables, maxWaitSeconds });
  if (high === null) {
    log.warn(
      { tables: tables.map((t) => t.table), maxWaitSeconds },
      'no stable high-water mark (empty tables, or transactions still running may commit lower logIds); nothing from these tables this run',
    );
  }
  return high;
}

async function planTables(source: SourceReader, ctx: StepContext): Promise<TableCapture[]> {
  const tables: TableConfig[] = await orderTables(
    source,
    ctx.config.tables!,
    ctx.config.tableOrder,
  );
  const plans: TableCapture[] = [];
  for (const t of tables) {
    const columns = await source.columns(t.name);
    plans.push({ config: t, shaper: new Shaper(t, columns), source: columns });
  }
  return plans;
}

async function extractDelta(
  ctx: StepContext,
  source: SourceReader,
  plans: TableCapture[],
  state: StepState,
  outbox: Outbox,
): Promise<DeltaOutcome> {
  const { config, log } = ctx;
  const { capture, delta } = config;
  const limit = delta.maxRowsPerDelta;
  const last = state.logId;
  const cursors: Record<string, Cursor> = { ...state.cursors };
  const cursorOf = (t: TableConfig) => cursors[t.name];
  let limited = false;

  // logid tables: one high-water mark over all of them, cut to the batch limit.
  const logidPlans = plans.filter((p) => p.config.mode === 'logid');
  const afterOf = (p: TableCapture) => {
    const c = cursorOf(p.config);
    return typeof c === 'string' ? c : last;
  };
  let high: string | null = null;
  if (logidPlans.length > 0) {
    high = await highWater(
      source,
      logidPlans.map((p) => ({ table: p.config.name, logIdColumn: p.config.logIdColumn! })),
      capture.maxWaitSeconds,
      log,
    );
    if (high !== null && limit) {
      const nth = await source.nthLogId({
        tables: logidPlans.map((p) => ({
          table: p.config.name,
          logIdColumn: p.config.logIdColumn!,
          after: afterOf(p),
        })),
        upTo: high,
        n: limit,
      });
      if (nth !== null && compareLogIds(nth, high) < 0) {
        high = nth;
        limited = true;
      }
    }
  }

  // changelog tables share one cursor: the change log's own logId.
  const changelogPlans = plans.filter((p) => p.config.mode === 'changelog');
  const clKey = changelogCursorKey(capture.changelogTable);
  const clAfter = typeof cursors[clKey] === 'string' ? (cursors[clKey] as string) : '0';
  let clHigh: string | null = null;
  if (changelogPlans.length > 0) {
    clHigh = await highWater(
      source,
      [{ table: capture.changelogTable, logIdColumn: CHANGELOG_LOGID_COLUMN }],
      capture.maxWaitSeconds,
      log,
    );
    if (clHigh !== null && logidPlans.length === 0 && limit) {
      const nth = await source.nthLogId({
        tables: [
          { table: capture.changelogTable, logIdColumn: CHANGELOG_LOGID_COLUMN, after: clAfter },
        ],
        upTo: clHigh,
        n: limit,
      });
      if (nth !== null && compareLogIds(nth, clHigh) < 0) {
        clHigh = nth;
        limited = true;
      }
    }
  }

  const logidMoves = high !== null && logidPlans.some((p) => compareLogIds(afterOf(p), high!) < 0);
  const changelogMoves = clHigh !== null && compareLogIds(clAfter, clHigh) < 0;
  if ((logidMoves || changelogMoves) && capture.settleLagSeconds > 0) {
    // Gives a transaction that took a lower logId just before the mark time to commit.
    await sleep(capture.settleLagSeconds * 1000);
  }

  // The delta's own logId: after the last one, and at least every logId it ships.
  let toLogId = (BigInt(last) + 1n).toString();
  if (logidMoves) toLogId = maxLogId(toLogId, high!);
  if (changelogMoves) toLogId = maxLogId(toLogId, clHigh!);

  const writer = new DeltaWriter({
    dir: outbox.dir,
    job: config.name,
    fromLogId: last,
    toLogId,
    maxRowsPerPart: delta.maxRowsPerPart,
    compression: delta.compression,
    signingKey: config.signingKey,
  });
  const timestampHorizon = new Map<string, string>();
  try {
    // Budgeted modes first, in mode order, so the limit is shared; the manifest lists tables in
    // plan order (parents first) whatever order they were written in.
    const byMode = [...plans].sort((a, b) => modeRank(a) - modeRank(b));
    for (const p of byMode) {
      const t = p.config;
      const tw = writer.beginTable(p.shaper.target, p.shaper.key, p.shaper.columns);
      let outcome: CaptureOutcome;
      switch (t.mode) {
        case 'logid':
          outcome =
            high !== null && compareLogIds(afterOf(p), high) < 0
              ? await captureLogId(source, p, tw, afterOf(p), high)
              : { cursor: cursorOf(t), rows: 0, limited: false };
          break;
        case 'changelog': {
          let upTo = clHigh;
          const budget = limit ? limit - writer.rowCount : undefined;
          if (upTo !== null && budget !== undefined && logidPlans.length > 0) {
            if (budget <= 0) upTo = null;
            else {
              const nth = await source.nthLogId({
                tables: [
                  {
                    table: capture.changelogTable,
                    logIdColumn: CHANGELOG_LOGID_COLUMN,
                    after: clAfter,
                  },
                ],
                upTo,
                n: budget,
              });
              if (nth !== null && compareLogIds(nth, upTo) < 0) upTo = nth;
            }
            if (upTo !== clHigh) limited = true;
          }
          outcome =
            upTo !== null && compareLogIds(clAfter, upTo) < 0
              ? await captureChangelog(source, p, tw, capture.changelogTable, clAfter, upTo)
              : { cursor: cursors[clKey], rows: 0, limited: false };
          if (outcome.cursor !== undefined) cursors[clKey] = outcome.cursor;
          outcome = { ...outcome, cursor: undefined };
          break;
        }
        case 'timestamp': {
          const type = p.source.find((c) => c.name === t.timestampColumn)!.type;
          if (type !== 'timestamp' && type !== 'timestamptz') {
            throw new ConfigError(
              `tables.${t.name}.timestampColumn: '${t.timestampColumn}' is a ${type} column, not a timestamp`,
            );
          }
          let horizon = timestampHorizon.get(type);
          if (!horizon) {
            horizon = minusSeconds(await source.serverTime(type), capture.timestampLagSeconds);
            timestampHorizon.set(type, horizon);
          }
          const budget = limit ? Math.max(limit - writer.rowCount, 0) : undefined;
          outcome =
            budget === 0
              ? { cursor: cursorOf(t), rows: 0, limited: true }
              : await captureTimestamp(source, p, tw, cursorOf(t), horizon, budget);
          break;
        }
        case 'snapshot': {
          const previous = cursorOf(t);
          outcome = await captureSnapshot(
            source,
            p,
            tw,
            typeof previous === 'string' ? previous : null,
            toLogId,
            {
              dir: config.stateDir,
              job: config.name,
            },
          );
          break;
        }
      }
      await tw.finish();
      if (outcome.cursor !== undefined) cursors[t.name] = outcome.cursor;
      limited ||= outcome.limited;
    }
    writer.orderTables(plans.map((p) => p.shaper.target));
    const rows = writer.rowCount;
    if (rows === 0) {
      await writer.abort();
      const moved = JSON.stringify(cursors) !== JSON.stringify(state.cursors ?? {});
      const next = moved ? { ...state, cursors, updatedAt: new Date().toISOString() } : state;
      if (moved) await writeState(config.stateDir, next);
      return { state: next, file: null, rows: 0, bytes: 0, tables: 0, limited: false };
    }
    await faultPoint('extract:before-manifest');
    const { manifest, file } = await writer.finish({ cursors });
    await outbox.publish(file);
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
    log.debug({ delta: file, rows, limited }, 'delta extracted');
    return { state: next, file, rows, bytes, tables, limited };
  } catch (err) {
    // Removes the parts published so far and the one being written, temporary files included.
    await writer.abort();
    throw fileError(err, `cannot write delta ${toLogId} into ${outbox.store.where}`);
  }
}

const MODE_RANK = { logid: 0, changelog: 1, timestamp: 2, snapshot: 3 } as const;
function modeRank(p: TableCapture): number {
  return MODE_RANK[p.config.mode];
}

/** A wire timestamp minus some seconds, in the same form (fraction and zone kept). */
export function minusSeconds(wire: string, seconds: number): string {
  if (seconds === 0) return wire;
  const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)?(Z?)$/.exec(wire);
  if (!m) throw new Error(`unexpected server time '${wire}'`);
  const [, date, time, fraction = '', zone] = m;
  const t = new Date(`${date}T${time}Z`).getTime() - Math.round(seconds * 1000);
  const iso = new Date(t).toISOString();
  const sep = wire[10];
  return `${iso.slice(0, 10)}${sep}${iso.slice(11, 19)}${fraction}${zone}`;
}

async function extractRun(ctx: StepContext): Promise<ExtractResult> {
  const { config } = ctx;
  const started = process.hrtime.bigint();
  const outbox = await openOutbox(config);
  try {
    return await extractInto(ctx, outbox, started);
  } finally {
    await outbox.close();
  }
}

async function extractInto(
  ctx: StepContext,
  outbox: Outbox,
  started: bigint,
): Promise<ExtractResult> {
  const { config, log } = ctx;
  let state = await readState(config.stateDir, config.name, 'extract');
  state = await recoverOutbox(ctx, state, outbox);
  const fromLogId = state.logId;
  const result: ExtractResult = {
    deltas: [],
    delta: null,
    fromLogId,
    toLogId: fromLogId,
    rows: 0,
    bytes: 0,
  };
  let tables = 0;
  const source = await openSource(config.source!);
  try {
    const plans = await planTables(source, ctx);
    for (;;) {
      const outcome = await extractDelta(ctx, source, plans, state, outbox);
      state = outcome.state;
      if (!outcome.file) break;
      result.deltas.push(outcome.file);
      result.delta = outcome.file;
      result.toLogId = state.logId;
      result.rows += outcome.rows;
      result.bytes += outcome.bytes;
      tables = Math.max(tables, outcome.tables);
      if (!outcome.limited) break;
    }
  } finally {
    await source.close();
  }
  if (result.deltas.length === 0)
    log.debug({ logId: fromLogId }, 'no changes since the last delta');
  logSummary(log, {
    step: 'extract',
    delta: result.delta,
    deltas: result.deltas.length,
    tables,
    rows: result.rows,
    bytes: result.bytes,
    seconds: elapsedSeconds(started),
  });
  return result;
}

/** Runs extract under the job's extract lock. */
export function extract(ctx: StepContext): Promise<ExtractResult> {
  return withStepLock(ctx.config, 'extract', () => extractRun(ctx));
}
