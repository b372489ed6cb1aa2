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
import type { TableConfig } from '../../config/schema.js';
import { openSource } from '../../db/index.js';
import type { SourceReader } from '../../db/types.js';
import { ConfigError } from '../../errors.js';
import { readState, type StepState } from '../../format/state.js';
import { readManifestIn } from '../../store/index.js';
import { logSummary } from '../../log.js';
import { elapsedSeconds, withStepLock, type StepContext } from '../common.js';
import { pruneChangelog } from '../prune/changelog.js';
import { pruneAfterStep } from '../prune/index.js';
import { columnChanges, recordColumns } from './columns.js';
import { extractDelta } from './delta.js';
import type { TableCapture } from './modes/mode.js';
import { orderTables } from './order.js';
import { openOutbox, type Outbox } from '../outbox.js';
import { recoverOutbox } from './recover.js';
import { Shaper } from './shape.js';

export { minusSeconds } from './modes/timestamp.js';

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

async function planTables(source: SourceReader, ctx: StepContext): Promise<TableCapture[]> {
  const tables: TableConfig[] = await orderTables(
    source,
    ctx.config.tables!,
    ctx.config.tableOrder,
  );
  await source.checkTablesDistinct?.(tables.map((t) => t.name));
  const plans: TableCapture[] = [];
  for (const t of tables) {
    const columns = await source.columns(t.name);
    plans.push({ config: t, shaper: new Shaper(t, columns), source: columns });
  }
  return plans;
}

/**
 * Whether `delta.heartbeatSeconds` have passed since the last delta was created (or none was
 * ever written, or it is gone from the outbox): then this run writes a delta even without
 * changes, so that the replica side can tell an idle source from a stalled pipeline.
 */
async function heartbeatDue(ctx: StepContext, state: StepState, outbox: Outbox): Promise<boolean> {
  const every = ctx.config.delta.heartbeatSeconds;
  if (every === undefined) return false;
  if (!state.delta) return true;
  const created = await readManifestIn(outbox.store, state.delta, ctx.config.name).then(
    (m) => Date.parse(m.createdAt),
    () => Number.NaN,
  );
  return !(Date.now() - created < every * 1000);
}

/** What a run writes beyond the usual: `deltasync resync` names tables to write as a base. */
export interface ExtractOptions {
  /** Tables to write whole in the next delta; every table of the job when empty. */
  resync?: string[];
}

function resyncTables(ctx: StepContext, options: ExtractOptions): Set<string> {
  if (!options.resync) return new Set();
  const names = ctx.config.tables!.map((t) => t.name);
  if (options.resync.length === 0) return new Set(names);
  const unknown = options.resync.filter((t) => !names.includes(t));
  if (unknown.length > 0) {
    throw new ConfigError(
      `resync: ${unknown.map((t) => `'${t}'`).join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not a table of job '${ctx.config.name}' (tables: ${names.join(', ')})`,
    );
  }
  return new Set(options.resync);
}

async function extractRun(ctx: StepContext, options: ExtractOptions): Promise<ExtractResult> {
  const started = process.hrtime.bigint();
  const outbox = await openOutbox(ctx.config);
  try {
    return await extractInto(ctx, options, outbox, started);
  } finally {
    await outbox.close();
  }
}

async function extractInto(
  ctx: StepContext,
  options: ExtractOptions,
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
  let base = resyncTables(ctx, options);
  const source = await openSource(config.source!);
  try {
    const plans = await planTables(source, ctx);
    const columns = await columnChanges(config.stateDir, config.name, plans, log);
    let columnsChanged = columns.changes;
    base = new Set([...base, ...columnsChanged.keys()]);
    let heartbeat = await heartbeatDue(ctx, state, outbox);
    for (;;) {
      const outcome = await extractDelta(ctx, source, {
        plans,
        state,
        base,
        columnsChanged,
        outbox,
        heartbeat,
      });
      if (heartbeat && outcome.file && outcome.rows === 0)
        log.info({ delta: outcome.file }, 'heartbeat: empty delta after delta.heartbeatSeconds');
      heartbeat = false;
      // A resync's or a column change's base goes out once, in the first delta.
      base = new Set();
      columnsChanged = new Map();
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
    // A job that ships nothing yet still records its columns, to compare with from now on.
    if (result.deltas.length === 0 && !columns.recorded) {
      await recordColumns(config.stateDir, config.name, plans);
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

/** Runs extract under the job's extract lock (resync too: its base is the chain's next delta). */
export function extract(ctx: StepContext, options: ExtractOptions = {}): Promise<ExtractResult> {
  return withStepLock(ctx.config, 'extract', async () => {
    const result = await extractRun(ctx, options);
    await pruneAfterStep(ctx, 'source');
    if (ctx.config.retention?.changelog) await pruneChangelog(ctx.config, ctx.log);
    return result;
  });
}
