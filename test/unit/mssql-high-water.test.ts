import { describe, expect, it } from 'vitest';
import {
  maxLogIdsSql,
  POLL_MS,
  runningSql,
  stableHighWater,
  writersSql,
  type HighWaterColumn,
  type HighWaterDeps,
} from '../../src/db/mssql/high-water.js';
import { tableName } from '../../src/db/mssql/sql.js';
import { type ReflectedColumn } from '../../src/db/mssql/types.js';
import { column as mssqlColumn } from '../helpers/mssql.js';

const column = (name: string, base_type: string, extra: Partial<ReflectedColumn> = {}) =>
  mssqlColumn(name, base_type, { max_length: 8, ...extra });

const orders: HighWaterColumn = {
  table: tableName('orders', 'dbo'),
  logId: column('id', 'bigint'),
};
const lines: HighWaterColumn = {
  table: tableName("sales.order's lines", 'dbo'),
  logId: column('seq', 'decimal', { num_precision: 20, num_scale: 0 }),
};
const log: HighWaterColumn = {
  table: tableName('deltasync_changelog', 'dbo'),
  logId: column('log_id', 'timestamp'),
};

describe('high-water SQL', () => {
  it('reads every maximum in one statement, as text, with the rowversion horizon when needed', () => {
    expect(maxLogIdsSql([orders, log])).toBe(
      'SELECT (SELECT CONVERT(varchar(40), MAX([id])) FROM [dbo].[orders]) AS m0, ' +
        '(SELECT CONVERT(varchar(20), CONVERT(bigint, MAX([log_id]))) FROM [dbo].[deltasync_changelog]) AS m1, ' +
        'CONVERT(varchar(20), CONVERT(bigint, MIN_ACTIVE_ROWVERSION()) - 1) AS stable_rv',
    );
    expect(maxLogIdsSql([orders])).not.toContain('MIN_ACTIVE_ROWVERSION');
  });

  it('lists the transactions of other sessions that hold a write lock on the tables', () => {
    expect(writersSql([orders.table, lines.table])).toBe(
      'SELECT DISTINCT CONVERT(varchar(20), l.request_owner_id) AS transaction_id ' +
        'FROM sys.dm_tran_locks AS l ' +
        "WHERE l.resource_database_id = DB_ID() AND l.resource_type = 'OBJECT' " +
        "AND l.resource_associated_entity_id IN (OBJECT_ID(N'[dbo].[orders]'), OBJECT_ID(N'[sales].[order''s lines]')) " +
        "AND l.request_owner_type = 'TRANSACTION' AND l.request_session_id <> @@SPID " +
        "AND l.request_mode IN ('IX', 'SIX', 'X', 'IU', 'SIU', 'UIX', 'U', 'BU')",
    );
  });

  it('counts which of them are still active, refusing anything but ids', () => {
    expect(runningSql(['7', '1234567890123'])).toBe(
      'SELECT COUNT(*) AS running FROM sys.dm_tran_active_transactions WHERE transaction_id IN (7, 1234567890123)',
    );
    expect(() => runningSql(['1); DROP TABLE x; --'])).toThrow();
  });
});

/** A scripted server: each statement kind answers from its own queue; time only moves by sleep. */
function fakeServer(script: {
  max: Record<string, unknown>;
  writers?: string[] | Error;
  running?: number[];
}) {
  const statements: string[] = [];
  const warnings: string[] = [];
  let clock = 0;
  const running = [...(script.running ?? [])];
  const deps: HighWaterDeps = {
    async query(text) {
      statements.push(text);
      if (text.startsWith('SELECT (SELECT')) return [script.max];
      if (text.includes('sys.dm_tran_locks')) {
        if (script.writers instanceof Error) throw script.writers;
        return (script.writers ?? []).map((id) => ({ transaction_id: id }));
      }
      if (text.includes('sys.dm_tran_active_transactions')) {
        return [{ running: running.length > 1 ? running.shift() : (running[0] ?? 0) }];
      }
      throw new Error(`unexpected statement ${text}`);
    },
    sleep: async (ms) => {
      clock += ms;
    },
    now: () => clock,
    warn: (message) => warnings.push(message),
  };
  return { deps, statements, warnings, elapsed: () => clock };
}

describe('stableHighWater', () => {
  it('is null when every table is empty (not held back), and asks nothing more', async () => {
    const s = fakeServer({ max: { m0: null, m1: null } });
    expect(await stableHighWater([orders, lines], 1, s.deps)).toEqual({ high: null });
    expect(s.statements).toHaveLength(1);
  });

  it('rowversion: the maximum, capped below the lowest rowversion an open transaction holds', async () => {
    const s = fakeServer({ max: { m0: '9007199254740995', stable_rv: '9007199254740993' } });
    expect(await stableHighWater([log], 30, s.deps)).toEqual({ high: '9007199254740993' });
    // exact, with no privilege and no waiting
    expect(s.statements).toHaveLength(1);
    const idle = fakeServer({ max: { m0: '500', stable_rv: '812' } });
    expect(await stableHighWater([log], 30, idle.deps)).toEqual({ high: '500' });
  });

  it('other logIds: the maximum at once when no other transaction is writing', async () => {
    const s = fakeServer({ max: { m0: '41', m1: '18446744073709551615' }, writers: [] });
    expect(await stableHighWater([orders, lines], 30, s.deps)).toEqual({
      high: '18446744073709551615',
    });
    expect(s.statements).toHaveLength(2);
  });

  it('other logIds: no waiting when no table shows a logId above its cursor', async () => {
    const s = fakeServer({ max: { m0: '41', m1: '17' }, writers: ['7'], running: [1] });
    // One counter for the job: each table's cursor is the last delta's logId.
    const cursors = [
      { ...orders, after: '41' },
      { ...lines, after: '41' },
    ];
    expect(await stableHighWater(cursors, 30, s.deps)).toEqual({ high: '41' });
    expect(s.statements).toHaveLength(1); // the maxima only: no writers asked, none waited for
    // One table with a new row: the writers are waited for as always.
    const moved = fakeServer({ max: { m0: '42', m1: '17' }, writers: ['7'], running: [0] });
    expect(await stableHighWater(cursors, 30, moved.deps)).toEqual({ high: '42' });
    expect(moved.statements.filter((t) => t.includes('dm_tran_locks'))).toHaveLength(1);
  });

  it('other logIds: waits for the writers seen after the maximum, polling', async () => {
    const s = fakeServer({ max: { m0: '41' }, writers: ['7', '9'], running: [2, 1, 0] });
    expect(await stableHighWater([orders], 30, s.deps)).toEqual({ high: '41' });
    expect(s.statements.filter((t) => t.includes('dm_tran_active_transactions'))).toHaveLength(3);
    expect(s.elapsed()).toBe(2 * POLL_MS);
  });

  it('other logIds: null, held by the writer, when it is still running after maxWaitSeconds', async () => {
    const s = fakeServer({ max: { m0: '41' }, writers: ['7'], running: [1] });
    expect(await stableHighWater([orders], 1, s.deps)).toEqual({
      high: null,
      heldBy: 'SQL Server transactions 7',
    });
    expect(s.elapsed()).toBe(1000);
  });

  it('without VIEW SERVER STATE: the plain maximum, and a warning that says what to grant', async () => {
    const denied = Object.assign(new Error('VIEW SERVER STATE permission was denied'), {
      number: 300,
    });
    const s = fakeServer({ max: { m0: '41' }, writers: denied });
    expect(await stableHighWater([orders], 30, s.deps)).toEqual({ high: '41' });
    expect(s.warnings).toHaveLength(1);
    expect(s.warnings[0]).toContain('dbo.orders');
    expect(s.warnings[0]).toContain('GRANT VIEW SERVER STATE');
  });

  it('other errors reading the locks are not mistaken for a missing grant', async () => {
    const s = fakeServer({ max: { m0: '41' }, writers: new Error('connection reset') });
    await expect(stableHighWater([orders], 30, s.deps)).rejects.toThrow('connection reset');
  });

  it('mixed: the rowversion cap holds, and the other tables are waited for', async () => {
    const s = fakeServer({
      max: { m0: '41', m1: '90', stable_rv: '60' },
      writers: ['3'],
      running: [0],
    });
    expect(await stableHighWater([orders, log], 30, s.deps)).toEqual({ high: '60' });
    expect(s.statements.some((t) => t.includes("OBJECT_ID(N'[dbo].[orders]')"))).toBe(true);
    expect(s.statements.some((t) => t.includes("deltasync_changelog]')"))).toBe(false);
  });
});
