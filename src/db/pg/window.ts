/**
 * Exact changelog capture on PostgreSQL, PgQ-style: every change-log row carries the id of the
 * transaction that wrote it (`txid`, xid8, filled by the column's DEFAULT pg_current_xact_id()),
 * and a delta ships the rows visible in its own snapshot and not in the previous delta's.
 *
 * A position (what extract stores as the change log's cursor) names the rows already shipped:
 *   `pg:<snapshot>`                     the rows visible in that pg_snapshot
 *   `pg:<base>;<snapshot>;<logId>`      those of `base` (a snapshot, or a plain logId), plus the
 *                                       rows visible in `snapshot` up to `logId`: a window that
 *                                       delta.maxRowsPerDelta cut short, finished next delta
 *   `<logId>`                           every row with log_id <= logId (before exact capture)
 * A transaction running when a snapshot was taken is invisible in it, listed in its xip or not,
 * so its rows land in the first delta whose snapshot sees its commit, whatever log_id it took
 * and however long it ran: no waiting, nothing left behind.
 *
 * Rows logged before the txid column existed have a NULL txid: `capture --apply` added the
 * column under an exclusive lock, so they were committed before any snapshot that reads it, and
 * count as visible in every snapshot.
 */
import { quoteLiteral } from './types.js';

/** The change log's transaction stamp. */
export const TXID_COLUMN = 'txid';

const PREFIX = 'pg:';
const SNAPSHOT = /^\d+:\d+:(\d+(,\d+)*)?$/;
const LOGID = /^(0|[1-9]\d*)$/;

type Base = { snapshot: string } | { logId: string };

export interface Position {
  base: Base;
  /** A window cut short: the rows of `snapshot` with log_id <= `upTo` are shipped too. */
  pending?: { snapshot: string; upTo: string };
}

function parseBase(text: string): Base | null {
  if (SNAPSHOT.test(text)) return { snapshot: text };
  if (LOGID.test(text)) return { logId: text };
  return null;
}

/** Parses a stored position; null when it is not one this engine made. */
export function parsePosition(text: string): Position | null {
  if (LOGID.test(text)) return { base: { logId: text } };
  if (!text.startsWith(PREFIX)) return null;
  const parts = text.slice(PREFIX.length).split(';');
  const base = parseBase(parts[0]!);
  if (!base) return null;
  if (parts.length === 1) return 'snapshot' in base ? { base } : null;
  const [, snapshot, upTo] = parts;
  if (parts.length !== 3 || !SNAPSHOT.test(snapshot!) || !LOGID.test(upTo!)) return null;
  return { base, pending: { snapshot: snapshot!, upTo: upTo! } };
}

export function formatPosition(p: Position): string {
  const base = 'snapshot' in p.base ? p.base.snapshot : p.base.logId;
  if (!p.pending) return 'snapshot' in p.base ? `${PREFIX}${base}` : base;
  return `${PREFIX}${base};${p.pending.snapshot};${p.pending.upTo}`;
}

const snapshotLiteral = (s: string) => `${quoteLiteral(s)}::pg_snapshot`;

/** SQL: the log row (alias-less columns) is in the base's shipped set. */
function inBase(base: Base): string {
  if ('logId' in base) return `log_id <= ${quoteLiteral(base.logId)}`;
  return `coalesce(pg_visible_in_snapshot(${TXID_COLUMN}, ${snapshotLiteral(base.snapshot)}), true)`;
}

/** SQL: the log row is in the position's shipped set. */
export function inPosition(p: Position): string {
  if (!p.pending) return inBase(p.base);
  const { snapshot, upTo } = p.pending;
  return (
    `(${inBase(p.base)} OR (coalesce(pg_visible_in_snapshot(${TXID_COLUMN}, ` +
    `${snapshotLiteral(snapshot)}), true) AND log_id <= ${quoteLiteral(upTo)}))`
  );
}

/**
 * SQL: the log row is not in the base's shipped set. For a snapshot base, only rows of
 * transactions from its xmin on can qualify: the bound lets the txid index do the work.
 */
function notInBase(base: Base): string {
  if ('logId' in base) return `log_id > ${quoteLiteral(base.logId)}`;
  const s = snapshotLiteral(base.snapshot);
  return `(${TXID_COLUMN} >= pg_snapshot_xmin(${s}) AND NOT pg_visible_in_snapshot(${TXID_COLUMN}, ${s}))`;
}

/** SQL: the rows of the log in `upTo` and not in `after` (`upTo` may be the current snapshot). */
export function windowCondition(after: Position, upTo: Position): string {
  const fresh = after.pending
    ? `NOT ${inPosition(after)} AND ${notInBase(after.base)}`
    : notInBase(after.base);
  return `${fresh} AND ${inPosition(upTo)}`;
}
