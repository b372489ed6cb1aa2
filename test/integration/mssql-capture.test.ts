/**
 * The SQL Server adapter's capture modes, deletes, verify reads and hooks against a real server
 * (issue 4). Runs only when DELTASYNC_TEST_MSSQL_URL is set, as the login the suite creates
 * databases with (sa in the usual container), which also has VIEW SERVER STATE; otherwise the
 * suite is reported as skipped, with the reason in its name.
 */
import type { HighWaterSource } from '../../src/db/high-water.js';
import sql from 'mssql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../src/db/index.js';
import { poolConfig } from '../../src/db/mssql/connection.js';
import type {
  ChangelogRow,
  ColumnInfo,
  KeysetCursor,
  SourceReader,
  TargetWriter,
  WireRow,
} from '../../src/db/types.js';
import { ConfigError } from '../../src/errors.js';
import { mssqlServer } from '../helpers/databases.js';

const server = await mssqlServer();

async function collect<T>(rows: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

async function* rowsOf(rows: WireRow[], failAfter?: number): AsyncGenerator<WireRow> {
  for (const [i, row] of rows.entries()) {
    if (i === failAfter) throw new Error('checksum mismatch in part 2');
    yield row;
  }
}

describe.skipIf(!server.available)(
  server.available
    ? 'SQL Server capture modes'
    : `SQL Server capture modes (${server.reason ?? 'skipped'})`,
  () => {
    let admin: sql.ConnectionPool;
    let source: SourceReader & HighWaterSource;
    let target: TargetWriter;
    const exec = (text: string) => admin.request().batch(text);
    const count = async (text: string) =>
      Number((await admin.request().query(text)).recordset[0]!.n);

    beforeAll(async () => {
      const url = await server.fresh('mssqlcapture');
      admin = await new sql.ConnectionPool(poolConfig(url)).connect();
      // Readers see the last committed version instead of waiting on an open writer, which is
      // what lets the late-commit tests hold a transaction open while extract reads.
      await exec(`ALTER DATABASE CURRENT SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE`);
      // Each delta is read in one SNAPSHOT transaction (see src/db/mssql/window.ts).
      await exec(`ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON`);
      source = (await openSource({ client: 'mssql', connection: url })) as SourceReader &
        HighWaterSource;
      target = await openTarget({ client: 'mssql', connection: url });
    });

    afterAll(async () => {
      await source?.close();
      await target?.close();
      await admin?.close();
      await server.cleanup();
    });

    describe('changelog mode', () => {
      const columns: ColumnInfo[] = [
        { name: 'region', type: 'text' },
        { name: 'day', type: 'timestamp' },
        { name: 'qty', type: 'int' },
      ];
      const key = ['region', 'day'];
      const read = (after: string, upTo: string) =>
        collect(
          source.readChangelog!({
            changelog: 'deltasync_changelog',
            table: 'stock',
            columns,
            key,
            after,
            upTo,
          }),
        );
      const high = async () =>
        (
          await source.stableHighWater!({
            tables: [{ table: 'deltasync_changelog', logIdColumn: 'log_id' }],
            maxWaitSeconds: 1,
          })
        ).high;

      beforeAll(async () => {
        await exec(`CREATE TABLE dbo.stock (
          region varchar(20) COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL,
          day datetime NOT NULL, qty int NULL, PRIMARY KEY (region, day))`);
        const keyColumns = (await source.columns('stock')).filter((c) => key.includes(c.name));
        const ddl = await source.captureDdl!({
          changelog: 'deltasync_changelog',
          tables: [{ table: 'stock', key: keyColumns }],
        });
        await source.executeDdl!(ddl.install);
        await source.executeDdl!(ddl.install); // installing again is harmless
      });

      it('logs inserts, updates (a key change too) and deletes; reads them as rows and deletes', async () => {
        const before = (await high()) ?? '0';
        await exec(`INSERT INTO dbo.stock VALUES
          ('north', '2024-01-01 10:00:00.003', 1), ('south', '2024-01-01 10:00:00.007', 2),
          ('east', '2024-01-01 10:00:00', 3), ('we"st/\\', '2024-01-01 10:00:00', 4)`);
        await exec(`UPDATE dbo.stock SET qty = 10 WHERE region = 'north'`);
        await exec(`UPDATE dbo.stock SET region = 'south-east' WHERE region = 'south'`);
        await exec(`DELETE FROM dbo.stock WHERE region = 'east'`);
        const upTo = await high();
        expect(upTo).not.toBeNull();
        const changes = await read(before, upTo!);
        const sorted = (rows: ChangelogRow[]) =>
          rows.map((c) => JSON.stringify(c)).sort((a, b) => a.localeCompare(b));
        expect(sorted(changes)).toEqual(
          sorted([
            { op: 'upsert', row: ['north', '2024-01-01 10:00:00.003000', 10] },
            { op: 'delete', key: ['south', '2024-01-01 10:00:00.007000'] },
            { op: 'upsert', row: ['south-east', '2024-01-01 10:00:00.007000', 2] },
            { op: 'delete', key: ['east', '2024-01-01 10:00:00'] },
            { op: 'upsert', row: ['we"st/\\', '2024-01-01 10:00:00', 4] },
          ]),
        );
        // in the order of each key's last change: the delete of east came last
        expect(changes[changes.length - 1]).toEqual({
          op: 'delete',
          key: ['east', '2024-01-01 10:00:00'],
        });
        expect(await read(upTo!, upTo!)).toEqual([]);
      });

      it('keeps the change log high-water mark below a writer still open', async () => {
        const start = (await high())!;
        const open = new sql.Transaction(admin);
        await open.begin();
        try {
          await new sql.Request(open).query(
            `INSERT INTO dbo.stock VALUES ('late', '2024-02-01', 1)`,
          );
          await exec(`INSERT INTO dbo.stock VALUES ('early', '2024-02-01', 2)`);
          const mark = (await high())!;
          expect(await read(start, mark)).toEqual([]); // 'early' waits for 'late'
        } finally {
          await open.commit();
        }
        const rows = await read(start, (await high())!);
        expect(rows.map((r) => (r.op === 'upsert' ? r.row[0] : null))).toEqual(['late', 'early']);
      });

      it('windows by snapshot: ships what it shows without waiting, a lower rowversion committed later next', async () => {
        const names = (rows: ChangelogRow[]) =>
          rows.map((r) => (r.op === 'upsert' ? r.row[0] : null));
        const window = async (after: string | null) => {
          await source.beginSnapshot();
          return source.changelogWindow({
            changelog: 'deltasync_changelog',
            after,
            maxWaitSeconds: 1,
          });
        };
        const start = (await window(null)).cursor;
        const open = new sql.Transaction(admin);
        await open.begin();
        let first: Awaited<ReturnType<typeof window>>;
        try {
          await new sql.Request(open).query(
            `INSERT INTO dbo.stock VALUES ('slow', '2024-04-01', 1)`,
          );
          await exec(`INSERT INTO dbo.stock VALUES ('quick', '2024-04-01', 2)`);
          first = await window(start);
          // 'quick' ships now although 'slow' took a lower rowversion and is still open.
          expect(names(await read(first.after, first.cursor))).toEqual(['quick']);
        } finally {
          await open.commit();
        }
        const second = await window(first.cursor);
        expect(names(await read(second.after, second.cursor))).toEqual(['slow']);
        const third = await window(second.cursor);
        expect(third.cursor).toBe(third.after);
        expect(third.highLogId).toBeNull();
      });

      it('refuses (78) a change-log table whose trigger is disabled, until it is enabled again', async () => {
        const keyColumns = (await source.columns('stock')).filter((c) => key.includes(c.name));
        const request = {
          changelog: 'deltasync_changelog',
          tables: [{ table: 'stock', key: keyColumns }],
        };
        await exec('DISABLE TRIGGER dbo.deltasync_changelog_stock ON dbo.stock');
        try {
          const refused = await source.checkCapture(request).catch((err: unknown) => err);
          expect(refused).toBeInstanceOf(ConfigError);
          expect((refused as ConfigError).message).toMatch(/stock \(trigger disabled\)/);
          expect((refused as ConfigError).hint).toBe('run deltasync capture --apply');
        } finally {
          await exec('ENABLE TRIGGER dbo.deltasync_changelog_stock ON dbo.stock');
        }
        await source.checkCapture(request);
      });

      it('counts the n-th change across the log for the batch limit', async () => {
        const upTo = (await high())!;
        const first = await source.nthLogId!({
          tables: [{ table: 'deltasync_changelog', logIdColumn: 'log_id', after: '0' }],
          upTo,
          n: 1,
        });
        expect(BigInt(first!)).toBeGreaterThan(0n);
        expect(
          await source.nthLogId!({
            tables: [{ table: 'deltasync_changelog', logIdColumn: 'log_id', after: '0' }],
            upTo,
            n: 1_000_000,
          }),
        ).toBeNull();
      });

      it('remove leaves no trigger and no change log', async () => {
        const keyColumns = (await source.columns('stock')).filter((c) => key.includes(c.name));
        const ddl = await source.captureDdl!({
          changelog: 'deltasync_changelog',
          tables: [{ table: 'stock', key: keyColumns }],
        });
        await source.executeDdl!(ddl.remove);
        await source.executeDdl!(ddl.remove); // and removing again too
        expect(await count(`SELECT COUNT(*) AS n FROM sys.triggers`)).toBe(0);
        expect(
          await count(`SELECT COUNT(*) AS n FROM sys.tables WHERE name = 'deltasync_changelog'`),
        ).toBe(0);
        await exec(`INSERT INTO dbo.stock VALUES ('after', '2024-03-01', 1)`); // no trigger fires
      });
    });

    describe('timestamp mode', () => {
      /** Reads the whole table in batches of `limit`, as extract does, cursor from each last row. */
      async function drain(
        table: string,
        columns: ColumnInfo[],
        limit: number,
        start: KeysetCursor | null,
      ) {
        const rows: WireRow[] = [];
        let after = start;
        for (let calls = 0; calls < 1000; calls++) {
          const batch = await collect(
            source.readKeyset!({
              table,
              columns,
              tsColumn: 'at',
              key: ['id'],
              after,
              upTo: '2100-01-01 00:00:00',
              limit,
            }),
          );
          rows.push(...batch);
          if (batch.length < limit) return rows;
          const last = batch[batch.length - 1]!;
          after = { ts: last[1]!, key: [last[0]!] };
        }
        throw new Error('readKeyset never caught up');
      }

      it.each(['datetime2(7)', 'datetime2(3)', 'datetime', 'datetimeoffset(7)'])(
        '%s: rows sharing a timestamp are split by the limit, none lost or repeated',
        async (type) => {
          const table = `ts_${type.replace(/\W/g, '')}`;
          const tz = type.startsWith('datetimeoffset');
          await exec(`CREATE TABLE dbo.${table} (id int PRIMARY KEY, at ${type} NOT NULL)`);
          const same = tz ? `'2024-01-01 10:00:00.1234567 +02:00'` : `'2024-01-01 10:00:00.123'`;
          await exec(
            `INSERT INTO dbo.${table} (id, at) SELECT TOP (50) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)), ${same} FROM sys.all_columns`,
          );
          // Within one microsecond, a later 100 ns with a smaller key (where the type keeps it;
          // the others round both to one value). Through datetime2(7): datetime refuses text
          // with more than three fractional digits.
          const at = (text: string) => `CONVERT(${type}, CONVERT(datetime2(7), '${text}'))`;
          await exec(`INSERT INTO dbo.${table} VALUES
            (1001, ${at('2024-01-01 11:00:00.0000009')}), (1000, ${at('2024-01-01 11:00:00.0000001')}),
            (999, ${at('2023-12-31 23:59:59')})`);
          const columns: ColumnInfo[] = [
            { name: 'id', type: 'int' },
            { name: 'at', type: tz ? 'timestamptz' : 'timestamp' },
          ];
          for (const limit of [1, 7, 50, 1000]) {
            const rows = await drain(table, columns, limit, null);
            const ids = rows.map((r) => r[0] as number);
            expect(new Set(ids).size).toBe(ids.length);
            expect([...ids].sort((a, b) => a - b)).toEqual([
              ...Array.from({ length: 50 }, (_, i) => i + 1),
              999,
              1000,
              1001,
            ]);
            // in wire order: (ts, key)
            const keys = rows.map((r) => `${String(r[1])}|${String(r[0]).padStart(5, '0')}`);
            expect(keys).toEqual([...keys].sort());
          }
          // A configured start (a cursor without key): everything at or after it.
          const fromStart = await drain(table, columns, 10, {
            ts: tz ? '2024-01-01T00:00:00Z' : '2024-01-01 00:00:00',
            key: [],
          });
          expect(fromStart.map((r) => r[0])).not.toContain(999);
          expect(fromStart).toHaveLength(52);
        },
      );

      it('stops at the horizon', async () => {
        await exec(`CREATE TABLE dbo.ts_horizon (id int PRIMARY KEY, at datetime2(7) NOT NULL);
          INSERT INTO dbo.ts_horizon VALUES (1, '2024-01-01 10:00:00.1234564'), (2, '2024-01-01 10:00:00.1234570')`);
        const rows = await collect(
          source.readKeyset!({
            table: 'ts_horizon',
            columns: [{ name: 'id', type: 'int' }],
            tsColumn: 'at',
            key: ['id'],
            after: null,
            upTo: '2024-01-01 10:00:00.123456', // row 1's wire form; row 2 is a microsecond later
          }),
        );
        expect(rows).toEqual([[1]]);
      });

      it('reads the server clock in wire form', async () => {
        const utc = await source.serverTime!('timestamptz');
        expect(utc).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
        expect(Math.abs(Date.parse(utc) - Date.now())).toBeLessThan(5 * 60_000);
        expect(await source.serverTime!('timestamp')).toMatch(
          /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/,
        );
      });
    });

    describe('logid mode high-water mark (IDENTITY, through the lock DMVs)', () => {
      it('does not pass a lower IDENTITY still uncommitted; after the commit, ships both', async () => {
        await exec(`CREATE TABLE dbo.ident (id bigint IDENTITY PRIMARY KEY, v int);
          INSERT INTO dbo.ident (v) VALUES (1)`);
        const mark = () =>
          source.stableHighWater!({
            tables: [{ table: 'ident', logIdColumn: 'id' }],
            maxWaitSeconds: 1,
          });
        expect(await mark()).toEqual({ high: '1' });
        const open = new sql.Transaction(admin);
        await open.begin();
        let committed: string;
        try {
          await new sql.Request(open).query('INSERT INTO dbo.ident (v) VALUES (2)'); // takes id 2
          await exec('INSERT INTO dbo.ident (v) VALUES (3)'); // takes id 3, commits first
          // Waited for the writer, then gave up, naming it (an empty table has no heldBy).
          expect(await mark()).toEqual({
            high: null,
            heldBy: expect.stringMatching(/^SQL Server transactions \d/),
          });
          // ... because the writer is still open: its transaction is still active on the server.
          const [still] = (
            await new sql.Request(open).query(
              'SELECT COUNT(*) AS n FROM sys.dm_tran_active_transactions WHERE transaction_id = CURRENT_TRANSACTION_ID()',
            )
          ).recordset as { n: number }[];
          expect(still!.n).toBe(1);
        } finally {
          await open.commit();
        }
        committed = (await mark()).high!;
        expect(committed).toBe('3');
        const rows = await collect(
          source.readChanges({
            table: 'ident',
            columns: [{ name: 'v', type: 'int' }],
            logIdColumn: 'id',
            after: '1',
            upTo: committed,
          }),
        );
        expect(rows).toEqual([[2], [3]]);
      });

      it('finds the n-th logId across tables after their own cursors', async () => {
        await exec(`CREATE TABLE dbo.nth_a (id int PRIMARY KEY); CREATE TABLE dbo.nth_b (id bigint PRIMARY KEY);
          INSERT INTO dbo.nth_a VALUES (1), (2), (3), (10);
          INSERT INTO dbo.nth_b VALUES (4), (5), (11)`);
        const nth = (n: number) =>
          source.nthLogId!({
            tables: [
              { table: 'nth_a', logIdColumn: 'id', after: '1' },
              { table: 'nth_b', logIdColumn: 'id', after: '4' },
            ],
            upTo: '10',
            n,
          });
        expect(await nth(1)).toBe('2');
        expect(await nth(3)).toBe('5');
        expect(await nth(4)).toBe('10');
        expect(await nth(5)).toBeNull();
      });
    });

    describe('foreign keys', () => {
      it('lists the tables a table references, in every spelling a config may use', async () => {
        await exec(`CREATE SCHEMA ref`);
        await exec(`CREATE TABLE ref.countries (code char(2) PRIMARY KEY);
          CREATE TABLE dbo.customers (id int PRIMARY KEY, country char(2) REFERENCES ref.countries);
          CREATE TABLE dbo.orders (id int PRIMARY KEY, customer int REFERENCES dbo.customers,
            parent int REFERENCES dbo.orders)`);
        expect(await source.referencedTables!('orders')).toEqual(['customers', 'dbo.customers']);
        expect(await source.referencedTables!('customers')).toEqual(['ref.countries']);
        expect(await source.referencedTables!('ref.countries')).toEqual([]);
      });
    });

    describe('replica side', () => {
      const columns: ColumnInfo[] = [
        { name: 'code', type: 'text' },
        { name: 'at', type: 'timestamp' },
        { name: 'n', type: 'int' },
      ];
      const keyColumns: ColumnInfo[] = [
        { name: 'code', type: 'text' },
        { name: 'at', type: 'timestamp' },
      ];
      const contents = async () =>
        (await admin.request().query('SELECT code, n FROM dbo.replica ORDER BY code')).recordset;

      beforeAll(async () => {
        await target.prepare();
        await exec(`CREATE TABLE dbo.replica (
          code varchar(20) COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL, at datetime NOT NULL,
          n bigint NULL, PRIMARY KEY (code, at))`);
        await target.transaction((tx) =>
          tx.applyRows({
            table: 'replica',
            key: ['code', 'at'],
            columns,
            rows: rowsOf([
              ['a', '2024-01-01 00:00:00.003000', 1],
              ['b', '2024-01-01 00:00:00.007000', 2],
              ['c', '2024-01-01 00:00:00', 3],
            ]),
          }),
        );
      });

      it('deletes by key inside the transaction; a missing key is no error; rollback undoes it', async () => {
        const deleted = await target.transaction((tx) =>
          tx.deleteRows!({
            table: 'replica',
            key: keyColumns,
            rows: rowsOf([
              ['a', '2024-01-01 00:00:00.003000'], // datetime keys meet their stored 1/300 s
              ['zzz', '2024-01-01 00:00:00'],
              ['a', '2024-01-01 00:00:00.003000'],
            ]),
          }),
        );
        expect(deleted).toBe(1);
        expect((await contents()).map((r) => r.code)).toEqual(['b', 'c']);
        await expect(
          target.transaction(async (tx) => {
            await tx.deleteRows!({
              table: 'replica',
              key: keyColumns,
              rows: rowsOf([['b', '2024-01-01 00:00:00.007000']]),
            });
            await tx.deleteRows!({
              table: 'replica',
              key: keyColumns,
              rows: rowsOf([['c', '2024-01-01 00:00:00']], 0),
            });
          }),
        ).rejects.toThrow('checksum mismatch');
        expect((await contents()).map((r) => r.code)).toEqual(['b', 'c']);
        expect(
          await target.transaction((tx) =>
            tx.deleteRows!({ table: 'replica', key: keyColumns, rows: rowsOf([]) }),
          ),
        ).toBe(0);
      });

      it('reads every row back in key order, in the delta types (an int kept in bigint)', async () => {
        const rows = await collect(
          target.readAll!({ table: 'replica', columns, key: ['code', 'at'] }),
        );
        expect(rows).toEqual([
          ['b', '2024-01-01 00:00:00.007000', 2],
          ['c', '2024-01-01 00:00:00', 3],
        ]);
        const fromSource = await collect(
          source.readAll!({
            table: 'replica',
            columns: [{ name: 'code', type: 'text' }],
            key: ['code'],
          }),
        );
        expect(fromSource).toEqual([['b'], ['c']]);
      });

      it('runs the after-load hook SQL', async () => {
        await target.execute!(
          `UPDATE dbo.replica SET n = n * 10; UPDATE dbo.replica SET n = n + 1`,
        );
        expect((await contents()).map((r) => Number(r.n))).toEqual([21, 31]);
      });
    });
  },
);
