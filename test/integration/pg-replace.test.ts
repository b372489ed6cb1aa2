/**
 * PostgreSQL's replacing load (load.ts, copyReplacing) against a real server: rows that already
 * exist are deleted and COPYed in again, batch by batch, only where that is indistinguishable
 * from the upsert; everywhere else (a users' column, a trigger that would fire, a referencing
 * foreign key, a key repeated inside a batch) the staged upsert runs as before. Which way the
 * server went is read from pg_stat_xact_user_tables at the start and the end of the load's own
 * transaction: the replacing way deletes and inserts, the upsert updates. (The view may also
 * count the session's earlier transactions until its statistics are flushed, hence the
 * difference of two readings.)
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTarget } from '../../src/db/index.js';
import { keyLines } from '../../src/db/pg/load.js';
import type { ColumnInfo, CopyText, TargetWriter } from '../../src/db/types.js';
import { pgServer } from '../helpers/databases.js';

const server = await pgServer();

async function* chunks(text: string, size = 64 * 1024): CopyText {
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

interface Counts {
  inserted: number;
  updated: number;
  deleted: number;
}

const ID_NAME: ColumnInfo[] = [
  { name: 'id', type: 'int' },
  { name: 'name', type: 'text' },
];

describe.skipIf(!server.available)(`PostgreSQL replacing load ${server.reason ?? ''}`, () => {
  let admin: pg.Client;
  let target: TargetWriter;
  const sql = (text: string) => admin.query(text);
  const rows = async (text: string) => (await admin.query(text)).rows;

  beforeAll(async () => {
    const url = await server.fresh('pgreplace');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await sql(`CREATE SCHEMA replica`);
    await sql(`CREATE TABLE probe (tbl text, sign int, ins bigint, upd bigint, del bigint)`);
    target = await openTarget({ client: 'pg', connection: url, schema: 'replica' });
  });

  afterAll(async () => {
    await target?.close();
    await admin?.end();
    await server.cleanup();
  });

  /**
   * Loads `text` into replica.`table` in one transaction (relaxing foreign keys first when
   * asked), and returns what the server did to the table in it.
   */
  async function load(
    table: string,
    text: string,
    opts: { columns?: ColumnInfo[]; key?: string[]; relax?: boolean; keepUnchanged?: boolean } = {},
  ): Promise<Counts> {
    const columns = opts.columns ?? ID_NAME;
    const reading = (sign: number) =>
      `INSERT INTO public.probe SELECT '${table}', ${sign}, n_tup_ins, n_tup_upd, n_tup_del
         FROM pg_stat_xact_user_tables WHERE relid = 'replica.${table}'::regclass`;
    await target.transaction(async (tx) => {
      await tx.executeDdl!(reading(-1));
      if (opts.relax) await tx.relaxForeignKeys!([table]);
      await tx.copyRows!({
        table,
        key: opts.key ?? ['id'],
        columns,
        keep: columns.map((_, i) => i),
        data: chunks(text),
        keepUnchanged: opts.keepUnchanged,
      });
      await tx.executeDdl!(reading(1));
    });
    const [probe] = await rows(
      `SELECT sum(sign * ins)::int AS ins, sum(sign * upd)::int AS upd, sum(sign * del)::int AS del
         FROM probe WHERE tbl = '${table}'`,
    );
    await sql(`DELETE FROM probe WHERE tbl = '${table}'`);
    return { inserted: probe.ins, updated: probe.upd, deleted: probe.del };
  }

  it('deletes and re-inserts existing rows when nothing else can tell, across batches', async () => {
    await sql(`CREATE TABLE replica.wide (id int PRIMARY KEY, name text)`);
    await sql(`INSERT INTO replica.wide SELECT g, 'old' FROM generate_series(1, 100000) g`);
    // About 10 MB of lines: two batches. Key 5 comes again at the very end, so the second
    // batch deletes the row the first one wrote: the last version wins, as in the upsert.
    const pad = 'x'.repeat(90);
    const lines = Array.from({ length: 100001 }, (_, i) => `${i + 1}\tnew ${pad}\n`);
    lines.push(`5\tlast\n`);
    const counts = await load('wide', lines.join(''));
    expect(counts).toEqual({ inserted: 100002, updated: 0, deleted: 100001 });
    expect(await rows(`SELECT count(*)::int AS n FROM replica.wide`)).toEqual([{ n: 100001 }]);
    expect(await rows(`SELECT name FROM replica.wide WHERE id IN (4, 5) ORDER BY id`)).toEqual([
      { name: `new ${pad}` },
      { name: 'last' },
    ]);
  });

  it('falls back to the upsert for a key repeated inside one batch (the last one wins)', async () => {
    await sql(`CREATE TABLE replica.twice (id int PRIMARY KEY, name text)`);
    await sql(`INSERT INTO replica.twice VALUES (1, 'old'), (2, 'old')`);
    const counts = await load('twice', '1\tfirst\n1\tsecond\n3\tnew\n');
    // The attempt rolled back to its savepoint still counts; what matters is that the upsert ran.
    expect(counts.updated).toBeGreaterThan(0);
    expect(await rows(`SELECT id, name FROM replica.twice ORDER BY id`)).toEqual([
      { id: 1, name: 'second' },
      { id: 2, name: 'old' },
      { id: 3, name: 'new' },
    ]);
  });

  it('replaces rows under a composite key, fields picked from the middle of the line', async () => {
    // As a PostgreSQL source declares them: nothing to check, so no checker connection.
    const columns: ColumnInfo[] = [
      { name: 'name', type: 'text', nativeType: 'text' },
      { name: 'a', type: 'int', nativeType: 'integer' },
      { name: 'b', type: 'text', nativeType: 'text' },
    ];
    await sql(`CREATE TABLE replica.pair (name text, a int, b text, PRIMARY KEY (b, a))`);
    await sql(`INSERT INTO replica.pair VALUES ('old', 1, 'x\ty'), ('old', 2, 'x\ty')`);
    const counts = await load('pair', 'new\t1\tx\\ty\nnew\t3\tz\n', { columns, key: ['b', 'a'] });
    expect(counts).toEqual({ inserted: 2, updated: 0, deleted: 1 });
    expect(await rows(`SELECT name, a, b FROM replica.pair ORDER BY a`)).toEqual([
      { name: 'new', a: 1, b: 'x\ty' },
      { name: 'old', a: 2, b: 'x\ty' },
      { name: 'new', a: 3, b: 'z' },
    ]);
  });

  it('upserts a base table, so the rows it did not change are not written again', async () => {
    await sql(`CREATE TABLE replica.based (id int PRIMARY KEY, name text)`);
    await sql(`INSERT INTO replica.based VALUES (1, 'same'), (2, 'old')`);
    const counts = await load('based', '1\tsame\n2\tnew\n', { keepUnchanged: true });
    expect(counts).toEqual({ inserted: 0, updated: 1, deleted: 0 });
    expect(await rows(`SELECT * FROM replica.based ORDER BY id`)).toEqual([
      { id: 1, name: 'same' },
      { id: 2, name: 'new' },
    ]);
  });

  it('upserts when the replica has a column of its own, and leaves that column alone', async () => {
    await sql(`CREATE TABLE replica.own (id int PRIMARY KEY, name text, mine text)`);
    await sql(`INSERT INTO replica.own VALUES (1, 'old', 'kept')`);
    const counts = await load('own', '1\tnew\n');
    expect(counts).toEqual({ inserted: 0, updated: 1, deleted: 0 });
    expect(await rows(`SELECT * FROM replica.own`)).toEqual([{ id: 1, name: 'new', mine: 'kept' }]);
  });

  it('replaces rows of a table whose generated column is computed again', async () => {
    await sql(`CREATE TABLE replica.gen (id int PRIMARY KEY, name text,
                 shout text GENERATED ALWAYS AS (upper(name)) STORED)`);
    await sql(`INSERT INTO replica.gen (id, name) VALUES (1, 'old')`);
    const counts = await load('gen', '1\tnew\n');
    expect(counts).toEqual({ inserted: 1, updated: 0, deleted: 1 });
    expect(await rows(`SELECT * FROM replica.gen`)).toEqual([{ id: 1, name: 'new', shout: 'NEW' }]);
  });

  it('upserts where a replica trigger would fire, so it sees an UPDATE', async () => {
    await sql(`CREATE TABLE replica.audited (id int PRIMARY KEY, name text)`);
    await sql(`CREATE TABLE replica.audit (op text, id int)`);
    await sql(`CREATE FUNCTION replica.audit() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO replica.audit VALUES (TG_OP, NEW.id); RETURN NEW; END $$`);
    await sql(`CREATE TRIGGER audited AFTER INSERT OR UPDATE ON replica.audited
                 FOR EACH ROW EXECUTE FUNCTION replica.audit()`);
    await sql(`INSERT INTO replica.audited VALUES (1, 'old')`);
    await sql(`DELETE FROM replica.audit`);
    expect(await load('audited', '1\tnew\n')).toEqual({ inserted: 0, updated: 1, deleted: 0 });
    expect(await rows(`SELECT op, id FROM replica.audit`)).toEqual([{ op: 'UPDATE', id: 1 }]);
    // Relaxed, an ordinary trigger does not fire at all (session_replication_role = replica):
    // nothing to tell the difference, so the rows are replaced.
    expect(await load('audited', '1\tnewer\n', { relax: true })).toEqual({
      inserted: 1,
      updated: 0,
      deleted: 1,
    });
    expect(await rows(`SELECT count(*)::int AS n FROM replica.audit`)).toEqual([{ n: 1 }]);
    await sql(`ALTER TABLE replica.audited ENABLE ALWAYS TRIGGER audited`);
    expect(await load('audited', '1\tnewest\n', { relax: true })).toEqual({
      inserted: 0,
      updated: 1,
      deleted: 0,
    });
  });

  it('upserts a table that foreign keys point at, unless they are relaxed', async () => {
    await sql(`CREATE TABLE replica.parent (id int PRIMARY KEY, name text)`);
    await sql(`CREATE TABLE replica.child (id int PRIMARY KEY,
                 parent int REFERENCES replica.parent ON DELETE CASCADE)`);
    await sql(`INSERT INTO replica.parent VALUES (1, 'old')`);
    await sql(`INSERT INTO replica.child VALUES (10, 1)`);
    // A DELETE of the parent would cascade to the child: the upsert, and the child stays.
    expect(await load('parent', '1\tnew\n')).toEqual({ inserted: 0, updated: 1, deleted: 0 });
    expect(await rows(`SELECT * FROM replica.child`)).toEqual([{ id: 10, parent: 1 }]);
    // Relaxed, foreign keys neither check nor cascade inside the load: replaced, child intact.
    expect(await load('parent', '1\tnewer\n', { relax: true })).toEqual({
      inserted: 1,
      updated: 0,
      deleted: 1,
    });
    expect(await rows(`SELECT * FROM replica.child`)).toEqual([{ id: 10, parent: 1 }]);
    expect(await rows(`SELECT name FROM replica.parent`)).toEqual([{ name: 'newer' }]);
  });
});

describe('keyLines', () => {
  const keys = (text: string, positions: number[]) =>
    keyLines(Buffer.from(text), positions).toString();

  it('picks the key fields of every line, in key order, escapes as they are', () => {
    expect(keys('1\ta\n22\tb\n', [0])).toBe('1\n22\n');
    expect(keys('1\ta\\tb\tx\n2\t\\N\ty\n', [2, 1])).toBe('x\ta\\tb\ny\t\\N\n');
    expect(keys('', [0])).toBe('');
  });

  it('yields empty fields for a line too short to hold them (the server refuses it)', () => {
    expect(keys('1\n', [0, 2])).toBe('1\t\n');
    expect(keys('\n\n', [1, 0, 2])).toBe('\t\t\n\t\t\n');
  });
});
