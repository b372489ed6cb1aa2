/**
 * The MySQL/MariaDB adapter against a real server: reflection, streaming reads, both load
 * strategies, exactness of every awkward value, and failures (missing table, unreachable
 * server, connection killed mid-transaction, rows that throw mid-way).
 */
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MysqlSource } from '../../src/db/mysql/source.js';
import { MysqlTarget } from '../../src/db/mysql/target.js';
import engine from '../../src/db/mysql/index.js';
import type { ColumnInfo, DbConfig, WireRow } from '../../src/db/types.js';
import { ConfigError, DeltaError, UnavailableError } from '../../src/errors.js';
import { mysqlServer } from '../helpers/databases.js';

const server = await mysqlServer();

async function collect(rows: AsyncIterable<WireRow>): Promise<WireRow[]> {
  const out: WireRow[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

/** Long strings shown by length and ends, so a failing comparison prints something readable. */
function readable(rows: WireRow[]): WireRow[] {
  return rows.map((row) =>
    row.map((v) =>
      typeof v === 'string' && v.length > 200
        ? `<${v.length} chars …${JSON.stringify(v.slice(-8))}>`
        : v,
    ),
  );
}

async function* rowsOf(rows: WireRow[], failAfter?: number): AsyncIterable<WireRow> {
  for (let i = 0; i < rows.length; i++) {
    if (i === failAfter) throw new DeltaError('checksum mismatch (injected)');
    yield rows[i]!;
  }
}

/** Every awkward value at once; the wire rows a source must produce for EXACT_TABLE. */
const BIG_TEXT = 'x'.repeat(1024 * 1024 - 3) + '\t\n\\';
const EXACT_DDL = `(
  id INT PRIMARY KEY, log_id BIGINT NOT NULL,
  i64 BIGINT, u64 BIGINT UNSIGNED, dec38 DECIMAL(38,10), f32 FLOAT, f64 DOUBLE,
  b1 TINYINT(1), bit1 BIT(1), bits BIT(16), t VARCHAR(100), big LONGTEXT, bin VARBINARY(20),
  d DATE, tm TIME(6), dt DATETIME(6), ts TIMESTAMP(6) NULL, j JSON, u UUID
)`;
// prettier-ignore
const EXACT_COLUMNS = [
  'id', 'log_id', 'i64', 'u64', 'dec38', 'f32', 'f64', 'b1', 'bit1', 'bits',
  't', 'big', 'bin', 'd', 'tm', 'dt', 'ts', 'j', 'u',
];
// prettier-ignore
const EXACT_ROWS: WireRow[] = [
  [1, '1', '9223372036854775807', '18446744073709551615', '-1234567890123456789012345678.0123456789',
    0.1, 0.30000000000000004, true, true, '65535', '😀 naïve 中文 \'"\\', BIG_TEXT,
    Buffer.from([0, 255, 0, 10, 9, 92]).toString('base64'), '2024-02-29', '23:59:59.999999',
    '2024-02-29 23:59:59.999999', '2038-01-19T03:14:07.999999Z',
    '{"n": 123456789012345678901234567890.5, "s": "😀"}', 'ab7c1a3e-0000-4000-8000-000000000001'],
  [2, '2', '-9223372036854775808', '0', '0.0000000001', -3.4028234663852886e38, 5e-324, false, false, '0',
    '', '', '', '1000-01-01', '-838:59:59', '1000-01-01 00:00:00', '1970-01-01T00:00:01.000001Z',
    '[]', '00000000-0000-0000-0000-000000000000'],
  [3, '3', '9007199254740993', null, null, null, null, null, null, null, null, null, null, null,
    null, null, null, null, null],
];

describe.skipIf(!server.available)('MySQL/MariaDB adapter', () => {
  let url: string;
  let database: string;
  let admin: mysql.Connection;
  const config = (): DbConfig => ({ client: 'mariadb', connection: url });
  const exec = async (sql: string, values?: unknown[]) => (await admin.query(sql, values))[0];

  beforeAll(async () => {
    url = await server.fresh('mysqladapter');
    database = new URL(url).pathname.slice(1);
    admin = await mysql.createConnection({
      uri: url,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    await exec("SET time_zone = '+00:00'");
  });

  afterAll(async () => {
    await admin?.end();
    await server.cleanup();
  });

  describe('reflection', () => {
    it('maps native types to logical types', async () => {
      await exec(`CREATE TABLE types_src ${EXACT_DDL}`);
      await exec(
        `ALTER TABLE types_src ADD e ENUM('A','b'), ADD s SMALLINT UNSIGNED, ADD y YEAR, ADD g GEOMETRY`,
      );
      const source = await MysqlSource.open(config());
      const target = await MysqlTarget.open(config());
      try {
        const columns = await source.columns('types_src');
        // prettier-ignore
        expect(Object.fromEntries(columns.map((c) => [c.name, c.type]))).toEqual({
          id: 'int', log_id: 'bigint', i64: 'bigint', u64: 'bigint', dec38: 'decimal', f32: 'float',
          f64: 'float', b1: 'bool', bit1: 'bool', bits: 'bigint', t: 'text', big: 'text',
          bin: 'binary', d: 'date', tm: 'time', dt: 'timestamp', ts: 'timestamptz', j: 'json',
          u: 'uuid', e: 'text', s: 'int', y: 'int', g: 'binary',
        });
        expect(columns.find((c) => c.name === 'e')?.nativeType).toBe("enum('A','b')");
        expect(await target.columns('types_src')).toEqual(columns);
        expect(await target.columns('no_such_table')).toBeNull();
        expect(await source.columns(`${database}.types_src`)).toEqual(columns);
      } finally {
        await source.close();
        await target.close();
      }
    });

    it('refuses a missing table or column with a ConfigError naming it', async () => {
      const source = await MysqlSource.open(config());
      try {
        await expect(source.columns('no_such_table')).rejects.toThrow(ConfigError);
        await expect(source.columns('no_such_table')).rejects.toThrow(/no_such_table/);
        await expect(source.maxLogId('no_such_table', 'id')).rejects.toThrow(ConfigError);
        const read = source.readChanges({
          table: 'types_src',
          columns: [{ name: 'nope', type: 'int' }],
          logIdColumn: 'log_id',
          after: '0',
          upTo: '9',
        });
        await expect(collect(read)).rejects.toThrow(/types_src\.nope/);
      } finally {
        await source.close();
      }
    });
  });

  describe('connection failures', () => {
    it('reports an unreachable server as UnavailableError naming host and db, not the password', async () => {
      const bad: DbConfig = {
        client: 'mysql',
        connection: 'mysql://root:s3cret-pw@127.0.0.1:1/somedb',
      };
      for (const open of [engine.openSource, engine.openTarget]) {
        const err = await open(bad).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(UnavailableError);
        expect((err as Error).message).toContain('127.0.0.1:1/somedb');
        expect((err as Error).message).not.toContain('s3cret-pw');
      }
    });

    it('reports an unknown database as UnavailableError', async () => {
      const u = new URL(url);
      u.pathname = '/dstest_does_not_exist';
      await expect(
        engine.openTarget({ client: 'mysql2', connection: u.toString() }),
      ).rejects.toThrow(UnavailableError);
    });

    it('reports a connection killed mid-transaction as UnavailableError', async () => {
      const target = await MysqlTarget.open(config());
      await target.prepare();
      try {
        const attempt = target.transaction(async (tx) => {
          const ids = (await exec(
            'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
            [database],
          )) as { id: number }[];
          for (const { id } of ids) await exec(`KILL ${id}`);
          return tx.appliedLogId('job');
        });
        await expect(attempt).rejects.toThrow(UnavailableError);
      } finally {
        await target.close();
      }
    });
  });

  describe('source', () => {
    beforeAll(async () => {
      await exec(
        'CREATE TABLE big (id INT PRIMARY KEY, log_id BIGINT NOT NULL, pad VARCHAR(300), KEY (log_id))',
      );
      await exec(`INSERT INTO big SELECT seq, seq, REPEAT('p', 250) FROM seq_1_to_60000`);
    });

    it('reports the max logId, or null for an empty table', async () => {
      await exec('CREATE TABLE empty_t (id INT PRIMARY KEY, log_id BIGINT)');
      const source = await MysqlSource.open(config());
      try {
        expect(await source.maxLogId('empty_t', 'log_id')).toBeNull();
        expect(await source.maxLogId('big', 'log_id')).toBe('60000');
      } finally {
        await source.close();
      }
    });

    it('streams a large range in logId order without reading it all first', async () => {
      const source = await MysqlSource.open(config());
      try {
        // ~14 MB in all: far more than the socket buffers could hide.
        const columns: ColumnInfo[] = [
          { name: 'id', type: 'int' },
          { name: 'log_id', type: 'bigint' },
          { name: 'pad', type: 'text' },
        ];
        const rows = source
          .readChanges({
            table: 'big',
            columns,
            logIdColumn: 'log_id',
            after: '100',
            upTo: '55000',
          })
          [Symbol.asyncIterator]();
        expect((await rows.next()).value).toEqual([101, '101', 'p'.repeat(250)]);
        // Holding the iteration, the server must still be sending: the driver paused the socket.
        await new Promise((r) => setTimeout(r, 300));
        const busy = (await exec(
          "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND COMMAND = 'Query' AND ID <> CONNECTION_ID() AND INFO LIKE 'SELECT%big%'",
          [database],
        )) as { n: number | string }[];
        expect(Number(busy[0]!.n)).toBe(1);
        let count = 1;
        let last = 101;
        for (let r = await rows.next(); !r.done; r = await rows.next()) {
          expect(r.value[0]).toBe(last + 1);
          last = r.value[0] as number;
          count++;
        }
        expect(count).toBe(54900);
        // The reader is still usable afterwards, and after an abandoned iteration.
        for await (const _ of source.readChanges({
          table: 'big',
          columns,
          logIdColumn: 'log_id',
          after: '0',
          upTo: '60000',
        }))
          break;
        expect(await source.maxLogId('big', 'log_id')).toBe('60000');
      } finally {
        await source.close();
      }
    });

    it('closes promptly in the middle of a paused read', async () => {
      const source = await MysqlSource.open(config());
      const columns: ColumnInfo[] = [
        { name: 'id', type: 'int' },
        { name: 'pad', type: 'text' },
      ];
      const rows = source.readChanges({
        table: 'big',
        columns,
        logIdColumn: 'log_id',
        after: '0',
        upTo: '60000',
      });
      await rows[Symbol.asyncIterator]().next();
      await source.close();
    });

    it('reads one snapshot per delta: a new mark ends it, the next read starts a fresh one', async () => {
      const source = await MysqlSource.open(config());
      const columns: ColumnInfo[] = [{ name: 'id', type: 'int' }];
      const count = async () =>
        (
          await collect(
            source.readChanges({
              table: 'big',
              columns,
              logIdColumn: 'log_id',
              after: '59990',
              upTo: '70000',
            }),
          )
        ).length;
      try {
        expect(await count()).toBe(10);
        await exec('INSERT INTO big VALUES (60001, 60001, NULL)');
        expect(await count()).toBe(10);
        expect(await source.maxLogId('big', 'log_id')).toBe('60001');
        expect(await count()).toBe(11);
      } finally {
        await source.close();
        await exec('DELETE FROM big WHERE id = 60001');
      }
    });
  });

  describe('exact values', () => {
    beforeAll(async () => {
      await exec(`CREATE TABLE exact_src ${EXACT_DDL}`);
      const placeholders = EXACT_COLUMNS.map((c) =>
        c === 'bin'
          ? 'FROM_BASE64(?)'
          : c === 'ts'
            ? "REPLACE(REPLACE(?, 'T', ' '), 'Z', '')"
            : c.startsWith('bit')
              ? 'CAST(? AS UNSIGNED)'
              : '?',
      );
      for (const row of EXACT_ROWS) {
        await exec(`INSERT INTO exact_src VALUES (${placeholders.join(', ')})`, row as unknown[]);
      }
    });

    it('reads every awkward value exactly', async () => {
      const source = await MysqlSource.open(config());
      try {
        const columns = await source.columns('exact_src');
        const rows = await collect(
          source.readChanges({
            table: 'exact_src',
            columns,
            logIdColumn: 'log_id',
            after: '0',
            upTo: '3',
          }),
        );
        expect(readable(rows)).toEqual(readable(EXACT_ROWS));
        expect(rows).toEqual(EXACT_ROWS);
      } finally {
        await source.close();
      }
    });

    it.each(['infile', 'insert'] as const)(
      'writes every awkward value exactly (%s)',
      async (strategy) => {
        const table = `exact_dst_${strategy}`;
        await exec(`CREATE TABLE ${table} ${EXACT_DDL}`);
        const target = await MysqlTarget.open(config(), { loadStrategy: strategy });
        const columns = (await target.columns('exact_src'))!;
        try {
          const count = await target.transaction((tx) =>
            tx.applyRows({ table, key: ['id'], columns, rows: rowsOf(EXACT_ROWS) }),
          );
          expect(count).toBe(3);
        } finally {
          await target.close();
        }
        // A source reads one snapshot, so it is opened after the load committed.
        const source = await MysqlSource.open(config());
        try {
          const back = await collect(
            source.readChanges({ table, columns, logIdColumn: 'log_id', after: '0', upTo: '3' }),
          );
          expect(readable(back)).toEqual(readable(EXACT_ROWS));
          expect(back).toEqual(EXACT_ROWS);
        } finally {
          await source.close();
        }
      },
    );
  });

  it('loads through LOAD DATA LOCAL INFILE when the server allows it', async () => {
    const target = (await engine.openTarget(config())) as MysqlTarget;
    try {
      expect(target.loadStrategy).toBe('infile');
    } finally {
      await target.close();
    }
  });

  describe.each(['infile', 'insert'] as const)('target (%s)', (strategy) => {
    const table = `users_${strategy}`;
    const job = `job_${strategy}`;
    const columns: ColumnInfo[] = [
      { name: 'id', type: 'int' },
      { name: 'name', type: 'text' },
      { name: 'score', type: 'bigint' },
    ];
    let target: MysqlTarget;
    const contents = async () =>
      (await exec(`SELECT id, name, score, note FROM ${table} ORDER BY id`)) as unknown[];

    beforeAll(async () => {
      await exec(
        `CREATE TABLE ${table} (id INT PRIMARY KEY, name VARCHAR(50), score BIGINT, note VARCHAR(50) DEFAULT 'fresh')`,
      );
      target = await MysqlTarget.open(config(), { loadStrategy: strategy });
      expect(target.loadStrategy).toBe(strategy);
      await target.prepare();
      await target.prepare();
    });

    afterAll(async () => {
      await target?.close();
    });

    it('upserts by key, lets the last duplicate win and leaves unmapped columns alone', async () => {
      await target.transaction((tx) =>
        tx.applyRows({
          table,
          key: ['id'],
          columns,
          rows: rowsOf([
            [1, 'a', '1'],
            [2, 'b', '2'],
          ]),
        }),
      );
      await exec(`UPDATE ${table} SET note = 'edited by a user' WHERE id = 1`);
      const n = await target.transaction((tx) =>
        tx.applyRows({
          table,
          key: ['id'],
          columns,
          rows: rowsOf([
            [1, 'A', '10'],
            [3, 'c', '3'],
            [3, 'C', '30'],
            [2, 'B', null],
          ]),
        }),
      );
      expect(n).toBe(4);
      expect(await contents()).toEqual([
        { id: 1, name: 'A', score: '10', note: 'edited by a user' },
        { id: 2, name: 'B', score: null, note: 'fresh' },
        { id: 3, name: 'C', score: '30', note: 'fresh' },
      ]);
    });

    it('records the applied logId inside the transaction', async () => {
      expect(await target.appliedLogId(job)).toBeNull();
      await target.transaction(async (tx) => {
        expect(await tx.appliedLogId(job)).toBeNull();
        await tx.recordApplied({ job, logId: '18446744073709551616', delta: 'd1.manifest' });
        expect(await tx.appliedLogId(job)).toBe('18446744073709551616');
      });
      expect(await target.appliedLogId(job)).toBe('18446744073709551616');
      await target.transaction((tx) => tx.recordApplied({ job, logId: '5', delta: 'd2.manifest' }));
      expect(await target.appliedLogId(job)).toBe('5');
    });

    it('rolls everything back when the rows throw mid-way, and stays usable', async () => {
      const before = await contents();
      const many: WireRow[] = Array.from({ length: 20000 }, (_, i) => [
        100 + i,
        'n'.repeat(40),
        String(i),
      ]);
      const attempt = target.transaction(async (tx) => {
        await tx.recordApplied({ job, logId: '99', delta: 'bad.manifest' });
        return tx.applyRows({ table, key: ['id'], columns, rows: rowsOf(many, 15000) });
      });
      await expect(attempt).rejects.toThrow(/checksum mismatch \(injected\)/);
      expect(await contents()).toEqual(before);
      expect(await target.appliedLogId(job)).toBe('5');
      await target.transaction((tx) =>
        tx.applyRows({ table, key: ['id'], columns, rows: rowsOf([[4, 'd', '4']]) }),
      );
      expect(await contents()).toHaveLength(before.length + 1);
    });

    it('refuses a value that does not fit instead of truncating it', async () => {
      const attempt = target.transaction((tx) =>
        tx.applyRows({
          table,
          key: ['id'],
          columns,
          rows: rowsOf([
            [5, 'e', '5'],
            [6, 'y'.repeat(51), '6'],
          ]),
        }),
      );
      await expect(attempt).rejects.toThrow(/name/);
      expect(await exec(`SELECT id FROM ${table} WHERE id IN (5, 6)`)).toEqual([]);
    });

    it('refuses a missing table or column with a ConfigError', async () => {
      await expect(
        target.transaction((tx) =>
          tx.applyRows({ table: 'no_such', key: ['id'], columns, rows: rowsOf([]) }),
        ),
      ).rejects.toThrow(ConfigError);
      await expect(
        target.transaction((tx) =>
          tx.applyRows({
            table,
            key: ['id'],
            columns: [...columns, { name: 'nope', type: 'int' }],
            rows: rowsOf([]),
          }),
        ),
      ).rejects.toThrow(/nope/);
    });
  });
});
