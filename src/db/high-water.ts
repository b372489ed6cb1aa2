/**
 * Capture windows for engines whose exactness comes from a stable high-water mark (a logId below
 * which no running transaction can still commit a row): logid mode on every engine, and changelog
 * mode on engines whose change log carries no transaction stamp. The window is `(after, mark]`,
 * cut to the row limit; positions are plain logIds.
 */
import type {
  ChangelogWindow,
  ChangelogWindowRequest,
  HighWaterMark,
  HighWaterRequest,
  LogIdWindow,
  LogIdWindowRequest,
  NthLogIdRequest,
} from './types.js';
import { CHANGELOG_LOGID_COLUMN } from './types.js';

const isLogId = (value: string) => /^(0|[1-9][0-9]*)$/.test(value);
const compareLogIds = (a: string, b: string) => {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
};

/**
 * True when every table has a cursor and none shows a logId above it: the window is empty,
 * and stableHighWater need not wait for running transactions (see HighWaterRequest).
 */
export function caughtUp(tables: { after?: string }[], high: string): boolean {
  return (
    tables.length > 0 &&
    tables.every((t) => t.after !== undefined && compareLogIds(t.after, high) >= 0)
  );
}

/** What an engine gives for a high-water window. */
export interface HighWaterSource {
  stableHighWater(request: HighWaterRequest): Promise<HighWaterMark>;
  nthLogId(request: NthLogIdRequest): Promise<string | null>;
}

export async function logIdWindowByHighWater(
  source: HighWaterSource,
  req: LogIdWindowRequest,
): Promise<LogIdWindow> {
  if (req.tables.length === 0) return { upTo: null, limited: false };
  const { high, heldBy } = await source.stableHighWater({
    tables: req.tables.map(({ table, logIdColumn, after }) => ({ table, logIdColumn, after })),
    maxWaitSeconds: req.maxWaitSeconds,
  });
  if (high === null) return { upTo: null, limited: false, ...(heldBy ? { heldBy } : {}) };
  if (!req.tables.some((t) => compareLogIds(t.after, high) < 0)) {
    return { upTo: null, limited: false };
  }
  if (req.limit) {
    const nth = await source.nthLogId({ tables: req.tables, upTo: high, n: req.limit });
    if (nth !== null && compareLogIds(nth, high) < 0) return { upTo: nth, limited: true };
  }
  return { upTo: high, limited: false };
}

export async function changelogWindowByHighWater(
  source: HighWaterSource,
  req: ChangelogWindowRequest,
): Promise<ChangelogWindow> {
  const table = { table: req.changelog, logIdColumn: CHANGELOG_LOGID_COLUMN };
  if (req.after === null) {
    // Never read: the tables are seeded from this snapshot; the log starts at its mark.
    const { high: mark } = await source.stableHighWater({
      tables: [table],
      maxWaitSeconds: req.maxWaitSeconds,
    });
    const at = mark ?? '0';
    return { after: at, cursor: at, highLogId: null, limited: false };
  }
  const after = req.after;
  if (!isLogId(after)) {
    throw new Error(`change-log cursor '${after}' was not made by this engine`);
  }
  const none = { after, cursor: after, highLogId: null, limited: false };
  const { high } = await source.stableHighWater({
    tables: [{ ...table, after }],
    maxWaitSeconds: req.maxWaitSeconds,
  });
  if (high === null || compareLogIds(after, high) >= 0) return none;
  if (req.limit) {
    const nth = await source.nthLogId({ tables: [{ ...table, after }], upTo: high, n: req.limit });
    if (nth !== null && compareLogIds(nth, high) < 0) {
      return { after, cursor: nth, highLogId: nth, limited: true };
    }
  }
  return { after, cursor: high, highLogId: high, limited: false };
}
