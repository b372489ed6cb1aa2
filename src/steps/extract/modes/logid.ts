/**
 * logid mode: rows with `cursor < logId <= mark`, where the engine's mark is one below which no
 * transaction still running can commit a row (SourceReader.logIdWindow). All logid tables of a
 * delta share one mark; each keeps its own cursor.
 */
import type { LogIdWindow } from '../../../db/types.js';
import type { ModeContext, ModeDelta, OpenMode, TableCapture } from './mode.js';
import { copyColumns, writeBase, writeRows } from './mode.js';

/** Where a table stands: its cursor, the delta logId of a state from before cursors, or null. */
function cursorOf(ctx: ModeContext, plan: TableCapture): string | null {
  const c = ctx.cursors[plan.config.name];
  if (typeof c === 'string') return c;
  return ctx.legacyState && ctx.last !== '0' ? ctx.last : null;
}

export const openLogId: OpenMode = async (ctx, plans): Promise<ModeDelta> => {
  const { source, config, log } = ctx;
  // A table new to the job needs no base: every row it has is after logId 0, and reading them
  // as changes lets delta.maxRowsPerDelta split the backlog. resync and changed columns do.
  const isBase = (p: TableCapture) => ctx.base.has(p.config.name);
  // A base delta is as large as its tables: the row limit only splits backlogs of changes.
  const limit = plans.some(isBase) ? undefined : ctx.budget();
  const window: LogIdWindow = await source.logIdWindow({
    tables: plans.map((p) => ({
      table: p.config.name,
      logIdColumn: p.config.logIdColumn!,
      after: cursorOf(ctx, p) ?? '0',
    })),
    limit,
    maxWaitSeconds: config.capture.maxWaitSeconds,
  });
  if (window.heldBy) {
    log.warn(
      {
        tables: plans.map((p) => p.config.name),
        heldBy: window.heldBy,
        maxWaitSeconds: config.capture.maxWaitSeconds,
      },
      'logid tables held back this run: transactions still running may commit lower logIds (they ship once those end)',
    );
  }
  return {
    highLogId: window.upTo,
    limited: window.limited,
    isBase,
    shared: () => ({}),
    async write(plan, writer) {
      const after = cursorOf(ctx, plan);
      if (isBase(plan)) {
        // Rows at or below the mark are all in this snapshot; later ones may ship again.
        const rows = await writeBase(source, plan, writer);
        return { cursor: window.upTo ?? after ?? '0', rows, limited: false, base: true };
      }
      const from = after ?? '0';
      if (window.upTo === null || BigInt(from) >= BigInt(window.upTo)) {
        return { cursor: undefined, rows: 0, limited: false };
      }
      const request = {
        table: plan.config.name,
        logIdColumn: plan.config.logIdColumn!,
        after: from,
        upTo: window.upTo,
      };
      // The cursor is the window's bound: the rows themselves are never looked at.
      const columns = copyColumns(plan);
      const rows =
        columns && source.copyChanges
          ? (await writer.writeCopyText(source.copyChanges({ ...request, columns }))).rows
          : await writeRows(plan, writer, source.readChanges({ ...request, columns: plan.source }));
      return { cursor: window.upTo, rows, limited: false };
    },
  };
};
