/** Change-log retention SQL per engine (src/db/<engine>/prune.ts), as pure functions. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { pruneChangelogQuery } from '../../src/db/mssql/prune.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { formatGapCursor } from '../../src/db/mysql/gaps.js';
import { deleteIdsSql, pruneBound, pruneCandidatesSql } from '../../src/db/mysql/prune.js';
import { pruneChangelogSql as pgSql } from '../../src/db/pg/prune.js';

describe('PostgreSQL', () => {
  it('deletes the oldest rows of the position’s shipped set, in one bounded batch', () => {
    const sql = pgSql('"public"."deltasync_changelog"', 'pg:100:105:101,103');
    expect(sql).toBe(
      'DELETE FROM "public"."deltasync_changelog" WHERE log_id IN (SELECT log_id FROM "public"."deltasync_changelog"' +
        " WHERE coalesce(pg_visible_in_snapshot(txid, '100:105:101,103'::pg_snapshot), true)" +
        ' AND changed_at < now() - make_interval(secs => $1) ORDER BY log_id LIMIT $2)',
    );
  });

  it('a window cut short counts its rows up to the cut', () => {
    const sql = pgSql('log', 'pg:100:105:;120:130:;777');
    expect(sql).toContain(
      "pg_visible_in_snapshot(txid, '120:130:'::pg_snapshot), true) AND log_id <= '777'",
    );
  });

  it('a plain logId (before exact capture) is every row at or below it', () => {
    expect(pgSql('log', '42')).toContain("WHERE log_id <= '42' AND changed_at");
  });

  it('refuses a position another engine wrote', () => {
    expect(() => pgSql('log', 'mysql:120')).toThrow(ConfigError);
  });
});

describe('MariaDB/MySQL', () => {
  it('without open gaps, everything up to the high mark', () => {
    expect(pruneBound('mysql:120')).toBe('120');
    expect(pruneBound('57')).toBe('57');
  });

  it('never reaches an open gap: a late commit there must still ship', () => {
    const cursor = formatGapCursor({
      high: '120',
      gaps: [
        { ids: [['105', '107']], watch: ['4411'] },
        { ids: [['101', '101']], watch: null },
      ],
    });
    expect(pruneBound(cursor)).toBe('100');
    expect(
      pruneBound(formatGapCursor({ high: '9', gaps: [{ ids: [['1', '3']], watch: [] }] })),
    ).toBe('0');
  });

  it('one batch: the ids read without locks, oldest first, then deleted by key', () => {
    expect(pruneCandidatesSql('deltasync_changelog')).toBe(
      'SELECT log_id FROM `deltasync_changelog` WHERE log_id <= ? AND changed_at < NOW(6) - INTERVAL ? SECOND ORDER BY log_id LIMIT ?',
    );
    expect(deleteIdsSql('deltasync_changelog')).toBe(
      'DELETE FROM `deltasync_changelog` WHERE log_id IN (?)',
    );
  });

  it('refuses a position another engine wrote', () => {
    expect(() => pruneBound('pg:1:2:')).toThrow(ConfigError);
  });
});

describe('SQL Server', () => {
  const log = tableName('deltasync_changelog', 'dbo');

  it('a rowversion position deletes at or below its stable mark, extras left for later', () => {
    const q = pruneChangelogQuery(log, 'log_id', true, 'mssql:4096;4100,4102', 3600, 5000);
    expect(q.text).toBe(
      'DELETE TOP (5000) FROM [dbo].[deltasync_changelog] WHERE [log_id] <= 0x0000000000001000' +
        ' AND changed_at < DATEADD(second, -3600, SYSDATETIME())',
    );
    expect(q.params).toEqual([]);
  });

  it('a numeric log keeps high-water positions', () => {
    const q = pruneChangelogQuery(log, 'log_id', false, '77', 0, 10);
    expect(q.text).toContain('WHERE [log_id] <= 77 AND changed_at < DATEADD(second, -0,');
  });

  it('refuses a bad batch size and a foreign position', () => {
    expect(() => pruneChangelogQuery(log, 'log_id', true, 'mssql:1', 0, 0)).toThrow(ConfigError);
    expect(() => pruneChangelogQuery(log, 'log_id', true, 'pg:1:2:', 0, 10)).toThrow(ConfigError);
  });
});
