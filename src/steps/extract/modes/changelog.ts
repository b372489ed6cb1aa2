/**
 * changelog mode: the keys that the change log names in this delta's window, each as its row in
 * the delta's snapshot or as a delete. The window and the cursor, shared by every changelog
 * table under `changelog:<log>`, are the engine's (SourceReader.changelogWindow): on PostgreSQL
 * the log rows visible in this snapshot and not in the previous one; elsewhere a stable
 * high-water mark. Each table's own cursor only records the delta that seeded it.
 */
import type { ChangelogWindow } from '../../../db/types.js';
import type { ModeDelta, OpenMode, TableCapture } from './mode.js';
import { copyColumns, writeBase } from './mode.js';

export const changelogCursorKey = (changelog: string) => `changelog:${changelog}`;

export const openChangelog: OpenMode = async (ctx, plans): Promise<ModeDelta> => {
  const { source, config } = ctx;
  const changelog = config.capture.changelogTable;
  const key = changelogCursorKey(changelog);
  const stored = ctx.cursors[key];
  const after = typeof stored === 'string' ? stored : null;
  // A change log read by a version without seeding (no table has a seed mark): its tables were
  // already being shipped, so none is taken for new.
  const seededBefore = after !== null && !plans.some((p) => ctx.cursors[p.config.name]);
  const isBase = (p: TableCapture) =>
    ctx.base.has(p.config.name) ||
    after === null ||
    (!seededBefore && ctx.cursors[p.config.name] === undefined);
  await source.checkCapture({
    changelog,
    tables: plans.map((p) => ({ table: p.config.name, key: p.shaper.sourceKey })),
  });
  const window: ChangelogWindow = await source.changelogWindow({
    changelog,
    after,
    limit: ctx.budget(),
    maxWaitSeconds: config.capture.maxWaitSeconds,
  });
  const moves = window.cursor !== window.after;
  return {
    highLogId: window.highLogId,
    limited: window.limited,
    isBase,
    shared: () => ({ [key]: window.cursor }),
    async write(plan, writer, toLogId) {
      if (isBase(plan)) {
        // The base is the table as of this snapshot: its log rows up to here are in it.
        const rows = await writeBase(source, plan, writer);
        return { cursor: toLogId, rows, limited: false, base: true };
      }
      const seeded = ctx.cursors[plan.config.name] ?? toLogId;
      if (!moves) return { cursor: seeded, rows: 0, limited: false };
      const request = {
        changelog,
        table: plan.config.name,
        key: plan.config.key,
        after: window.after,
        upTo: window.cursor,
      };
      const columns = copyColumns(plan);
      if (columns && source.copyChangelog) {
        // Two reads of the same snapshot: a key is either in the one or in the other.
        const upserts = source.copyChangelog({ ...request, columns }, 'upserts');
        const { rows } = await writer.writeCopyText(upserts, 'rows');
        const deletes = source.copyChangelog({ ...request, columns }, 'deletes');
        const gone = await writer.writeCopyText(deletes, 'deletes');
        return { cursor: seeded, rows: rows + gone.rows, limited: false };
      }
      let n = 0;
      for await (const change of source.readChangelog({ ...request, columns: plan.source })) {
        if (change.op === 'delete') {
          await writer.delete(change.key);
          n++;
        } else {
          const row = plan.shaper.row(change.row);
          if (row) {
            await writer.upsert(row);
            n++;
          }
        }
      }
      return { cursor: seeded, rows: n, limited: false };
    },
  };
};
