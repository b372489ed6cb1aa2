/**
 * Engine-specific cases, MariaDB/MySQL only: its native types (unsigned, BIT, YEAR, ENUM,
 * GEOMETRY), database-qualified names, a read that holds the server back while the consumer
 * pauses, the snapshot a new high-water mark ends, every awkward value exact through both load
 * strategies, and LOAD DATA LOCAL INFILE chosen when the server allows it. The contract itself is
 * checked for every engine by the other files of this folder.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ColumnInfo, WireRow } from '../../../src/db/types.js';
import { MysqlSource } from '../../../src/db/mysql/source.js';
import { MysqlTarget } from '../../../src/db/mysql/target.js';
import { openTarget } from '../../../src/db/index.js';
import { cleanup, collect, engines, readable, rowsOf, type TestDb } from './engines.js';

const ENGINES = await engines();
afterAll(() => cleanup(ENGINES));
const engine = ENGINES.find((e) => e.id === 'mysql')!;

/** Every awkward value at once; the wire rows a source must produce for EXACT_DDL. */
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

/** A literal per value, as the server must store it. */
function literal(column: string, value: WireRow[number]): string {
  if (value === null) return 'NULL';
  const text = String(value).replace(/\\/g, '\\\\').replace(/'/g, "\\'");
  if (column === 'bin') return `FROM_BASE64('${text}')`;
  if (column === 'ts') return `'${text.replace('T', ' ').replace('Z', '')}'`;
  if (column.startsWith('bit')) return `CAST('${Number(value === true ? 1 : value)}' AS UNSIGNED)`;
  if (typeof value === 'boolean') return value ? '1' : '0';
  return `'${text}'`;
}

describe.skipIf(!engine.available)(`MariaDB only ${engine.server?.reason ?? ''}`, () => {
  let db: TestDb;
  let database: string;

  beforeAll(async () => {
    db = await engine.fresh('mariadbonly');
    database = new URL(db.config.connection as string).pathname.slice(1);
    await db.exec(`CREATE TABLE exact_src ${EXACT_DDL}`);
    for (const row of EXACT_ROWS) {
      await db.exec(
        `INSERT INTO exact_src VALUES (${row.map((v, i) => literal(EXACT_COLUMNS[i]!, v)).join(', ')})`,
      );
    }
    await db.exec(
      'CREATE TABLE big (id INT PRIMARY KEY, log_id BIGINT NOT NULL, pad VARCHAR(300), KEY (log_id))',
    );
    await db.exec(`INSERT INTO big SELECT seq, seq, REPEAT('p', 250) FROM seq_1_to_60000`);
  });

  afterAll(async () => {
    await db?.close();
  });

  it('maps native types to logical types, by plain or database-qualified name', async () => {
    await db.exec(`CREATE TABLE types_src ${EXACT_DDL}`);
    await db.exec(
      `ALTER TABLE types_src ADD e ENUM('A','b'), ADD s SMALLINT UNSIGNED, ADD y YEAR, ADD g GEOMETRY`,
    );
    const source = await MysqlSource.open(db.config);
    const target = await MysqlTarget.open(db.config);
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
      expect(await source.columns(`${database}.types_src`)).toEqual(columns);
    } finally {
      await source.close();
      await target.close();
    }
  });

  it('streams a large range while the server keeps sending, paused by the consumer', async () => {
    const source = await MysqlSource.open(db.config);
    try {
      // ~14 MB in all: far more than the socket buffers could hide.
      const columns: ColumnInfo[] = [
        { name: 'id', type: 'int' },
        { name: 'log_id', type: 'bigint' },
        { name: 'pad', type: 'text' },
      ];
      const request = { table: 'big', columns, logIdColumn: 'log_id', after: '100', upTo: '55000' };
      const rows = source.readChanges(request)[Symbol.asyncIterator]();
      expect((await rows.next()).value).toEqual([101, '101', 'p'.repeat(250)]);
      // Holding the iteration, the server must still be sending: the driver paused the socket.
      await new Promise((r) => setTimeout(r, 300));
      const busy = await db.rows(
        `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '${database}' AND COMMAND = 'Query' AND ID <> CONNECTION_ID() AND INFO LIKE 'SELECT%big%'`,
      );
      expect(Number(busy[0]![0])).toBe(1);
      let count = 1;
      let last = 101;
      for (let r = await rows.next(); !r.done; r = await rows.next()) {
        expect(r.value[0]).toBe(last + 1);
        last = r.value[0] as number;
        count++;
      }
      expect(count).toBe(54900);
    } finally {
      await source.close();
    }
  });

  it('reads one snapshot per delta: a new mark ends it, the next read starts a fresh one', async () => {
    const source = await MysqlSource.open(db.config);
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
      await db.exec('INSERT INTO big VALUES (60001, 60001, NULL)');
      expect(await count()).toBe(10);
      expect(await source.maxLogId('big', 'log_id')).toBe('60001');
      expect(await count()).toBe(11);
    } finally {
      await source.close();
      await db.exec('DELETE FROM big WHERE id = 60001');
    }
  });

  it('reads every awkward value exactly', async () => {
    const source = await MysqlSource.open(db.config);
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
      await db.exec(`CREATE TABLE ${table} ${EXACT_DDL}`);
      const target = await MysqlTarget.open(db.config, { loadStrategy: strategy });
      expect(target.loadStrategy).toBe(strategy);
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
      const source = await MysqlSource.open(db.config);
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

  it('loads through LOAD DATA LOCAL INFILE when the server allows it', async () => {
    const target = (await openTarget(db.config)) as MysqlTarget;
    try {
      expect(target.loadStrategy).toBe('infile');
    } finally {
      await target.close();
    }
  });
});
