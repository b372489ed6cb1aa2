import { describe, expect, it } from 'vitest';
import {
  formatPosition,
  maxInWindowQuery,
  nthInWindowQuery,
  SNAPSHOT_ALLOWED_SQL,
  STABLE_ROWVERSION_SQL,
  nextPosition,
  parsePosition,
  rowversionLiteral,
  visibleAboveQuery,
  windowCondition,
} from '../../src/db/mssql/window.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { ConfigError } from '../../src/errors.js';
import type { MssqlColumn } from '../../src/db/mssql/types.js';

const LOG_ID = { name: 'log_id', baseType: 'rowversion' } as MssqlColumn;

describe('SQL Server change-log positions', () => {
  it('reads and writes plain marks (the old cursors) and marks with extra rows', () => {
    expect(parsePosition('1200')).toEqual({ stable: '1200', extra: [] });
    expect(formatPosition({ stable: '1200', extra: [] })).toBe('mssql:1200');
    expect(parsePosition('mssql:1200')).toEqual({ stable: '1200', extra: [] });
    const p = { stable: '1200', extra: ['1205', '1300'] };
    expect(formatPosition(p)).toBe('mssql:1200;1205,1300');
    expect(formatPosition(p)).toMatch(/^[a-z][a-z0-9]*:[!-~]+$/); // what manifests accept
    expect(parsePosition(formatPosition(p))).toEqual(p);
    for (const bad of ['mysql:1;2@', 'mssql:1;', 'mssql:x;1', '{}']) {
      expect(() => parsePosition(bad), bad).toThrow(ConfigError);
    }
  });

  it('compares rowversions as binary(8) literals, which use the index', () => {
    expect(rowversionLiteral('255')).toBe('0x00000000000000ff');
    expect(() => rowversionLiteral('1; DROP TABLE x')).toThrow(ConfigError);
  });

  it('reads the rows of one position and not of the one before', () => {
    expect(
      windowCondition(
        'log_id',
        { stable: '16', extra: ['20'] },
        { stable: '32', extra: ['40', '41'] },
      ),
    ).toBe(
      'log_id > 0x0000000000000010 AND NOT log_id IN (0x0000000000000014)' +
        ' AND (log_id <= 0x0000000000000020 OR log_id IN (0x0000000000000028, 0x0000000000000029))',
    );
    expect(windowCondition('log_id', { stable: '1', extra: [] }, { stable: '2', extra: [] })).toBe(
      'log_id > 0x0000000000000001 AND log_id <= 0x0000000000000002',
    );
  });

  it('lists what the snapshot shows above the mark and the previous position', () => {
    const log = tableName('deltasync_changelog', 'dbo');
    expect(visibleAboveQuery(log, LOG_ID, { stable: '10', extra: ['12'] }, '11').text).toBe(
      'SELECT CONVERT(varchar(20), CONVERT(bigint, [log_id])) AS id FROM [dbo].[deltasync_changelog]' +
        ' WHERE [log_id] > 0x000000000000000b AND NOT [log_id] IN (0x000000000000000c) ORDER BY [log_id]',
    );
  });

  it('moves the mark, keeps the extras above it, forgets those below', () => {
    expect(nextPosition({ stable: '10', extra: ['12', '15'] }, '13', ['14', '20'])).toEqual({
      stable: '13',
      extra: ['14', '15', '20'],
    });
    // A mark held down by a long transaction never moves back.
    expect(nextPosition({ stable: '10', extra: [] }, '8', ['11'])).toEqual({
      stable: '10',
      extra: ['11'],
    });
  });
});

describe('SQL Server change-log window cuts', () => {
  const log = tableName('deltasync_changelog', 'dbo');
  const after = { stable: '1', extra: [] };
  const upTo = { stable: '2', extra: [] };

  it('finds the n-th log row of a window, and its last', () => {
    expect(nthInWindowQuery(log, '[log_id]', after, upTo, 3).text).toBe(
      'SELECT CONVERT(varchar(20), CONVERT(bigint, [log_id])) AS id FROM [dbo].[deltasync_changelog]' +
        ' WHERE [log_id] > 0x0000000000000001 AND [log_id] <= 0x0000000000000002' +
        ' ORDER BY [log_id] OFFSET 2 ROWS FETCH NEXT 1 ROWS ONLY',
    );
    expect(() => nthInWindowQuery(log, '[log_id]', after, upTo, 0)).toThrow(ConfigError);
    expect(maxInWindowQuery(log, '[log_id]', after, upTo).text).toBe(
      'SELECT CONVERT(varchar(20), CONVERT(bigint, MAX([log_id]))) AS id FROM [dbo].[deltasync_changelog]' +
        ' WHERE [log_id] > 0x0000000000000001 AND [log_id] <= 0x0000000000000002',
    );
  });

  it('asks whether snapshot isolation is allowed, and reads the mark before the snapshot', () => {
    expect(SNAPSHOT_ALLOWED_SQL).toContain('snapshot_isolation_state = 1');
    expect(STABLE_ROWVERSION_SQL).toBe(
      'SELECT CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable',
    );
  });
});
