/**
 * simulate: writes valid deltas into the outbox without any source database, so copy and load
 * can be rehearsed (transport, permissions, replica schema) before go-live. It advances the
 * extract state like a real extract, and so takes the extract lock.
 */
import type { ColumnInfo, LogicalType, WireRow, WireValue } from '../db/types.js';
import { DeltaWriter } from '../format/delta-writer.js';
import { partsOf } from '../format/manifest.js';
import { readState, writeState } from '../format/state.js';
import type { TableConfig } from '../config/schema.js';
import { logSummary } from '../log.js';
import { openOutbox, recoverOutbox, type Outbox } from './outbox.js';
import { elapsedSeconds, fileError, withStepLock, type StepContext } from './common.js';

export interface SimulateOptions {
  count: number;
  /** Deltas with no rows at all. */
  empty: boolean;
  /** Rows per table per delta when not empty. */
  rows: number;
}

/** Each simulated delta advances the logId by this much, leaving room for its synthetic rows. */
const LOGID_STEP = 1000n;

function syntheticValue(type: LogicalType, n: bigint, logId: bigint): WireValue {
  switch (type) {
    case 'int':
      return Number(n % 1_000_000n);
    case 'bigint':
      return n.toString();
    case 'decimal':
      return `${n}.25`;
    case 'float':
      return Number(n) / 4;
    case 'bool':
      return n % 2n === 0n;
    case 'binary':
      return Buffer.from(`row ${n}`).toString('base64');
    case 'date':
      return '2026-01-02';
    case 'time':
      return '12:34:56';
    case 'timestamp':
      return '2026-01-02 12:34:56.123456';
    case 'timestamptz':
      return '2026-01-02T12:34:56.123456Z';
    case 'json':
      return JSON.stringify({ n: n.toString(), logId: logId.toString() });
    case 'uuid':
      return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0').slice(-12)}`;
    case 'text':
      return `simulated row ${n} of delta ${logId}`;
  }
}

/** The columns of a simulated table: its declared ones, or just its key and logId column. */
function simulatedColumns(t: TableConfig): ColumnInfo[] {
  if (t.columns) return t.columns;
  return [...t.key, t.logIdColumn]
    .filter((c): c is string => c !== undefined)
    .filter((c, i, all) => all.indexOf(c) === i)
    .map((name) => ({ name, type: 'bigint' as const }));
}

async function* syntheticRows(
  t: TableConfig,
  columns: ColumnInfo[],
  from: bigint,
  count: number,
): AsyncGenerator<WireRow> {
  for (let i = 1; i <= count; i++) {
    const logId = from + BigInt(i);
    // The logId column carries the logId itself, as its declared type says (an int is a number).
    yield columns.map((c) =>
      c.name !== t.logIdColumn
        ? syntheticValue(c.type, logId, logId)
        : c.type === 'int'
          ? Number(logId)
          : logId.toString(),
    );
  }
}

async function simulateOnce(ctx: StepContext, options: SimulateOptions): Promise<string[]> {
  const started = process.hrtime.bigint();
  // A directory outbox is written in place, as extract does; a remote one through a local
  // staging directory, each delta published to the store once it is complete.
  const outbox = await openOutbox(ctx.config);
  try {
    return await simulateInto(ctx, options, outbox, started);
  } finally {
    await outbox.close();
  }
}

async function simulateInto(
  ctx: StepContext,
  options: SimulateOptions,
  outbox: Outbox,
  started: bigint,
): Promise<string[]> {
  const { config, log } = ctx;
  // Like extract: adopt what an interrupted run published, remove what it left.
  const state = await readState(config.stateDir, config.name, 'extract');
  let last = (await recoverOutbox(config, log, outbox, state)).logId;
  const written: string[] = [];
  let rows = 0;
  let bytes = 0;
  for (let i = 0; i < options.count; i++) {
    const from = BigInt(last);
    const to = (from + LOGID_STEP).toString();
    const writer = new DeltaWriter({
      dir: outbox.dir,
      job: config.name,
      fromLogId: last,
      toLogId: to,
      maxRowsPerPart: config.delta.maxRowsPerPart,
      compression: config.delta.compression,
      simulated: true,
      signingKey: config.signingKey,
    });
    try {
      for (const t of config.tables!) {
        const columns = simulatedColumns(t);
        const n = options.empty ? 0 : Math.min(options.rows, Number(LOGID_STEP));
        rows += (
          await writer.writeTable(
            t.target ?? t.name,
            t.key,
            columns,
            syntheticRows(t, columns, from, n),
          )
        ).rows;
      }
      const { file, manifest } = await writer.finish();
      bytes += partsOf(manifest).reduce((n, p) => n + p.bytes, 0);
      await outbox.publish(file);
      await writeState(config.stateDir, {
        job: config.name,
        step: 'extract',
        logId: to,
        updatedAt: new Date().toISOString(),
        delta: file,
      });
      written.push(file);
      last = to;
    } catch (err) {
      await writer.abort();
      throw fileError(err, `cannot write a simulated delta into ${outbox.store.where}`);
    }
  }
  logSummary(log, {
    step: 'simulate',
    delta: written.at(-1) ?? null,
    deltas: written.length,
    tables: config.tables!.length,
    rows,
    bytes,
    seconds: elapsedSeconds(started),
  });
  return written;
}

export function simulate(ctx: StepContext, options: SimulateOptions): Promise<string[]> {
  return withStepLock(ctx.config, 'extract', () => simulateOnce(ctx, options));
}
