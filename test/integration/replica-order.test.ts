/**
 * Issue 8 finding 3: rows that reference each other within one delta — in one table (a manager
 * and their report) or across tables (Sakila's store and staff, each pointing at the other) —
 * apply on every replica engine, whatever order they arrive in; deletes of both too.
 *
 * On PostgreSQL that takes relaxing the replica (session_replication_role = replica), which
 * also keeps its rules out of the load. A loader that may not relax stops with 78 naming the
 * grant, both for such rows and for a table with rules on INSERT (pagila routes payments into
 * monthly tables that way): PostgreSQL refuses `INSERT … ON CONFLICT` there. A rule enabled
 * ALWAYS fires even for a relaxed load: 78 again, saying so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { cols, loadJob, type DeltaTable } from '../helpers/deltas.js';
import {
  openDb,
  pgRoles,
  servers,
  type Db,
  type Engine,
  type Servers,
} from '../helpers/engines.js';

const ENGINES: Engine[] = ['pg', 'mysql', 'sqlite'];
let s: Servers;
beforeAll(async () => {
  s = await servers();
});
const roles = pgRoles();
afterAll(async () => {
  await s?.cleanup();
  await roles.dropAll(); // once the databases holding their privileges are gone
});

async function createSchema(db: Db): Promise<void> {
  const innodb = db.engine === 'mysql' ? ' ENGINE=InnoDB' : '';
  // SQLite cannot add a constraint later; it accepts a reference to a table not yet created.
  const storeFk = db.engine === 'sqlite' ? ', FOREIGN KEY (manager_id) REFERENCES staff (id)' : '';
  await db.exec(
    `CREATE TABLE store (id INT PRIMARY KEY, name VARCHAR(50), manager_id INT${storeFk})${innodb}`,
  );
  await db.exec(
    `CREATE TABLE staff (id INT PRIMARY KEY, store_id INT, manager_id INT, phone VARCHAR(20),
       FOREIGN KEY (store_id) REFERENCES store (id),
       FOREIGN KEY (manager_id) REFERENCES staff (id))${innodb}`,
  );
  if (db.engine !== 'sqlite')
    await db.exec('ALTER TABLE store ADD FOREIGN KEY (manager_id) REFERENCES staff (id)');
}

const STAFF = cols('id:int', 'store_id:int', 'manager_id:int', 'phone:text');
const STORE = cols('id:int', 'name:text', 'manager_id:int');

// Children first, and within staff the report before the manager (the manager's phone was fixed
// after the report was hired, so the manager's last change comes last).
const hired: DeltaTable[] = [
  {
    name: 'staff',
    key: ['id'],
    columns: STAFF,
    rows: [
      [2, 1, 1, '555-0102'],
      [1, 1, null, '555-0199'],
    ],
  },
  { name: 'store', key: ['id'], columns: STORE, rows: [[1, 'main', 1]] },
];
const left: DeltaTable[] = [
  { name: 'store', key: ['id'], columns: STORE, deletes: [[1]] },
  { name: 'staff', key: ['id'], columns: STAFF, deletes: [[1], [2]] },
];

describe.each(ENGINES)('%s replica: rows that reference each other', (engine) => {
  it('apply in one delta whatever their order, and leave in one delta', async (ctx) => {
    if (!s.available(engine)) return ctx.skip();
    const db = await openDb(s, engine, `order_${engine}`);
    const job = loadJob(db);
    try {
      await createSchema(db);
      await job.delta(0, 1, hired);
      const r1 = runBin('deltasync-load', ['-c', job.config]);
      expect(r1.code, r1.stderr).toBe(0);
      expect(
        await db.rows('SELECT id, store_id, manager_id, phone FROM staff ORDER BY id'),
      ).toEqual([
        [1, 1, null, '555-0199'],
        [2, 1, 1, '555-0102'],
      ]);
      expect(await db.rows('SELECT id, manager_id FROM store')).toEqual([[1, 1]]);

      await job.delta(1, 2, left);
      const r2 = runBin('deltasync-load', ['-c', job.config]);
      expect(r2.code, r2.stderr).toBe(0);
      expect(await db.rows('SELECT id FROM staff')).toEqual([]);
      expect(await db.rows('SELECT id FROM store')).toEqual([]);
      expect(job.state().logId).toBe('2');
    } finally {
      job.cleanup();
      await db.close();
    }
  });
});

describe('pg replica: a loader without the right to relax foreign keys', () => {
  it('stops with 78 naming the grant, applies nothing, and goes on once granted', async (ctx) => {
    if (!s.available('pg')) return ctx.skip();
    const db = await openDb(s, 'pg', 'order_grant');
    const { role, db: asRole } = await roles.create(db);
    const job = loadJob(asRole);
    try {
      await createSchema(db);
      await db.exec(
        `GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}; GRANT CREATE ON SCHEMA public TO ${role}`,
      );
      await job.delta(0, 1, hired);
      const r1 = runBin('deltasync-load', ['-c', job.config]);
      expect(r1.code, r1.stderr).toBe(78);
      expect(r1.stderr.trim().split('\n')).toHaveLength(1);
      expect(r1.stderr).toMatch(/GRANT SET ON PARAMETER session_replication_role/);
      expect(await db.rows('SELECT id FROM staff')).toEqual([]);

      await db.exec(`GRANT SET ON PARAMETER session_replication_role TO ${role}`);
      const r2 = runBin('deltasync-load', ['-c', job.config]);
      expect(r2.code, r2.stderr).toBe(0);
      expect(await db.rows('SELECT id FROM staff ORDER BY id')).toEqual([[1], [2]]);
    } finally {
      job.cleanup();
      await db.exec(`DROP OWNED BY ${role}`).catch(() => {});
      await db.close();
    }
  });
});

const PAYMENT = cols('payment_id:int', 'note:text');
const payments = (from: number): DeltaTable[] => [
  {
    name: 'payment',
    key: ['payment_id'],
    columns: PAYMENT,
    rows: [
      [from, 'small'],
      [from + 100, 'big'],
    ],
  },
];

describe('pg replica: a table with rules on INSERT', () => {
  it('stops with 78 naming the rules and the grant; once relaxed, loads past them', async (ctx) => {
    if (!s.available('pg')) return ctx.skip();
    const db = await openDb(s, 'pg', 'rules');
    const { role, db: asRole } = await roles.create(db);
    const job = loadJob(asRole);
    try {
      await db.exec(`CREATE TABLE payment (payment_id int PRIMARY KEY, note text)`);
      await db.exec(`CREATE TABLE payment_big () INHERITS (payment)`);
      await db.exec(
        `CREATE RULE payment_insert_big AS ON INSERT TO payment WHERE NEW.payment_id >= 100
           DO INSTEAD INSERT INTO payment_big VALUES (NEW.*)`,
      );
      await db.exec(
        `GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}; GRANT CREATE ON SCHEMA public TO ${role}`,
      );
      await job.delta(0, 1, payments(1));

      const refused = runBin('deltasync-load', ['-c', job.config]);
      expect(refused.code, refused.stderr).toBe(78);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toContain(
        "target table 'payment' has rules on INSERT or UPDATE (payment_insert_big)",
      );
      expect(refused.stderr).toContain(
        `GRANT SET ON PARAMETER session_replication_role TO ${role}`,
      );
      expect(refused.stderr).toContain('DISABLE RULE "payment_insert_big"');
      expect(await db.rows('SELECT payment_id FROM payment')).toEqual([]);

      await db.exec(`GRANT SET ON PARAMETER session_replication_role TO ${role}`);
      const loaded = runBin('deltasync-load', ['-c', job.config]);
      expect(loaded.code, loaded.stderr).toBe(0);
      // As a replication applier, past the rule: both rows in the table the delta names.
      expect(await db.rows('SELECT payment_id, note FROM ONLY payment ORDER BY 1')).toEqual([
        [1, 'small'],
        [101, 'big'],
      ]);
      expect(await db.rows('SELECT count(*)::int FROM payment_big')).toEqual([[0]]);

      await db.exec('ALTER TABLE payment ENABLE ALWAYS RULE payment_insert_big');
      await job.delta(1, 2, payments(2));
      const always = runBin('deltasync-load', ['-c', job.config]);
      expect(always.code, always.stderr).toBe(78);
      expect(always.stderr).toContain('enabled ALWAYS or REPLICA');
      expect(await db.rows('SELECT count(*)::int FROM payment')).toEqual([[2]]);
      expect(job.state().logId).toBe('1');
    } finally {
      job.cleanup();
      await db.exec(`DROP OWNED BY ${role}`).catch(() => {});
      await db.close();
    }
  });
});
