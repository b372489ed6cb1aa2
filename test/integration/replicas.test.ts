/**
 * Several replicas of one job loaded from one host with one stateDir (issue 9, finding 8):
 * `replica: NAME` gives each its own state file and lock; two load configs that forget it and
 * load different databases are refused (78) instead of overwriting each other's state; a state
 * file from before replicas were named keeps working for the default replica.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const TABLES = `tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`;

describe('two replicas of one job on one host', () => {
  it.skipIf(!dbs.available('pg') || !dbs.available('mysql'))(
    'a PostgreSQL and a MariaDB replica keep their own state and lock in one stateDir',
    async () => {
      const source = await openDb(dbs, 'pg', 'rsrc');
      const pgReplica = await openDb(dbs, 'pg', 'rpg');
      const mariaReplica = await openDb(dbs, 'mysql', 'rmaria');
      const shared = mkdtempSync(join(tmpdir(), 'deltasync-replicas-'));
      const stateDir = join(shared, 'state');
      const pgJob = writeJob(source, pgReplica, `stateDir: ${JSON.stringify(stateDir)}, ${TABLES}`);
      const inbox = join(pgJob.dir, 'inbox');
      const load = (config: string) => runBin('deltasync-load', ['-c', config]);
      const configFor = (name: string, target: unknown, replica?: string) => {
        const file = join(shared, `${name}.js`);
        const job = {
          name: 'e2e',
          stateDir,
          target,
          inbox,
          ...(replica ? { replica } : {}),
        };
        writeFileSync(file, `export default { ...${JSON.stringify(job)}, ${TABLES} };\n`);
        return file;
      };
      const pgLoad = configFor('load-pg', pgReplica.config, 'pg');
      const mariaLoad = configFor('load-maria', mariaReplica.config, 'maria');
      try {
        await source.exec(
          'CREATE TABLE items (id bigint PRIMARY KEY, name text, log_id bigint NOT NULL)',
        );
        await pgReplica.exec(
          'CREATE TABLE items (id bigint PRIMARY KEY, name text, log_id bigint NOT NULL)',
        );
        await mariaReplica.exec(
          'CREATE TABLE items (id bigint PRIMARY KEY, name varchar(50), log_id bigint NOT NULL)',
        );
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2)`);
        expect(runBin('deltasync-extract', ['-c', pgJob.config]).code).toBe(0);
        expect(runBin('deltasync-copy', ['-c', pgJob.config]).code).toBe(0);
        expect(load(pgLoad).code).toBe(0);

        // The MariaDB replica lags one delta behind the PostgreSQL one.
        await source.exec(`UPDATE items SET name = 'uno', log_id = 3 WHERE id = 1`);
        expect(runBin('deltasync-extract', ['-c', pgJob.config]).code).toBe(0);
        expect(runBin('deltasync-copy', ['-c', pgJob.config]).code).toBe(0);
        const maria = load(mariaLoad);
        expect(maria.code, maria.stderr).toBe(0);
        const pg = load(pgLoad);
        expect(pg.code, pg.stderr).toBe(0);
        for (const r of [pgReplica, mariaReplica]) {
          expect(await r.rows('SELECT id, name FROM items ORDER BY id')).toEqual([
            [expect.anything(), 'uno'],
            [expect.anything(), 'two'],
          ]);
        }
        const pgState = JSON.parse(readFileSync(join(stateDir, 'e2e.load.pg.state.json'), 'utf8'));
        const mariaState = JSON.parse(
          readFileSync(join(stateDir, 'e2e.load.maria.state.json'), 'utf8'),
        );
        expect(pgState).toMatchObject({ replica: 'pg', logId: '3' });
        expect(mariaState).toMatchObject({ replica: 'maria', logId: '3' });
        expect(pgState.target).toMatch(/^pg:\/\/127\.0\.0\.1:5432\/dstest_rpg/);
        expect(mariaState.target).toMatch(/^mysql:\/\/127\.0\.0\.1:3306\/dstest_rmaria/);
        expect(existsSync(join(stateDir, 'e2e.load.state.json'))).toBe(false);
        const status = runBin('deltasync', ['status', '-c', mariaLoad, '--json']);
        expect(status.code, status.stderr).toBe(0);
        expect(JSON.parse(status.stdout).steps).toEqual([
          expect.objectContaining({ step: 'load.maria', logId: '3' }),
        ]);

        // Each replica has its own lock: one replica's running load does not hold back the other.
        writeFileSync(
          join(stateDir, 'e2e.load.pg.lock'),
          JSON.stringify({
            pid: process.pid,
            startTime: null,
            host: (await import('node:os')).hostname(),
            since: 'now',
          }),
        );
        expect(load(pgLoad).code).toBe(75);
        expect(load(mariaLoad).code).toBe(0);
        rmSync(join(stateDir, 'e2e.load.pg.lock'));

        // Two load configs that forget `replica:` share the default state file: the second is
        // refused, and the first replica's state is left as it was.
        const forgotA = configFor('forgot-a', pgReplica.config);
        const forgotB = configFor('forgot-b', mariaReplica.config);
        expect(load(forgotA).code).toBe(0);
        const before = readFileSync(join(stateDir, 'e2e.load.state.json'), 'utf8');
        const refused = load(forgotB);
        expect(refused.code).toBe(78);
        expect(refused.stderr).toContain('e2e.load.state.json belongs to the replica at pg://');
        expect(refused.stderr).toContain('replica: NAME');
        expect(readFileSync(join(stateDir, 'e2e.load.state.json'), 'utf8')).toBe(before);
      } finally {
        await source.close();
        await pgReplica.close();
        await mariaReplica.close();
        pgJob.cleanup();
        rmSync(shared, { recursive: true, force: true });
      }
    },
  );

  it.skipIf(!dbs.available('pg'))(
    'a state file written before replicas were named keeps working for the default replica',
    async () => {
      const source = await openDb(dbs, 'pg', 'rlsrc');
      const target = await openDb(dbs, 'pg', 'rldst');
      const job = writeJob(source, target, TABLES);
      const stateFile = join(job.dir, 'state', 'e2e.load.state.json');
      try {
        const ddl = 'CREATE TABLE items (id bigint PRIMARY KEY, name text, log_id bigint NOT NULL)';
        await source.exec(ddl);
        await target.exec(ddl);
        await source.exec(`INSERT INTO items VALUES (1, 'one', 1)`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          expect(runBin(bin, ['-c', job.config]).code).toBe(0);
        }
        // What an earlier version wrote: no replica, no target.
        writeFileSync(
          stateFile,
          JSON.stringify({ job: 'e2e', step: 'load', logId: '1', updatedAt: null }),
        );
        await source.exec(`INSERT INTO items VALUES (2, 'two', 2)`);
        for (const bin of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) {
          const r = runBin(bin, ['-c', job.config]);
          expect(r.code, r.stderr).toBe(0);
        }
        expect(await target.rows('SELECT count(*) FROM items')).toEqual([['2']]);
        expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toMatchObject({
          logId: '2',
          replica: 'default',
        });
      } finally {
        await source.close();
        await target.close();
        job.cleanup();
      }
    },
  );
});
