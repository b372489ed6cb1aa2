/**
 * extract: everything that changed in the source since the last delta becomes the next delta.
 *
 * Crash safety: parts are published before the manifest and the state after it. A crash before
 * the manifest leaves orphan parts, removed by the next run; a crash after it leaves a complete
 * delta the state does not know, which the next run adopts instead of extracting it again.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openSource } from '../db/index.js';
import type { ColumnInfo, SourceReader } from '../db/types.js';
import { ConfigError } from '../errors.js';
import { isTemporaryName } from '../format/atomic-file.js';
import { listManifests } from '../format/delta-dir.js';
import { DeltaWriter } from '../format/delta-writer.js';
import { compareLogIds, logIdOfFile, maxLogId } from '../format/logid.js';
import { readManifest } from '../format/manifest.js';
import { readState, writeState, type StepState } from '../format/state.js';
import { logSummary } from '../log.js';
import { elapsedSeconds, fileError, withStepLock, type StepContext } from './common.js';

export interface ExtractResult {
  /** Manifest file of the delta written, or null when nothing had changed. */
  delta: string | null;
  fromLogId: string;
  toLogId: string;
  rows: number;
  bytes: number;
}

/**
 * Brings the state up to date with what is already in the outbox: adopts complete deltas that a
 * crashed run published but did not record, then removes files of deltas that never got a manifest.
 */
async function recoverOutbox(
  ctx: StepContext,
  outbox: string,
  state: StepState,
): Promise<StepState> {
  const { config, log } = ctx;
  for (const entry of await listManifests(outbox, state.logId)) {
    const manifest = await readManifest(entry.path, config.name);
    if (manifest.fromLogId !== state.logId) break;
    log.warn({ delta: entry.file }, 'adopting a delta published by an interrupted run');
    state = {
      ...state,
      logId: manifest.toLogId,
      updatedAt: new Date().toISOString(),
      delta: entry.file,
    };
    await writeState(config.stateDir, state);
  }
  const known = new Set((await listManifests(outbox)).map((m) => m.logId));
  for (const name of await readdir(outbox)) {
    const logId = logIdOfFile(name.replace(/^\./, ''));
    if (logId === null || compareLogIds(logId, state.logId) <= 0) continue;
    if (isTemporaryName(name) || !known.has(logId)) {
      log.warn({ file: name }, 'removing a file left by an interrupted extract');
      await rm(join(outbox, name), { force: true });
    }
  }
  return state;
}

async function tableColumns(
  source: SourceReader,
  table: { name: string; key: string[]; logIdColumn: string },
): Promise<ColumnInfo[]> {
  const columns = await source.columns(table.name);
  const names = new Set(columns.map((c) => c.name));
  for (const needed of [...table.key, table.logIdColumn]) {
    if (!names.has(needed))
      throw new ConfigError(`tables.${table.name}: column '${needed}' is not in the source table`);
  }
  return columns;
}

async function extractOnce(ctx: StepContext): Promise<ExtractResult> {
  const { config, log } = ctx;
  const started = process.hrtime.bigint();
  const outbox = config.outbox!;
  const tables = config.tables!;
  await mkdir(outbox, { recursive: true }).catch((err) => {
    throw fileError(err, `cannot create outbox ${outbox}`);
  });
  let state = await readState(config.stateDir, config.name, 'extract');
  state = await recoverOutbox(ctx, outbox, state);
  const last = state.logId;

  const source = await openSource(config.source!);
  try {
    const columns = new Map<string, ColumnInfo[]>();
    let high: string | null = null;
    for (const t of tables) {
      columns.set(t.name, await tableColumns(source, t));
      const m = await source.maxLogId(t.name, t.logIdColumn);
      if (m !== null) high = high === null ? m : maxLogId(high, m);
    }
    if (high === null || compareLogIds(high, last) <= 0) {
      log.debug({ logId: last }, 'no changes since the last delta');
      logSummary(log, {
        step: 'extract',
        delta: null,
        deltas: 0,
        tables: 0,
        rows: 0,
        bytes: 0,
        seconds: elapsedSeconds(started),
      });
      return { delta: null, fromLogId: last, toLogId: last, rows: 0, bytes: 0 };
    }

    const writer = new DeltaWriter({
      dir: outbox,
      job: config.name,
      fromLogId: last,
      toLogId: high,
      maxRowsPerPart: config.delta.maxRowsPerPart,
      compression: config.delta.compression,
    });
    let published;
    try {
      for (const t of tables) {
        const cols = columns.get(t.name)!;
        const rows = source.readChanges({
          table: t.name,
          columns: cols,
          logIdColumn: t.logIdColumn,
          after: last,
          upTo: high,
        });
        const written = await writer.writeTable(t.name, t.key, cols, rows);
        log.debug(
          { table: t.name, rows: written.rows, parts: written.parts.length },
          'table extracted',
        );
      }
      published = await writer.finish();
    } catch (err) {
      await writer.abort();
      throw fileError(err, `cannot write delta ${high} into ${outbox}`);
    }
    const { manifest, file } = published;
    await writeState(config.stateDir, {
      job: config.name,
      step: 'extract',
      logId: high,
      updatedAt: new Date().toISOString(),
      delta: file,
    });
    const rows = manifest.tables.reduce((n, t) => n + t.rows, 0);
    const bytes = manifest.tables.flatMap((t) => t.parts).reduce((n, p) => n + p.bytes, 0);
    logSummary(log, {
      step: 'extract',
      delta: file,
      deltas: 1,
      tables: manifest.tables.filter((t) => t.rows > 0).length,
      rows,
      bytes,
      seconds: elapsedSeconds(started),
    });
    return { delta: file, fromLogId: last, toLogId: high, rows, bytes };
  } finally {
    await source.close();
  }
}

/** Runs extract under the job's extract lock. */
export function extract(ctx: StepContext): Promise<ExtractResult> {
  return withStepLock(ctx.config, 'extract', () => extractOnce(ctx));
}
