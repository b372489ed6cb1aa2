/**
 * Change-log retention on SQL Server. A rowversion position (window.ts) has shipped every log row
 * at or below its `stable` mark, plus a few extras above it: only rows at or below the mark are
 * deleted (the extras go with a later position). A change log keyed by a plain number keeps the
 * high-water positions (a decimal): rows at or below it.
 */
import { ConfigError } from '../../errors.js';
import type { Query, TableName } from './sql.js';
import { quoteIdent } from './types.js';
import { parsePosition, rowversionLiteral } from './window.js';

const INT = /^(0|[1-9][0-9]*)$/;

/** One batch of `DELETE TOP (n)`: the oldest shipped rows logged at least `olderThanSeconds` ago. */
export function pruneChangelogQuery(
  log: TableName,
  logIdColumn: string,
  rowversion: boolean,
  position: string,
  olderThanSeconds: number,
  batchSize: number,
): Query {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new ConfigError(`batch size ${batchSize} must be a whole number of at least 1`);
  const stable = parsePosition(position).stable;
  if (!INT.test(stable)) throw new ConfigError(`'${position}' is not a change-log position`);
  const bound = rowversion ? rowversionLiteral(stable) : stable;
  const seconds = Math.floor(olderThanSeconds);
  return {
    text:
      `DELETE TOP (${batchSize}) FROM ${log.quoted} WHERE ${quoteIdent(logIdColumn)} <= ${bound}` +
      ` AND changed_at < DATEADD(second, -${seconds}, SYSDATETIME())`,
    params: [],
  };
}
