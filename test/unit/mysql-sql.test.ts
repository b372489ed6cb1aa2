import { describe, expect, it } from 'vitest';
import { runningWritersSql } from '../../src/db/mysql/high-water.js';
import {
  changesSql,
  deleteSql,
  holesSql,
  keysetSql,
  maxLogIdSql,
  nthAfterSql,
  positionWindowSql,
  visibleInSql,
  maxAcrossSql,
  nthLogIdSql,
  readAllSql,
  rowAfter,
} from '../../src/db/mysql/sql.js';
import { ConfigError } from '../../src/errors.js';

describe('mysql read SQL', () => {
  it('reads a logId range with the bounds inlined as numbers, refusing anything else', () => {
    expect(changesSql('db.t', ['`a`', '`f` + 0e0'], 'log_id', '5', '10')).toBe(
      'SELECT `a`, `f` + 0e0 FROM `db`.`t` WHERE `log_id` > 5 AND `log_id` <= 10 ORDER BY `log_id`',
    );
    expect(() => changesSql('t', ['`a`'], 'log_id', '5; DROP TABLE t', '10')).toThrow(ConfigError);
  });

  it('takes the maximum over several tables in one statement', () => {
    expect(
      maxAcrossSql([
        { table: 'a', logIdColumn: 'log_id' },
        { table: 'b', logIdColumn: 'lid' },
      ]),
    ).toBe(
      'SELECT MAX(m) AS m FROM (SELECT MAX(`log_id`) AS m FROM `a` UNION ALL SELECT MAX(`lid`) AS m FROM `b`) u',
    );
  });

  it('finds the n-th logId from at most n candidates per table', () => {
    expect(
      nthLogIdSql({
        tables: [
          { table: 'a', logIdColumn: 'log_id', after: '5' },
          { table: 'b', logIdColumn: 'lid', after: '7' },
        ],
        upTo: '100',
        n: 3,
      }),
    ).toBe(
      'SELECT l FROM ((SELECT `log_id` AS l FROM `a` WHERE `log_id` > 5 AND `log_id` <= 100 ORDER BY `log_id` LIMIT 3)' +
        ' UNION ALL (SELECT `lid` AS l FROM `b` WHERE `lid` > 7 AND `lid` <= 100 ORDER BY `lid` LIMIT 3))' +
        ' u ORDER BY l LIMIT 1 OFFSET 2',
    );
    expect(() =>
      nthLogIdSql({ tables: [{ table: 'a', logIdColumn: 'l', after: '0' }], upTo: '1', n: 0 }),
    ).toThrow(ConfigError);
  });

  it('spells out the keyset comparison so the range optimizer can use an index', () => {
    expect(rowAfter(['ts', 'a', 'b'], ['T', '1', "'x'"])).toBe(
      "(`ts` > T OR (`ts` = T AND (`a` > 1 OR (`a` = 1 AND `b` > 'x'))))",
    );
    const base = {
      table: 'events',
      selects: ['`id`', '`changed`'],
      tsColumn: 'changed',
      key: ['a', 'b'],
      upTo: "'2026-01-01 10:00:00'",
    };
    expect(
      keysetSql({ ...base, after: { ts: "'2026-01-01 09:00:00'", key: ['1', "'x'"] }, limit: 10 }),
    ).toBe(
      "SELECT `id`, `changed` FROM `events` WHERE `changed` <= '2026-01-01 10:00:00'" +
        " AND `changed` >= '2026-01-01 09:00:00'" +
        " AND (`changed` > '2026-01-01 09:00:00' OR (`changed` = '2026-01-01 09:00:00' AND (`a` > 1 OR (`a` = 1 AND `b` > 'x'))))" +
        ' ORDER BY `changed`, `a`, `b` LIMIT 10',
    );
    // A configured start: every row at or after it.
    expect(keysetSql({ ...base, after: { ts: "'2026-01-01'", key: [] } })).toBe(
      "SELECT `id`, `changed` FROM `events` WHERE `changed` <= '2026-01-01 10:00:00' AND `changed` >= '2026-01-01'" +
        ' ORDER BY `changed`, `a`, `b`',
    );
    expect(keysetSql({ ...base, after: null })).toBe(
      "SELECT `id`, `changed` FROM `events` WHERE `changed` <= '2026-01-01 10:00:00' ORDER BY `changed`, `a`, `b`",
    );
    expect(() => keysetSql({ ...base, after: { ts: 'T', key: ['1'] } })).toThrow(
      /cursor has 1 key values/,
    );
  });

  it('reads whole tables in key order', () => {
    expect(readAllSql('t', ['`k`', '`v`'], ['k', 'j'])).toBe(
      'SELECT `k`, `v` FROM `t` ORDER BY `k`, `j`',
    );
  });
});

describe('mysql delete SQL', () => {
  it('deletes a batch of single or composite keys with IN', () => {
    expect(deleteSql('t', ['id'], [['1'], ['2']])).toBe('DELETE FROM `t` WHERE `id` IN (1, 2)');
    expect(
      deleteSql(
        'db.t',
        ['a', 'b'],
        [
          ['1', "'x'"],
          ['2', "'y'"],
        ],
      ),
    ).toBe("DELETE FROM `db`.`t` WHERE (`a`, `b`) IN ((1, 'x'), (2, 'y'))");
  });
});

describe('mysql high-water SQL', () => {
  it('lists read-write transactions and our own, marked with a token', () => {
    expect(runningWritersSql('witness abc')).toBe(
      'SELECT /* deltasync witness abc */ trx_id AS id, trx_mysql_thread_id = CONNECTION_ID() AS mine,' +
        ' IF(trx_mysql_thread_id = CONNECTION_ID(), trx_query, NULL) AS query,' +
        " CONCAT('thread ', trx_mysql_thread_id, ' (transaction ', trx_id, ', started ', trx_started," +
        " IFNULL(CONCAT(', running: ', LEFT(trx_query, 80)), ', idle'), ')') AS holder" +
        ' FROM information_schema.INNODB_TRX' +
        ' WHERE trx_mysql_thread_id = CONNECTION_ID() OR (trx_id BETWEEN 1 AND 281474976710655 AND trx_is_read_only = 0)',
    );
  });
});

describe('mysql change-log window SQL', () => {
  it('reads the rows of one position and not of another', () => {
    expect(
      positionWindowSql(
        {
          high: '10',
          gaps: [
            {
              ids: [
                ['4', '4'],
                ['7', '8'],
              ],
              watch: ['1'],
            },
          ],
        },
        { high: '20', gaps: [{ ids: [['15', '15']], watch: ['2'] }] },
        'cl',
      ),
    ).toBe(
      '(log_id > 10 OR log_id = 4 OR log_id BETWEEN 7 AND 8) AND log_id <= 20 AND NOT (log_id = 15)',
    );
    expect(positionWindowSql({ high: '10', gaps: [] }, { high: '20', gaps: [] }, 'cl')).toBe(
      'log_id > 10 AND log_id <= 20',
    );
  });

  it('finds the ids a snapshot does not show between two bounds', () => {
    expect(holesSql('cl', '10', '20')).toBe(
      'SELECT CAST(prev + 1 AS CHAR) AS a, CAST(log_id - 1 AS CHAR) AS b FROM (' +
        'SELECT log_id, COALESCE(LAG(log_id) OVER (ORDER BY log_id), 10) AS prev FROM `cl`' +
        ' WHERE log_id > 10 AND log_id <= 20) x WHERE log_id > prev + 1 ORDER BY log_id',
    );
    expect(() => holesSql('cl', '1 OR 1', '2')).toThrow(ConfigError);
  });

  it('reads the visible ids of open gaps, the maximum and the n-th id', () => {
    expect(visibleInSql('cl', [['3', '5']])).toBe(
      'SELECT CAST(log_id AS CHAR) AS l FROM `cl` WHERE log_id BETWEEN 3 AND 5 ORDER BY log_id',
    );
    expect(maxLogIdSql('db.cl')).toBe('SELECT CAST(MAX(log_id) AS CHAR) AS m FROM `db`.`cl`');
    expect(nthAfterSql('cl', '7', 100)).toBe(
      'SELECT CAST(log_id AS CHAR) AS l FROM `cl` WHERE log_id > 7 ORDER BY log_id LIMIT 1 OFFSET 99',
    );
    expect(() => nthAfterSql('cl', '7', 0)).toThrow(ConfigError);
  });
});
