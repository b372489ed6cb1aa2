/**
 * Change-log retention: deletes the rows of the change log that extract has shipped (at or
 * below its change-log cursor, as the engine reads a position) and that are older than
 * `retention.keepHours`, in small batches so that the source is never locked for long. Run by
 * extract after each successful run when `retention.changelog` is true (the extract account then
 * needs DELETE on the change log, and nothing more), or by `deltasync capture --prune` with a DBA
 * account from cron.
 */
import type { LoadedConfig } from '../../config/load.js';
import { openSource } from '../../db/index.js';
import { readState } from '../../format/state.js';
import type { Logger } from '../../log.js';
import { changelogCursorKey } from '../extract/modes/changelog.js';
import { retentionRules } from './index.js';

/** Rows per DELETE: each batch commits on its own, so triggers writing the log wait briefly. */
export const CHANGELOG_BATCH_ROWS = 5000;

export interface ChangelogPruneResult {
  changelog: string;
  /** Extract's change-log position the rows were deleted up to, or null when nothing shipped. */
  position: string | null;
  deleted: number;
}

/** Null when the job has no table in changelog mode. */
export async function pruneChangelog(
  config: LoadedConfig,
  log: Logger,
): Promise<ChangelogPruneResult | null> {
  if (!config.tables?.some((t) => t.mode === 'changelog') || !config.source) return null;
  const changelog = config.capture.changelogTable;
  const state = await readState(config.stateDir, config.name, 'extract');
  const stored = state.cursors?.[changelogCursorKey(changelog)];
  if (typeof stored !== 'string') {
    log.info({ changelog }, 'change log not pruned: extract has shipped none of it yet');
    return { changelog, position: null, deleted: 0 };
  }
  const source = await openSource(config.source);
  try {
    const deleted = await source.pruneChangelog({
      changelog,
      position: stored,
      olderThanSeconds: retentionRules(config).keepHours * 3600,
      batchSize: CHANGELOG_BATCH_ROWS,
    });
    log.info({ changelog, position: stored, deleted }, 'change log pruned');
    return { changelog, position: stored, deleted };
  } finally {
    await source.close();
  }
}
