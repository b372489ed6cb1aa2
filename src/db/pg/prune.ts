/**
 * Change-log retention on PostgreSQL: which log rows a position has shipped is window.ts's
 * `inPosition` (the rows visible in its snapshot, plus a cut window's rows); the shipped set only
 * grows from one position to the next, so those rows were shipped by it or an earlier one.
 */
import { ConfigError } from '../../errors.js';
import { inPosition, parsePosition } from './window.js';

/**
 * One batch: `$1` the minimum age in seconds, `$2` the batch size. The oldest rows go first, each
 * batch a statement of its own (autocommitted), so no lock is held for long.
 */
export function pruneChangelogSql(log: string, position: string): string {
  const p = parsePosition(position);
  if (!p) {
    throw new ConfigError(
      `the change-log cursor '${position.slice(0, 80)}' was not written by the PostgreSQL reader`,
      { hint: 'check the extract state file of this job' },
    );
  }
  return (
    `DELETE FROM ${log} WHERE log_id IN (SELECT log_id FROM ${log} WHERE ${inPosition(p)}` +
    ` AND changed_at < now() - make_interval(secs => $1) ORDER BY log_id LIMIT $2)`
  );
}
