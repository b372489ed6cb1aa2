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

/**
 * One batch is two statements. First the ids, by a plain (non-locking) read: values the bound,
 * the minimum age in seconds and the batch size. Then `deleteIdsSql` on exactly those ids: a
 * DELETE by range would lock the next record past its end, which is the first open gap's row,
 * held by the very transaction the gap waits for; deleting by primary key locks only the rows
 * that go.
 */
export function pruneCandidatesSql(changelog: string): string {
  return (
    `SELECT log_id FROM ${quoteTable(changelog)} WHERE log_id <= ?` +
    ' AND changed_at < NOW(6) - INTERVAL ? SECOND ORDER BY log_id LIMIT ?'
  );
}

export function deleteIdsSql(changelog: string): string {
  return `DELETE FROM ${quoteTable(changelog)} WHERE log_id IN (?)`;
}
