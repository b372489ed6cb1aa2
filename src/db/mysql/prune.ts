/**
 * Change-log retention on MariaDB/MySQL. A gap cursor (gaps.ts) has shipped every id at or below
 * its `high` except its open gaps, whose transactions may still commit: only ids below the lowest
 * open gap are deleted, so a late commit is never lost.
 */
import { parseGapCursor } from './gaps.js';
import { quoteTable } from './types.js';

/** The highest log_id that `position` and every position before it has shipped, gaps aside. */
export function pruneBound(position: string): string {
  const cursor = parseGapCursor(position);
  let bound = BigInt(cursor.high);
  for (const group of cursor.gaps) {
    for (const [from] of group.ids) {
      if (BigInt(from) - 1n < bound) bound = BigInt(from) - 1n;
    }
  }
  return (bound < 0n ? 0n : bound).toString();
}

/** One batch: values the bound, the minimum age in seconds and the batch size. */
export function pruneChangelogSql(changelog: string): string {
  return (
    `DELETE FROM ${quoteTable(changelog)} WHERE log_id <= ?` +
    ' AND changed_at < NOW(6) - INTERVAL ? SECOND ORDER BY log_id LIMIT ?'
  );
}
