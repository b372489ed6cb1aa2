/**
 * snapshot mode: every row, compared by hash with the previous run's snapshot file, as inserts,
 * updates and deletes (see ../snapshot.ts). As a base, every row goes out and the comparison
 * starts again from this delta's snapshot file.
 */
import type { ModeDelta, OpenMode, TableCapture } from './mode.js';
import { diffSnapshot } from '../snapshot.js';

export const openSnapshot: OpenMode = async (ctx): Promise<ModeDelta> => {
  const { source, config } = ctx;
  const isBase = (p: TableCapture) => ctx.base.has(p.config.name);
  return {
    highLogId: null,
    limited: false,
    isBase,
    shared: () => ({}),
    async write(plan, writer, toLogId) {
      const stored = ctx.cursors[plan.config.name];
      const base = isBase(plan);
      const previous = !base && typeof stored === 'string' ? stored : null;
      const rows = source.readAll({
        table: plan.config.name,
        columns: plan.source,
        key: plan.config.key,
      });
      const changed = await diffSnapshot(rows, plan.shaper, writer, {
        dir: config.stateDir,
        job: config.name,
        table: plan.config.name,
        previous,
        next: toLogId,
        always: base,
      });
      // Unchanged tables keep pointing at their previous snapshot.
      const cursor = changed > 0 || base ? toLogId : (previous ?? undefined);
      return { cursor, rows: changed, limited: false, base };
    },
  };
};
