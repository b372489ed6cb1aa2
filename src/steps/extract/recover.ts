/**
 * Before extracting, bring the state up to date with the outbox: adopt complete deltas that an
 * interrupted run published but did not record, then remove files of deltas that never got their
 * manifest, and parts whose manifest an interrupted prune removed.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isTemporaryName } from '../../format/atomic-file.js';
import { listManifests } from '../../format/delta-dir.js';
import { compareLogIds, logIdOfFile } from '../../format/logid.js';
import { readManifest } from '../../format/manifest.js';
import { writeState, type StepState } from '../../format/state.js';
import type { StepContext } from '../common.js';

export async function recoverOutbox(ctx: StepContext, state: StepState): Promise<StepState> {
  const { config, log } = ctx;
  const outbox = config.outbox!;
  for (const entry of await listManifests(outbox, state.logId)) {
    const manifest = await readManifest(entry.path, config.name);
    if (manifest.fromLogId !== state.logId) break;
    log.warn({ delta: entry.file }, 'adopting a delta published by an interrupted run');
    state = {
      ...state,
      logId: manifest.toLogId,
      updatedAt: new Date().toISOString(),
      delta: entry.file,
      ...(manifest.cursors ? { cursors: manifest.cursors } : {}),
    };
    await writeState(config.stateDir, state);
  }
  const known = new Set((await listManifests(outbox)).map((m) => m.logId));
  for (const name of await readdir(outbox)) {
    const logId = logIdOfFile(name.replace(/^\./, ''));
    if (logId === null) continue;
    if (compareLogIds(logId, state.logId) <= 0) {
      // Every delta up to the state was published whole: a part there without its manifest was
      // left by a prune killed between the two (docs/format.md, "Deleted deltas").
      if (!isTemporaryName(name) && !known.has(logId)) {
        log.warn({ file: name }, 'removing a part left by an interrupted prune');
        await rm(join(outbox, name), { force: true });
      }
      continue;
    }
    if (isTemporaryName(name) || !known.has(logId)) {
      log.warn({ file: name }, 'removing a file left by an interrupted extract');
      await rm(join(outbox, name), { force: true });
    }
  }
  return state;
}
