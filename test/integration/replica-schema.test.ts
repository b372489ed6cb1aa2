/**
 * Issue 9 item 2, load side: a delta carrying a column the replica lacks stops the load before
 * that delta (78) with the ALTER TABLE to run; `load.missingColumns: 'add'` adds it, 'skip'
 * skips it and says so in the state file and `status`. Columns are matched by name; a replica
 * column the delta no longer carries is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { cols, loadJob, type DeltaTable } from '../helpers/deltas.js';
import { openDb, servers, type Engine, type Servers } from '../helpers/engines.js';

const ENGINES: Engine[] = ['pg', 'mysql', 'sqlite'];
let s: Servers;
beforeAll(async () => {
  s = await servers();
});
afterAll(async () => s?.cleanup());

/** The source grew `email` (text) and `born` (date), and no longer has `legacy`. */
const grown = (rows: unknown[][]): DeltaTable[] => [
  {
    name: 'customer',
    key: ['id'],
    columns: cols('born:date', 'id:int', 'email:text', 'name:text'),
    rows: rows as DeltaTable['rows'],
  },
];

const EXPECTED_ALTER: Record<Engine, RegExp> = {
  pg: /ALTER TABLE "customer" ADD COLUMN "born" date/,
  mysql: /ALTER TABLE `customer` ADD COLUMN `born` DATE/,
  sqlite: /ALTER TABLE "customer" ADD COLUMN "born" DATE/,
};

describe.each(ENGINES)('%s replica: a column the replica lacks', (engine) => {
  it('stops before that delta with the ALTER TABLE to run, then goes on once it is run', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `schema_stop_${engine}`);
    const job = loadJob(db);
    try {
      await db.exec(
        'CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40), legacy VARCHAR(10))',
      );
      await db.exec("INSERT INTO customer VALUES (1, 'old', 'keep')");
      await job.delta(0, 1, [
        { name: 'customer', key: ['id'], columns: cols('id:int', 'name:text'), rows: [[2, 'b']] },
      ]);
      await job.delta(1, 2, grown([['1990-01-02', 1, 'a@x', 'Ann']]));
      const r = runBin('deltasync-load', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(78);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/customer/);
      expect(lines[0]).toMatch(/'born' \(date\)/);
      expect(lines[0]).toMatch(EXPECTED_ALTER[engine]);
      // The first delta went in; the second did not.
      expect(job.state().logId).toBe('1');
      expect(await db.rows('SELECT id, name FROM customer ORDER BY id')).toEqual([
        [1, 'old'],
        [2, 'b'],
      ]);

      const alter = (lines[0]!.match(/add it: (ALTER TABLE .*?) \(or set/) ?? [])[1]!;
      expect(alter).toBeDefined();
      await db.exec(alter);
      const again = runBin('deltasync-load', ['-c', job.config]);
      expect(again.code, again.stderr).toBe(78);
      expect(again.stderr).toMatch(/'email' \(text\)/);
      await db.exec(
        alter.replace(/born.*$/, engine === 'mysql' ? 'email` LONGTEXT' : 'email" TEXT'),
      );
      const done = runBin('deltasync-load', ['-c', job.config]);
      expect(done.code, done.stderr).toBe(0);
      const born =
        engine === 'sqlite'
          ? 'born'
          : engine === 'pg'
            ? "to_char(born, 'YYYY-MM-DD')"
            : "DATE_FORMAT(born, '%Y-%m-%d')";
      expect(
        await db.rows(`SELECT id, name, email, ${born}, legacy FROM customer ORDER BY id`),
      ).toEqual([
        [1, 'Ann', 'a@x', '1990-01-02', 'keep'],
        [2, 'b', null, null, null],
      ]);
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it("'add' adds the columns and loads their values", async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `schema_add_${engine}`);
    const job = loadJob(db, "load: { missingColumns: 'add' }");
    try {
      await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
      await job.delta(0, 1, grown([['1990-01-02', 1, 'a@x', 'Ann']]));
      const r = runBin('deltasync-load', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
      const born =
        engine === 'sqlite'
          ? 'born'
          : engine === 'pg'
            ? "to_char(born, 'YYYY-MM-DD')"
            : "DATE_FORMAT(born, '%Y-%m-%d')";
      expect(await db.rows(`SELECT id, name, email, ${born} FROM customer`)).toEqual([
        [1, 'Ann', 'a@x', '1990-01-02'],
      ]);
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it("'skip' skips them, records them in the state file and status shows them", async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `schema_skip_${engine}`);
    const job = loadJob(db, "load: { missingColumns: 'skip' }");
    try {
      await db.exec('CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(40))');
      await job.delta(0, 1, grown([['1990-01-02', 1, 'a@x', 'Ann']]));
      const r = runBin('deltasync-load', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
      expect(await db.rows('SELECT id, name FROM customer')).toEqual([[1, 'Ann']]);
      expect(job.state().skippedColumns).toEqual({ customer: ['born', 'email'] });
      const st = runBin('deltasync', ['status', '-c', job.config]);
      expect(st.code, st.stderr).toBe(0);
      expect(st.stdout).toMatch(/skips columns the replica lacks: customer\.born, customer\.email/);
    } finally {
      job.cleanup();
      await db.close();
    }
  });
});
