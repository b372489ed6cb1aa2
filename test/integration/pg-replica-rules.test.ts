/**
 * A PostgreSQL replica table with rules on INSERT (the pagila schema routes payments into
 * monthly tables that way). PostgreSQL refuses `INSERT … ON CONFLICT` on such a table, so:
 * - a loader that may not relax (no SET on session_replication_role) stops with 78 naming the
 *   grant and the rules, and applies nothing;
 * - once granted, load writes as a replication applier: the rules stay out of it, as triggers
 *   do, and the rows land in the table load names;
 * - a rule enabled ALWAYS fires even then: 78 again, saying so.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { cols, loadJob, type DeltaTable } from '../helpers/deltas.js';
import { openDb, pgRoles, servers, type Servers } from '../helpers/engines.js';

let s: Servers;
beforeAll(async () => {
  s = await servers();
});
const roles = pgRoles();
afterAll(async () => {
  await s?.cleanup();
  await roles.dropAll(); // once the databases holding their privileges are gone
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
