/**
 * Format 2 into MariaDB/MySQL (issue 13): copyRows loads canonical COPY text, as PostgreSQL
 * itself writes it, with LOAD DATA LOCAL INFILE, and must store exactly what applyRows stores
 * for the same rows, hostile values included; into an empty table directly, into one with rows
 * through the stage; and refuse what does not fit with a DeltaError, applying nothing.
 */
import mysql from 'mysql2/promise';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MysqlTarget } from '../../src/db/mysql/target.js';
import type { ColumnInfo, DbConfig, WireRow } from '../../src/db/types.js';
import { DeltaError } from '../../src/errors.js';
import { encodeRow } from '../../src/format/copy-text.js';
import { mysqlServer, pgServer } from '../helpers/databases.js';

const my = await mysqlServer();
const pgs = await pgServer();

// prettier-ignore
const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'int' }, { name: 'i64', type: 'bigint' }, { name: 'dec38', type: 'decimal' },
  { name: 'f64', type: 'float' }, { name: 'b', type: 'bool' }, { name: 'extra', type: 'text' },
  { name: 't', type: 'text' }, { name: 'bin', type: 'binary' }, { name: 'd', type: 'date' },
  { name: 'tm', type: 'time' }, { name: 'dt', type: 'timestamp' }, { name: 'tz', type: 'timestamptz' },
  { name: 'j', type: 'json' }, { name: 'u', type: 'uuid' },
];
/** `extra` is in the delta and not on the replica: load skips it. */
const KEEP = COLUMNS.flatMap((c, i) => (c.name === 'extra' ? [] : [i]));
const PG_DDL = `(id int, i64 bigint, dec38 numeric(38,10), f64 float8, b bool, extra text, t text,
  bin bytea, d date, tm time(6), dt timestamp(6), tz timestamptz(6), j json, u uuid)`;
const MY_DDL = `(id INT PRIMARY KEY, i64 BIGINT, dec38 DECIMAL(38,10), f64 DOUBLE, b TINYINT(1),
  t LONGTEXT, bin LONGBLOB, d DATE, tm TIME(6), dt DATETIME(6), tz TIMESTAMP(6) NULL, j JSON, u UUID)`;

/** Everything COPY text escapes, everything LOAD DATA reads otherwise, and the text `\N`. */
const HOSTILE =
  'tab\there nl\nhere cr\rhere bs\\here \\N \\f \\v \\Z \\x41 \\101 \\0 ff\f vt\v bsp\b sub\x1a 😀 naïve 中文 end\\';
const BIG_TEXT = 'x'.repeat(1024 * 1024 - 3) + '\t\n\\';
const b64 = (bytes: number[]) => Buffer.from(bytes).toString('base64');

// prettier-ignore
const ROWS: WireRow[] = [
  [1, '9223372036854775807', '-1234567890123456789012345678.0123456789', 0.30000000000000004, true,
    'skipped\t\\', HOSTILE, b64([0, 0x5c, 9, 10, 13, 0xff, 0x4e]), '2024-02-29', '23:59:59.999999',
    '2024-02-29 23:59:59.999999', '2038-01-19T03:14:07.999999Z',
    '{"n": 123456789012345678901234567890.5, "s": "😀\\t\\\\N", "big": 18446744073709551616}',
    'ab7c1a3e-0000-4000-8000-000000000001'],
  [2, '-9223372036854775808', '0.0000000001', 5e-324, false, null, '', '', '1000-01-01',
    '00:00:00', '1000-01-01 00:00:00', '1970-01-01T00:00:01.000001Z', '[]',
    '00000000-0000-0000-0000-000000000000'],
  [3, '9007199254740993', '9999999999999999999999999999.9999999999', 1e100, null, null, BIG_TEXT,
    null, null, null, null, null, null, null],
  [4, null, '-0.5000000000', -1.5e-7, null, null, '\\N', b64([0x5c, 0x4e]), null, null, null, null,
    '"\\\\N"', null],
  [5, null, null, null, null, null, null, null, null, null, null, null, null, null],
];

async function* chunked(bytes: Buffer, fail?: Error): AsyncIterable<Buffer> {
  // Boundaries anywhere: inside escapes, inside UTF-8 characters, between lines.
  const sizes = [1, 2, 3, 7, 64, 4093, 65536];
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const size = sizes[i % sizes.length]!;
    yield bytes.subarray(offset, offset + size);
    offset += size;
  }
  if (fail) throw fail;
}

async function* rowsOf(rows: WireRow[]): AsyncIterable<WireRow> {
  yield* rows;
}

describe.skipIf(!my.available || !pgs.available)('MariaDB/MySQL copyRows (format 2)', () => {
  let pgClient: pg.Client;
  let admin: mysql.Connection;
  let config: DbConfig;
  let target: MysqlTarget;
  const exec = async (sql: string) => (await admin.query(sql))[0];

  /** The rows as PostgreSQL's COPY TO writes them, in the session docs/format.md sets. */
  async function copyText(rows: WireRow[]): Promise<Buffer> {
    await pgClient.query('TRUNCATE src');
    for (const [i, row] of rows.entries()) {
      const values = row.map((v, j) =>
        COLUMNS[j]!.type === 'binary' && typeof v === 'string' ? Buffer.from(v, 'base64') : v,
      );
      await pgClient.query(
        `INSERT INTO src VALUES (${i}, ${values.map((_, j) => `$${j + 1}`).join(', ')})`,
        values,
      );
    }
    const names = COLUMNS.map((c) => c.name).join(', ');
    const stream = pgClient.query(copyTo(`COPY (SELECT ${names} FROM src ORDER BY ord) TO STDOUT`));
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  const copy = (table: string, text: Buffer, fail?: Error) =>
    target.transaction((tx) =>
      tx.copyRows!({ table, key: ['id'], columns: COLUMNS, keep: KEEP, data: chunked(text, fail) }),
    );
  const apply = (table: string, rows: WireRow[]) =>
    target.transaction((tx) =>
      tx.applyRows({
        table,
        key: ['id'],
        columns: KEEP.map((i) => COLUMNS[i]!),
        rows: rowsOf(rows.map((r) => KEEP.map((i) => r[i]!))),
      }),
    );
  const contents = async (table: string) => exec(`SELECT * FROM ${table} ORDER BY id`);

  beforeAll(async () => {
    const pgUrl = await pgs.fresh('mysqlcopy');
    pgClient = new pg.Client({ connectionString: pgUrl });
    await pgClient.connect();
    await pgClient.query(
      "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = postgres; SET bytea_output = hex; SET extra_float_digits = 1",
    );
    await pgClient.query(`CREATE TABLE src (ord int, ${PG_DDL.slice(1)}`);
    const url = await my.fresh('mysqlcopy');
    admin = await mysql.createConnection({
      uri: url,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    await exec("SET time_zone = '+00:00'");
    config = { client: 'mariadb', connection: url };
    target = await MysqlTarget.open(config);
    await target.prepare();
  });

  afterAll(async () => {
    await target?.close();
    await admin?.end();
    await pgClient?.end();
    await my.cleanup();
    await pgs.cleanup();
  });

  it('stores hostile values exactly as applyRows does, into an empty table and through the stage', async () => {
    await exec(`CREATE TABLE by_copy ${MY_DDL}`);
    await exec(`CREATE TABLE by_apply ${MY_DDL}`);
    const text = await copyText(ROWS);
    // The escapes LOAD DATA reads otherwise are really in the text PostgreSQL wrote.
    for (const escape of ['\\f', '\\v', '\\\\N', '\\\\x005c', '\\t', '\\n', '\\r', '\\b']) {
      expect(text.includes(escape), escape).toBe(true);
    }
    expect(await copy('by_copy', text)).toBe(ROWS.length);
    expect(await apply('by_apply', ROWS)).toBe(ROWS.length);
    const copied = (await contents('by_copy')) as Record<string, unknown>[];
    expect(copied).toEqual(await contents('by_apply'));
    expect(copied[0]!.t).toBe(HOSTILE);
    expect(copied[2]!.t).toBe(BIG_TEXT);
    expect(copied[3]!.t).toBe('\\N');
    expect(copied[4]!.t).toBeNull();
    expect(copied[1]!.t).toBe('');
    expect(copied[0]!.i64).toBe('9223372036854775807');
    expect(copied[2]!.i64).toBe('9007199254740993');
    expect(copied[0]!.dec38).toBe('-1234567890123456789012345678.0123456789');
    expect(copied[0]!.bin).toEqual(Buffer.from([0, 0x5c, 9, 10, 13, 0xff, 0x4e]));
    expect(copied[1]!.bin).toEqual(Buffer.alloc(0));
    expect(copied[0]!.tz).toBe('2038-01-19 03:14:07.999999');
    expect(copied[0]!.b).toBe(1);
    expect(copied[1]!.b).toBe(0);

    // Now the tables have rows: updates, a new row, and one key twice (the last line wins).
    // prettier-ignore
    const second: WireRow[] = [
      [1, '1', '1.5', 1.5, false, null, 'changed\f', b64([1]), '2000-01-01', '01:02:03',
        '2000-01-01 01:02:03', '2000-01-01T01:02:03Z', '{}', null],
      [6, '6', null, null, true, null, 'first', null, null, null, null, null, null, null],
      [6, '7', null, null, true, null, 'last\\N\t', null, null, null, null, null, null, null],
    ];
    expect(await copy('by_copy', await copyText(second))).toBe(3);
    expect(await apply('by_apply', second)).toBe(3);
    const updated = (await contents('by_copy')) as Record<string, unknown>[];
    expect(updated).toEqual(await contents('by_apply'));
    expect(updated.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(updated[5]!.t).toBe('last\\N\t');
    expect(updated[0]!.t).toBe('changed\f');
  });

  it('lets the last line of a key win in an empty table, leaving columns outside the delta at their default, as applyRows', async () => {
    // prettier-ignore
    const twice: WireRow[] = [
      [9, '1', null, null, true, null, 'first', null, null, null, null, null, null, null],
      [8, '2', null, null, null, null, 'other', null, null, null, null, null, null, null],
      [9, '3', null, null, false, null, 'last', null, null, null, null, null, null, null],
    ];
    const ddl = MY_DDL.replace('u UUID)', "u UUID, note VARCHAR(10) NOT NULL DEFAULT 'dflt')");
    await exec(`CREATE TABLE twice_copy ${ddl}`);
    await exec(`CREATE TABLE twice_apply ${ddl}`);
    expect(await copy('twice_copy', await copyText(twice))).toBe(3);
    await apply('twice_apply', twice);
    const rows = (await contents('twice_copy')) as Record<string, unknown>[];
    expect(rows).toEqual(await contents('twice_apply'));
    expect(rows.map((r) => [r.id, r.i64, r.t, r.note])).toEqual([
      [8, '2', 'other', 'dflt'],
      [9, '3', 'last', 'dflt'],
    ]);
  });

  it('loads a table with another unique index through the stage, as applyRows, even when empty', async () => {
    // Two keys taking one value of the other unique index: REPLACE would delete the first row;
    // the stage's upsert does what applyRows does.
    // prettier-ignore
    const clash: WireRow[] = [
      [1, '42', null, null, null, null, 'one', null, null, null, null, null, null, null],
      [2, '42', null, null, null, null, 'two', null, null, null, null, null, null, null],
    ];
    const ddl = MY_DDL.replace('u UUID)', 'u UUID, UNIQUE KEY (i64))');
    await exec(`CREATE TABLE uniq_copy ${ddl}`);
    await exec(`CREATE TABLE uniq_apply ${ddl}`);
    await copy('uniq_copy', await copyText(clash));
    await apply('uniq_apply', clash);
    const rows = (await contents('uniq_copy')) as Record<string, unknown>[];
    expect(rows).toEqual(await contents('uniq_apply'));
    expect(rows.map((r) => [r.id, r.t])).toEqual([[1, 'two']]);
  });

  it('loads the codec text (sources other than PostgreSQL) as applyRows, NUL and 0x1A included', async () => {
    // prettier-ignore
    const rows: WireRow[] = [
      [7, '1', '1', 1, true, 'x', 'nul\0 sub\x1a \\Z bs\\ tab\t', b64([0x1a, 0]), null, null, null, null, null, null],
      ...ROWS.slice(0, 2),
    ];
    const types = COLUMNS.map((c) => c.type);
    const text = Buffer.from(rows.map((r) => encodeRow(r, types)).join(''));
    await exec(`CREATE TABLE codec_copy ${MY_DDL}`);
    await exec(`CREATE TABLE codec_apply ${MY_DDL}`);
    await copy('codec_copy', text);
    await apply('codec_apply', rows);
    const loaded = (await contents('codec_copy')) as Record<string, unknown>[];
    expect(loaded).toEqual(await contents('codec_apply'));
    expect(loaded[2]!.t).toBe(rows[0]![6]);
    expect(loaded[2]!.bin).toEqual(Buffer.from([0x1a, 0]));
  });

  it('rolls back what it loaded when the data fails at its end (a bad checksum)', async () => {
    await exec(`CREATE TABLE failing ${MY_DDL}`);
    await exec('INSERT INTO failing (id, t) VALUES (1, "kept")');
    const text = await copyText(ROWS.slice(0, 2));
    const mismatch = new DeltaError('part 1: checksum mismatch (injected)');
    for (const table of ['failing', 'failing_empty']) {
      if (table === 'failing_empty') await exec(`CREATE TABLE failing_empty ${MY_DDL}`);
      await expect(copy(table, text, mismatch)).rejects.toBe(mismatch);
    }
    expect(await exec('SELECT id, t FROM failing')).toEqual([{ id: 1, t: 'kept' }]);
    expect(await exec('SELECT id FROM failing_empty')).toEqual([]);
  });

  it('refuses a value the replica column cannot hold, directly and through the stage', async () => {
    const line = (id: number, t: string, f = '1', dt = '\\N') =>
      `${id}\t\\N\t\\N\t${f}\t\\N\t\\N\t${t}\t\\N\t\\N\t\\N\t${dt}\t\\N\t\\N\t\\N\n`;
    const cases: { ddl: string; lines: string; message: RegExp }[] = [
      // Empty target, loaded directly: the stage's checks run in the statement, naming the row.
      {
        ddl: '(id INT PRIMARY KEY, t VARCHAR(3))',
        lines: line(1, 'abc') + line(2, 'abcd') + line(3, 'abcde'),
        message: /^table 'r0' row \(id\)=\(2\): column t value 'abcd' does not fit .*varchar\(3\)/,
      },
      // What only the server refuses (it stops at that line): named the same way.
      {
        ddl: '(id INT PRIMARY KEY, f64 DOUBLE)',
        lines: line(1, 'a', '1.5') + line(2, 'a', 'Infinity') + line(3, 'a', 'NaN'),
        message: /^table 'r1' row \(id\)=\(2\): column f64 value 'Infinity' does not fit .*double/,
      },
      // A DATETIME(0) would drop the fraction without a warning: the checks see it.
      {
        ddl: '(id INT PRIMARY KEY, dt DATETIME)',
        lines:
          line(1, 'a', '1', '2024-01-01 00:00:00') + line(2, 'a', '1', '2024-01-01 00:00:00.5'),
        message:
          /row \(id\)=\(2\): column dt value '2024-01-01 00:00:00.5' does not fit .*datetime/,
      },
      {
        ddl: "(id INT PRIMARY KEY, t VARCHAR(9) NOT NULL DEFAULT 'x')",
        lines: line(5, 'ok') + line(6, '\\N'),
        message:
          /row \(id\)=\(6\): column t is NULL, which the replica column \(varchar\(9\), NOT NULL\) refuses/,
      },
      // A target with rows goes through the stage, whose checks name the row.
      {
        ddl: '(id INT PRIMARY KEY, t VARCHAR(3))',
        lines: line(7, 'abc') + line(8, 'abcd'),
        message: /row \(id\)=\(8\): column t value 'abcd' does not fit .*varchar\(3\)/,
      },
    ];
    for (const [i, c] of cases.entries()) {
      const table = `r${i}`;
      await exec(`CREATE TABLE ${table} ${c.ddl}`);
      if (i === 4) await exec(`INSERT INTO ${table} (id) VALUES (100)`);
      const names = c.ddl.match(/\b(t|f64|dt)\b/g)!;
      const keep = [0, ...names.map((n) => COLUMNS.findIndex((col) => col.name === n))];
      const error = await target
        .transaction((tx) =>
          tx.copyRows!({
            table,
            key: ['id'],
            columns: COLUMNS,
            keep,
            data: chunked(Buffer.from(c.lines)),
          }),
        )
        .catch((err: unknown) => err);
      expect(error, c.lines).toBeInstanceOf(DeltaError);
      expect((error as Error).message).toMatch(c.message);
      expect((error as Error).message).not.toContain('\n');
      const rows = (await exec(`SELECT id FROM ${table}`)) as unknown[];
      expect(rows).toEqual(i === 4 ? [{ id: 100 }] : []);
    }
  });

  it('offers no copyRows without LOAD DATA LOCAL INFILE, so load decodes lines for applyRows', async () => {
    const inserting = await MysqlTarget.open(config, { loadStrategy: 'insert' });
    try {
      expect(await inserting.transaction(async (tx) => tx.copyRows)).toBeUndefined();
      expect(await target.transaction(async (tx) => typeof tx.copyRows)).toBe('function');
    } finally {
      await inserting.close();
    }
  });
});
