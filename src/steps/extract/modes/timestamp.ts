/**
 * timestamp mode: rows after the table's `(ts, key)` cursor up to the settle horizon (the
 * server's time in the delta's snapshot minus `capture.timestampLagSeconds`), at most the rows
 * left in the delta's budget. Not exact: a row written with a timestamp older than the horizon
 * after the horizon passed it is never read (see the README).
 */
import type { KeysetCursor } from '../../../db/types.js';
import { ConfigError } from '../../../errors.js';
import type { ModeDelta, OpenMode, TableCapture } from './mode.js';
import { copyColumns, writeBase } from './mode.js';
import { decodeLine } from '../../../format/copy-text.js';

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

export const openTimestamp: OpenMode = async (ctx): Promise<ModeDelta> => {
  const { source, config } = ctx;
  const horizons = new Map<string, string>();
  const horizon = async (type: 'timestamp' | 'timestamptz') => {
    let h = horizons.get(type);
    if (!h) {
      h = minusSeconds(await source.serverTime(type), config.capture.timestampLagSeconds);
      horizons.set(type, h);
    }
    return h;
  };
  const typeOf = (p: TableCapture) => {
    const t = p.config;
    const type = p.source.find((c) => c.name === t.timestampColumn)!.type;
    if (type !== 'timestamp' && type !== 'timestamptz') {
      throw new ConfigError(
        `tables.${t.name}.timestampColumn: '${t.timestampColumn}' is a ${type} column, not a timestamp`,
      );
    }
    return type;
  };
  const isBase = (p: TableCapture) => ctx.base.has(p.config.name);
  return {
    highLogId: null,
    limited: false,
    isBase,
    shared: () => ({}),
    async write(plan, writer) {
      const upTo = await horizon(typeOf(plan));
      if (isBase(plan)) {
        // Rows changed from the horizon on may change again before it passes them: read again.
        const rows = await writeBase(source, plan, writer);
        return { cursor: { ts: upTo, key: [] }, rows, limited: false, base: true };
      }
      const budget = ctx.budget();
      if (budget !== undefined && budget <= 0) {
        return { cursor: undefined, rows: 0, limited: true };
      }
      const { config: t, shaper } = plan;
      const tsIndex = plan.source.findIndex((c) => c.name === t.timestampColumn);
      const stored = ctx.cursors[t.name];
      let after: KeysetCursor | null =
        stored && typeof stored === 'object'
          ? stored
          : t.startAt
            ? { ts: t.startAt, key: [] }
            : null;
      const request = { table: t.name, tsColumn: t.timestampColumn!, key: t.key, after, upTo };
      const columns = copyColumns(plan);
      const tsAt = columns?.findIndex((c) => c.name === t.timestampColumn) ?? -1;
      if (columns && tsAt >= 0 && source.copyKeyset) {
        const text = source.copyKeyset({ ...request, columns, limit: budget });
        const { rows, lastLine } = await writer.writeCopyText(text);
        // The cursor is the last row's (ts, key): only that one line is decoded.
        if (lastLine) {
          const last = decodeLine(
            lastLine.toString('utf8'),
            columns.map((c) => c.type),
          );
          const keyAt = t.key.map((k) => columns.findIndex((c) => c.name === k));
          after = { ts: last[tsAt]!, key: keyAt.map((i) => last[i]!) };
        }
        const limited = budget !== undefined && rows >= budget;
        return { cursor: after ?? undefined, rows, limited };
      }
      let read = 0;
      let n = 0;
      for await (const sourceRow of source.readKeyset({
        ...request,
        columns: plan.source,
        limit: budget,
      })) {
        read++;
        after = { ts: sourceRow[tsIndex]!, key: shaper.keyOf(sourceRow) };
        const row = shaper.row(sourceRow);
        if (row) {
          await writer.upsert(row);
          n++;
        }
      }
      const limited = budget !== undefined && read >= budget;
      return { cursor: after ?? undefined, rows: n, limited };
    },
  };
};
