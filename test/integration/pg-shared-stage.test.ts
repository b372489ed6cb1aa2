/**
 * PostgreSQL's two-connection load (load.ts, TableLoader.loadShared) against a real server: a
 * second session stages each batch in a committed UNLOGGED table beside the target table while
 * the load's own session moves the previous one in. What must hold around it: the load's
 * transaction sees the stages whatever the role's default isolation; no stage outlives the
 * load, committed or rolled back; a crashed load's stages are dropped by the next load, and
 * nobody else's; a loader without CREATE on the schema loads the one-connection way.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTarget } from '../../src/db/index.js';
import type { ColumnInfo, CopyText, TargetWriter } from '../../src/db/types.js';
import { DeltaError } from '../../src/errors.js';
import { pgServer } from '../helpers/databases.js';

const server = await pgServer();

async function* chunks(text: string, size = 64 * 1024): CopyText {
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

// As a PostgreSQL source declares them (nothing to check) and as another engine would (checked).
const COLUMNS: ColumnInfo[] = [
  { name: 'id', type: 'int', nativeType: 'integer' },
  { name: 'name', type: 'text' },
];

/** About 10 MB of lines, so two batches at least: `${id}\t${prefix}…`. */
function lines(n: number, prefix: string): string {
  const pad = 'x'.repeat(90);
  return Array.from({ length: n }, (_, i) => `${i + 1}\t${prefix} ${pad}\n`).join('');
}

describe.skipIf(!server.available)(`PostgreSQL shared stages ${server.reason ?? ''}`, () => {
  let url: string;
  let admin: pg.Client;
  let target: TargetWriter;
  const sql = (text: string) => admin.query(text);
  const rows = async (text: string) => (await admin.query(text)).rows;
  /** The shared stages there are now, in any schema. */
  const stages = async () =>
    (
      await rows(
        `SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'deltasync\\_stage\\_%' ORDER BY 1`,
      )
    ).map((r) => r.relname as string);

  beforeAll(async () => {
    url = await server.fresh('pgsharedstage');
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await sql(`CREATE SCHEMA replica`);
    target = await openTarget({ client: 'pg', connection: url, schema: 'replica' });
  });

  afterAll(async () => {
    await target?.close();
    await admin?.end();
    await server.cleanup();
  });

  const copy = (writer: TargetWriter, table: string, text: string) =>
    writer.transaction((tx) =>
      tx.copyRows!({ table, key: ['id'], columns: COLUMNS, keep: [0, 1], data: chunks(text) }),
    );

  it('loads into an empty table and over it, the stages read and gone with the commit', async () => {
    await sql(`CREATE TABLE replica.big (id int PRIMARY KEY, name text)`);
    expect(await copy(target, 'big', lines(100_000, 'first'))).toBe(100_000);
    expect(await copy(target, 'big', lines(100_001, 'second'))).toBe(100_001);
    expect(
      await rows(`SELECT count(*)::int AS n, min(name) = max(name) AS same FROM replica.big`),
    ).toEqual([{ n: 100_001, same: true }]);
    expect(await rows(`SELECT name FROM replica.big WHERE id = 7`)).toEqual([
      { name: `second ${'x'.repeat(90)}` },
    ]);
    expect(await stages()).toEqual([]);
  });

  it('stages as many batches on the second session as load.sharedStageBatches allows', async () => {
    await sql(`CREATE TABLE seen (label text, stages int)`);
    // Every batch (there are several), the first batch only, none.
    for (const [label, batches, expected] of [
      ['default', undefined, 'several'],
      ['one', 1, 1],
      ['none', 0, 0],
    ] as const) {
      await sql(`CREATE TABLE replica.budget_${label} (id int PRIMARY KEY, name text)`);
      const writer = await openTarget({
        client: 'pg',
        connection: url,
        schema: 'replica',
        sharedStageBatches: batches,
      });
      try {
        // Several batches of lines; the stages still exist until the transaction ends.
        await writer.transaction(async (tx) => {
          await tx.copyRows!({
            table: `budget_${label}`,
            key: ['id'],
            columns: COLUMNS,
            keep: [0, 1],
            data: chunks(lines(100_000, label)),
          });
          await tx.executeDdl!(
            `INSERT INTO public.seen SELECT '${label}', count(*) FROM pg_class
              WHERE relkind = 'r' AND relname LIKE 'deltasync\\_stage\\_%'`,
          );
        });
      } finally {
        await writer.close();
      }
      expect(await rows(`SELECT count(*)::int AS n FROM replica.budget_${label}`)).toEqual([
        { n: 100_000 },
      ]);
      const [{ stages: staged }] = await rows(`SELECT stages FROM seen WHERE label = '${label}'`);
      if (expected === 'several') expect(staged).toBeGreaterThan(1);
      else expect(staged).toBe(expected);
      expect(await stages()).toEqual([]);
    }
  });

  it('loads a table with few rows in the delta on one session', async () => {
    await sql(`CREATE TABLE replica.few (id int PRIMARY KEY, name text)`);
    await sql(`CREATE TABLE seen_few (label text, stages int)`);
    for (const [label, expectedRows] of [
      ['counted', 3],
      ['uncounted', undefined],
    ] as const) {
      await target.transaction(async (tx) => {
        await tx.copyRows!({
          table: 'few',
          key: ['id'],
          columns: COLUMNS,
          keep: [0, 1],
          data: chunks(`1\t${label}\n2\t${label}\n3\t${label}\n`),
          expectedRows,
        });
        await tx.executeDdl!(
          `INSERT INTO public.seen_few SELECT '${label}', count(*) FROM pg_class
            WHERE relkind = 'r' AND relname LIKE 'deltasync\\_stage\\_%'`,
        );
      });
    }
    // The manifest's count says 3 rows: not worth a second session. Without a count: staged.
    expect(await rows(`SELECT label, stages FROM seen_few ORDER BY label`)).toEqual([
      { label: 'counted', stages: 0 },
      { label: 'uncounted', stages: 1 },
    ]);
    expect(
      await rows(`SELECT count(*)::int AS n FROM replica.few WHERE name = 'uncounted'`),
    ).toEqual([{ n: 3 }]);
  });

  it("sees the stages although the loader's role defaults to REPEATABLE READ", async () => {
    const role = `dsrr_${Math.random().toString(36).slice(2, 8)}`;
    await sql(`CREATE ROLE ${role} LOGIN`);
    await sql(`ALTER ROLE ${role} SET default_transaction_isolation = 'repeatable read'`);
    await sql(`CREATE TABLE replica.rr (id int PRIMARY KEY, name text)`);
    await sql(`GRANT ALL ON SCHEMA replica TO ${role}; GRANT ALL ON replica.rr TO ${role}`);
    const u = new URL(url);
    u.username = role;
    const writer = await openTarget({ client: 'pg', connection: u.toString(), schema: 'replica' });
    try {
      expect(await copy(writer, 'rr', lines(100_000, 'rr'))).toBe(100_000);
      expect(await rows(`SELECT count(*)::int AS n FROM replica.rr`)).toEqual([{ n: 100_000 }]);
      expect(await stages()).toEqual([]);
    } finally {
      await writer.close();
      await sql(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    }
  });

  it('leaves no stage behind when the load fails half-way and rolls back', async () => {
    await sql(`CREATE TABLE replica.fails (id int PRIMARY KEY, name varchar(100))`);
    // The last line's name does not fit: refused in the second batch, after the first moved in.
    const long = 'y'.repeat(101);
    const err = await copy(target, 'fails', lines(100_000, 'ok') + `100001\t${long}\n`).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeltaError);
    expect((err as Error).message).toContain(`row (id)=(100001): column name value '${long}'`);
    expect(await rows(`SELECT count(*)::int AS n FROM replica.fails`)).toEqual([{ n: 0 }]);
    expect(await stages()).toEqual([]);
  });

  it("drops a crashed load's stages at the next load, and not a live session's", async () => {
    const { pid } = (await rows(`SELECT pg_backend_pid() AS pid`))[0] as { pid: number };
    // No backend has pid 4194305 (above PostgreSQL's limit): a crashed load's leftover.
    await sql(`CREATE UNLOGGED TABLE replica.deltasync_stage_4194305_1 (id int)`);
    await sql(`CREATE UNLOGGED TABLE replica.deltasync_stage_${pid}_1 (id int)`);
    await target.prepare();
    expect(await stages()).toEqual([`deltasync_stage_${pid}_1`]);
    await sql(`DROP TABLE replica.deltasync_stage_${pid}_1`);
  });

  it('loads the one-connection way when the loader may not create tables there', async () => {
    const role = `dsnocreate_${Math.random().toString(36).slice(2, 8)}`;
    await sql(`CREATE ROLE ${role} LOGIN`);
    await sql(`CREATE TABLE replica.locked (id int PRIMARY KEY, name text)`);
    await sql(`GRANT USAGE ON SCHEMA replica TO ${role}; GRANT ALL ON replica.locked TO ${role}`);
    await sql(`GRANT ALL ON public.deltasync_applied TO ${role}`).catch(() => {});
    const u = new URL(url);
    u.username = role;
    const writer = await openTarget({ client: 'pg', connection: u.toString(), schema: 'replica' });
    try {
      expect(await copy(writer, 'locked', lines(100_000, 'a'))).toBe(100_000);
      expect(await copy(writer, 'locked', '1\tb\n')).toBe(1);
      expect(await rows(`SELECT name FROM replica.locked WHERE id = 1`)).toEqual([{ name: 'b' }]);
      expect(await stages()).toEqual([]);
    } finally {
      await writer.close();
      await sql(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    }
  });
});
