/**
 * Base deltas on the load side (issue 8 item 5): a base table replaces the replica table's
 * content in the delta's transaction (rows the base lacks go; the rows it keeps are upserted, not
 * deleted and re-inserted, so their children stay), and a `fullBase` delta lets a replica that
 * has applied nothing of the job start there, whatever came before it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logLines, runBin } from '../helpers/cli.js';
import { cols, loadJob } from '../helpers/deltas.js';
import { openDb, servers, type Db, type Engine, type Servers } from '../helpers/engines.js';

const ENGINES: Engine[] = ['pg', 'mysql', 'sqlite'];
let s: Servers;
beforeAll(async () => {
  s = await servers();
});
afterAll(async () => s?.cleanup());

const PARENT = cols('id:int', 'name:text');
const CHILD = cols('id:int', 'parent_id:int');

async function createSchema(db: Db): Promise<void> {
  const innodb = db.engine === 'mysql' ? ' ENGINE=InnoDB' : '';
  await db.exec(`CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(40))${innodb}`);
  await db.exec(
    `CREATE TABLE child (id INT PRIMARY KEY, parent_id INT,
       FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE)${innodb}`,
  );
}

describe.each(ENGINES)('%s replica: base deltas', (engine) => {
  it('a base table replaces the content, keeping the children of the rows it keeps', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `base_table_${engine}`);
    const job = loadJob(db);
    try {
      await createSchema(db);
      await job.delta(0, 1, [
        {
          name: 'parent',
          key: ['id'],
          columns: PARENT,
          rows: [
            [1, 'one'],
            [2, 'two'],
            [3, 'three'],
          ],
        },
        {
          name: 'child',
          key: ['id'],
          columns: CHILD,
          rows: [
            [10, 1],
            [30, 3],
          ],
        },
      ]);
      await job.delta(1, 2, [
        {
          name: 'parent',
          key: ['id'],
          columns: PARENT,
          base: true,
          rows: [
            [1, 'one!'],
            [2, 'two'],
            [4, 'four'],
          ],
        },
      ]);
      const r = runBin('deltasync-load', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
      expect(await db.rows('SELECT id, name FROM parent ORDER BY id')).toEqual([
        [1, 'one!'],
        [2, 'two'],
        [4, 'four'],
      ]);
      // Child 10's parent was kept: a DELETE-all and re-insert would have cascaded it away.
      expect(await db.rows('SELECT id FROM child WHERE id = 10')).toEqual([[10]]);
      const summary = logLines(r.stdout).find((l) => l.msg === 'summary');
      expect(summary?.rows).toBe(5 + 3 + 1);

      // An empty base empties the table.
      await job.delta(2, 3, [{ name: 'child', key: ['id'], columns: CHILD, base: true, rows: [] }]);
      const r2 = runBin('deltasync-load', ['-c', job.config]);
      expect(r2.code, r2.stderr).toBe(0);
      expect(await db.rows('SELECT id FROM child')).toEqual([]);
    } finally {
      job.cleanup();
      await db.close();
    }
  });

  it('a replica that applied nothing starts at the last full base delta, whatever came before', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `base_full_${engine}`);
    const job = loadJob(db);
    try {
      await createSchema(db);
      // A rebuilt replica: restored from an old dump, with nothing recorded of the job.
      await db.exec("INSERT INTO parent VALUES (7, 'stale'), (1, 'old')");
      // What the inbox still holds after retention pruned the beginning of the chain.
      await job.delta(5, 10, [
        { name: 'parent', key: ['id'], columns: PARENT, rows: [[8, 'never']] },
      ]);
      const base = await job.delta(
        10,
        20,
        [
          {
            name: 'parent',
            key: ['id'],
            columns: PARENT,
            base: true,
            rows: [
              [1, 'one'],
              [2, 'two'],
            ],
          },
          { name: 'child', key: ['id'], columns: CHILD, base: true, rows: [[10, 1]] },
        ],
        { fullBase: true },
      );
      await job.delta(20, 25, [{ name: 'child', key: ['id'], columns: CHILD, rows: [[20, 2]] }]);
      const r = runBin('deltasync-load', ['-c', job.config]);
      expect(r.code, r.stderr).toBe(0);
      const started = logLines(r.stdout).find((l) => /full base delta/.test(String(l.msg)));
      expect(started).toMatchObject({ delta: base, skipped: 1 });
      expect(await db.rows('SELECT id, name FROM parent ORDER BY id')).toEqual([
        [1, 'one'],
        [2, 'two'],
      ]);
      expect(await db.rows('SELECT id, parent_id FROM child ORDER BY id')).toEqual([
        [10, 1],
        [20, 2],
      ]);
      expect(job.state().logId).toBe('25');
    } finally {
      job.cleanup();
      await db.close();
    }
  });
});
