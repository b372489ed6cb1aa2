/**
 * PostgreSQL's format 2 fast paths against a real server: the source's COPY text is the
 * canonical text byte for byte (docs/format.md), and the replica's copyRows takes those bytes,
 * split anywhere, into an empty table, over existing rows, with columns skipped, and refuses a
 * bad value or a failing part with a one-line error and nothing applied.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, openTarget } from '../../src/db/index.js';
import { copyTextBatches } from '../../src/db/pg/load.js';
import type { ColumnInfo, CopyText, SourceReader, TargetWriter } from '../../src/db/types.js';
import { ConfigError, DeltaError } from '../../src/errors.js';
import { pgServer } from '../helpers/databases.js';

const server = await pgServer();

async function bytesOf(data: CopyText): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of data) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** The text as chunks of 1 to 7 bytes: boundaries inside lines, fields and UTF-8 characters. */
async function* ragged(text: string, fail?: Error): CopyText {
  const bytes = Buffer.from(text);
  for (let i = 0, n = 1; i < bytes.length; i += n, n = (n % 7) + 1) {
    yield bytes.subarray(i, i + n);
  }
  if (fail) throw fail;
}

// prettier-ignore
const KINDS_SQL = `CREATE TABLE kinds (
  id int PRIMARY KEY, b bigint, n numeric(38,10), d double precision, r real, f boolean,
  t text, by bytea, dt date, tm time, ts timestamp, tz timestamptz, j json, jb jsonb, u uuid,
  m mood, a int[], iv interval)`;

// Row 1: every hostile character a text field can hold; row 2: NULLs; row 3: edge values.
// prettier-ignore
const KINDS_ROWS = `INSERT INTO kinds VALUES
  (1, 9007199254740993, -12.34, 0.1, 1.1, true, E'tab\\there\\nline\\rcr\\\\back \\\\N \\b\\f' || chr(11) || ' 🎉',
   '\\x0aff', '2024-02-29', '23:59:59.5', '2024-01-02 03:04:05.25', '2024-01-02 03:04:05+02',
   '{"big": 12345678901234567890}', '{"b": 1, "a": [1, 2]}',
   'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'happy', '{1,2,NULL}', '1 day 02:00:00'),
  (2, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL),
  (3, -9223372036854775808, 'NaN', 'Infinity', '-Infinity', false, '\\N', '\\x', '0001-01-01',
   '00:00:00', '2024-01-02 03:04:05', '2024-01-02 03:04:05.123456+00', '[]', 'null', NULL, 'sad',
   '{}', '-00:00:01')`;

// What PostgreSQL prints, and so the canonical text (docs/format.md), line by line.
// prettier-ignore
const KINDS_TEXT = [
  '1\t9007199254740993\t-12.3400000000\t0.1\t1.1\tt\t' +
    'tab\\there\\nline\\rcr\\\\back \\\\N \\b\\f\\v 🎉\t\\\\x0aff\t2024-02-29\t23:59:59.5\t' +
    '2024-01-02 03:04:05.25\t2024-01-02 01:04:05+00\t{"big": 12345678901234567890}\t' +
    '{"a": [1, 2], "b": 1}\ta0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\thappy\t{1,2,NULL}\t' +
    '1 day 02:00:00',
  '2' + '\t\\N'.repeat(5) + '\t' + '\t\\N'.repeat(11),
  '3\t-9223372036854775808\tNaN\tInfinity\t-Infinity\tf\t\\\\N\t\\\\x\t0001-01-01\t00:00:00\t' +
    '2024-01-02 03:04:05\t2024-01-02 03:04:05.123456+00\t[]\tnull\t\\N\tsad\t{}\t-00:00:01',
].map((l) => `${l}\n`).join('');

describe.skipIf(!server.available)(`PostgreSQL COPY text fast paths ${server.reason ?? ''}`, () => {
  let url: string;
  let admin: pg.Client;
  let source: SourceReader;
  let target: TargetWriter;
  let kinds: ColumnInfo[];
  const sql = (text: string) => admin.query(text);

  beforeAll(async () => {
    url = await server.fresh('pgcopytext');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await sql(`CREATE TYPE mood AS ENUM ('sad', 'happy')`);
    await sql(KINDS_SQL);
    await sql(KINDS_ROWS);
    await sql(`CREATE SCHEMA replica`);
    await sql(KINDS_SQL.replace('kinds', 'replica.kinds'));
    source = await openSource({ client: 'pg', connection: url });
    target = await openTarget({ client: 'pg', connection: url, schema: 'replica' });
    kinds = await source.columns('kinds');
  });

  afterAll(async () => {
    await source?.close();
    await target?.close();
    await admin?.end();
    await server.cleanup();
  });

  /** Rows of the source and replica tables that differ (as row text, so json compares too). */
  async function differences(table: string): Promise<number> {
    const { rows } = await admin.query<{ n: string }>(
      `SELECT count(*) AS n FROM (
         (SELECT s::text FROM ${table} s EXCEPT SELECT s::text FROM replica.${table} s)
         UNION ALL
         (SELECT s::text FROM replica.${table} s EXCEPT SELECT s::text FROM ${table} s)) d`,
    );
    return Number(rows[0]!.n);
  }

  const copy = (table: string, columns: ColumnInfo[], text: string, keep?: number[]) =>
    target.transaction((tx) =>
      tx.copyRows!({
        table,
        key: ['id'],
        columns,
        keep: keep ?? columns.map((_, i) => i),
        data: ragged(text),
      }),
    );

  it('reads every type as the canonical text, byte for byte', async () => {
    await source.beginSnapshot();
    const text = await bytesOf(source.copyAll!({ table: 'kinds', columns: kinds, key: ['id'] }));
    expect(text).toBe(KINDS_TEXT);
    expect(kinds.find((c) => c.name === 'm')).toMatchObject({ type: 'text', nativeType: 'mood' });
    expect(kinds.find((c) => c.name === 'a')).toMatchObject({
      type: 'text',
      nativeType: 'integer[]',
    });
  });

  it('reads changes within (after, upTo] and a keyset page in order', async () => {
    await source.beginSnapshot();
    const changes = await bytesOf(
      source.copyChanges!({
        table: 'kinds',
        columns: kinds.slice(0, 1),
        logIdColumn: 'id',
        after: '1',
        upTo: '3',
      }),
    );
    expect(changes).toBe('2\n3\n');
    const ts = kinds.find((c) => c.name === 'ts')!;
    const keyset = await bytesOf(
      source.copyKeyset!({
        table: 'kinds',
        columns: [kinds[0]!, ts],
        tsColumn: 'ts',
        key: ['id'],
        after: { ts: '2024-01-02 03:04:05', key: ['0'] },
        upTo: '2030-01-01 00:00:00',
        limit: 1,
      }),
    );
    expect(keyset).toBe('3\t2024-01-02 03:04:05\n');
  });

  it('copies the bytes into an empty table, then over it (every row changed) exactly', async () => {
    expect(await copy('kinds', kinds, KINDS_TEXT)).toBe(3);
    expect(await differences('kinds')).toBe(0);
    await sql(`UPDATE kinds SET t = t || E'\\t!', b = b / 2, m = 'sad' WHERE b IS NOT NULL`);
    await sql(`INSERT INTO kinds (id, t) VALUES (4, E'new\\nrow')`);
    await source.beginSnapshot();
    const text = await bytesOf(source.copyAll!({ table: 'kinds', columns: kinds, key: ['id'] }));
    expect(await copy('kinds', kinds, text)).toBe(4);
    expect(await differences('kinds')).toBe(0);
  });

  it('skips the columns the replica does not take and leaves its own alone', async () => {
    await sql(`CREATE TABLE narrow (id int PRIMARY KEY, a text, b text)`);
    await sql(`CREATE TABLE replica.narrow (id int PRIMARY KEY, b text, mine text)`);
    await sql(`INSERT INTO replica.narrow VALUES (1, 'old', 'kept')`);
    const columns = [
      { name: 'id', type: 'int' as const },
      { name: 'a', type: 'text' as const },
      { name: 'b', type: 'text' as const },
    ];
    expect(await copy('narrow', columns, '1\tx\ty\n2\t\\N\tz\n', [0, 2])).toBe(2);
    const { rows } = await admin.query('SELECT id, b, mine FROM replica.narrow ORDER BY id');
    expect(rows).toEqual([
      { id: 1, b: 'y', mine: 'kept' },
      { id: 2, b: 'z', mine: null },
    ]);
  });

  it('refuses a value that does not parse as its type with the row and column, nothing applied', async () => {
    await sql(`CREATE TABLE replica.bad (id int PRIMARY KEY, n bigint)`);
    const columns = [
      { name: 'id', type: 'int' as const },
      { name: 'n', type: 'bigint' as const },
    ];
    const err = await copy('bad', columns, '1\t5\n2\tfive\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toMatch(/table 'bad' row 2 of the delta: column n: .*five/);
    expect((await admin.query('SELECT * FROM replica.bad')).rowCount).toBe(0);
  });

  it('names the row of a value the replica column would change (value-fit check)', async () => {
    await sql(`CREATE TABLE replica.fit (id int PRIMARY KEY, n numeric(5,2))`);
    await sql(`INSERT INTO replica.fit VALUES (9, 1)`);
    const columns = [
      { name: 'id', type: 'int' as const },
      { name: 'n', type: 'decimal' as const },
    ];
    const err = await copy('fit', columns, '1\t1.5\n2\t1.234\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toContain("row (id)=(2): column n value '1.234'");
    expect((await admin.query('SELECT * FROM replica.fit')).rowCount).toBe(1);
  });

  it('checks values on the side while COPYing straight into an empty table', async () => {
    await sql(`CREATE TABLE replica.empty_fit (id int PRIMARY KEY, n numeric(5,2), v varchar(3))`);
    const columns = [
      { name: 'id', type: 'int' as const },
      { name: 'n', type: 'decimal' as const },
      { name: 'v', type: 'text' as const },
    ];
    const err = await copy('empty_fit', columns, '1\t1.5\tabc\n2\t1.25\tabcd\n').catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toContain("row (id)=(2): column v value 'abcd'");
    expect((await admin.query('SELECT * FROM replica.empty_fit')).rowCount).toBe(0);
    const rounded = await copy('empty_fit', columns, '3\t1.255\tx\n').catch((e: unknown) => e);
    expect((rounded as Error).message).toContain("row (id)=(3): column n value '1.255'");
    expect(await copy('empty_fit', columns, '1\t1.5\tabc\n2\t-999.99\t\\N\n')).toBe(2);
    const { rows } = await admin.query('SELECT id, n::text, v FROM replica.empty_fit ORDER BY id');
    expect(rows).toEqual([
      { id: 1, n: '1.50', v: 'abc' },
      { id: 2, n: '-999.99', v: null },
    ]);
  });

  it('loads the staged way when the checker connection cannot be opened', async () => {
    const role = `dsload_${Math.random().toString(36).slice(2, 8)}`;
    await sql(`CREATE ROLE ${role} LOGIN CONNECTION LIMIT 1`);
    await sql(`CREATE TABLE replica.one_conn (id int PRIMARY KEY, n numeric(5,2))`);
    await sql(`GRANT ALL ON SCHEMA replica TO ${role}; GRANT ALL ON replica.one_conn TO ${role}`);
    const u = new URL(url);
    u.username = role;
    const limited = await openTarget({ client: 'pg', connection: u.toString(), schema: 'replica' });
    try {
      const columns = [
        { name: 'id', type: 'int' as const },
        { name: 'n', type: 'decimal' as const },
      ];
      const load = (text: string) =>
        limited.transaction((tx) =>
          tx.copyRows!({
            table: 'one_conn',
            key: ['id'],
            columns,
            keep: [0, 1],
            data: ragged(text),
          }),
        );
      const err = await load('1\t1.234\n').catch((e: unknown) => e);
      expect((err as Error).message).toContain("row (id)=(1): column n value '1.234'");
      expect(await load('1\t1.5\n2\t2\n')).toBe(2);
      expect((await admin.query('SELECT * FROM replica.one_conn')).rowCount).toBe(2);
    } finally {
      await limited.close();
      await sql(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    }
  });

  it('rolls back when the part fails its check at the end', async () => {
    await sql(`CREATE TABLE replica.rollback (id int PRIMARY KEY)`);
    const failure = new DeltaError('checksum mismatch');
    const err = await target
      .transaction((tx) =>
        tx.copyRows!({
          table: 'rollback',
          key: ['id'],
          columns: [{ name: 'id', type: 'int' }],
          keep: [0],
          data: ragged('1\n2\n', failure),
        }),
      )
      .catch((e: unknown) => e);
    expect(err).toBe(failure);
    expect((await admin.query('SELECT * FROM replica.rollback')).rowCount).toBe(0);
  });

  it('refuses a table without a unique key before sending anything', async () => {
    await sql(`CREATE TABLE replica.nokey (id int)`);
    const err = await copy('nokey', [{ name: 'id', type: 'int' }], '1\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
  });
});

describe('copyTextBatches', () => {
  it('cuts batches on line boundaries whatever the chunks, counting rows', async () => {
    const text = Array.from({ length: 500 }, (_, i) => `${i}\trow ${'x'.repeat(i % 13)}\n`).join(
      '',
    );
    const batches = [];
    for await (const b of copyTextBatches(ragged(text), { stopped: false }, 100)) batches.push(b);
    expect(batches.length).toBeGreaterThan(10);
    for (const b of batches) {
      const s = Buffer.concat(b.chunks).toString();
      expect(s.endsWith('\n')).toBe(true);
      expect(s.split('\n').length - 1).toBe(b.rows);
    }
    expect(batches.map((b) => Buffer.concat(b.chunks).toString()).join('')).toBe(text);
  });

  it('refuses bytes that end in the middle of a line', async () => {
    const run = async () => {
      for await (const _ of copyTextBatches(ragged('1\n2'), { stopped: false })) void _;
    };
    await expect(run()).rejects.toThrow(DeltaError);
  });
});
