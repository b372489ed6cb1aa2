/**
 * copy killed with SIGKILL while it pushes to an SFTP and an S3 destination: at each copy fault
 * point, and mid-transfer of a large part (the kill lands while the temporary file or multipart
 * upload is there). Each time nothing partial is visible as a delta, the next run completes, and
 * the leftovers are gone. Then load killed mid-transfer while it pulls a delta from SFTP and
 * from S3 into PostgreSQL: nothing is applied or acknowledged, and the next run completes.
 */
import { spawn } from 'node:child_process';
import { createReadStream, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { digestOf } from '../../src/store/common.js';
import { openStore, type DeltaStore } from '../../src/store/index.js';
import { ROOT, runBin, sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';
import { pgServer } from '../helpers/databases.js';
import {
  ensureTestBucket,
  freshSftpDir,
  s3Env,
  s3Server,
  s3Spec,
  sftpServer,
  sftpSpec,
} from '../helpers/stores.js';

const sftp = sftpServer();
const pgs = await pgServer();
afterAll(() => pgs.cleanup());
const s3 = s3Server();
const env = s3 ? s3Env(s3) : {};
if (s3) Object.assign(process.env, env);

let job: SqliteJob | undefined;
const remoteDirs: string[] = [];
afterEach(() => job?.cleanup());
afterAll(() => remoteDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function remoteStores(label: string) {
  await ensureTestBucket(s3!);
  const dir = freshSftpDir(sftp!, label);
  remoteDirs.push(dir);
  const destinations = [
    { name: 'ssh', ...sftpSpec(sftp!, dir) },
    { name: 'bucket', ...s3Spec(s3!, `${label}-${Date.now().toString(36)}`, { partSizeMiB: 5 }) },
  ];
  const stores = await Promise.all(destinations.map((d) => openStore(d as never)));
  return { destinations, stores };
}

async function contents(store: DeltaStore) {
  const out: Record<string, unknown> = {};
  for (const name of await store.list('logId')) out[name] = await digestOf(await store.read(name));
  return out;
}

async function outboxContents(outbox: string) {
  const out: Record<string, unknown> = {};
  for (const name of readdirSync(outbox).sort())
    out[name] = await digestOf(createReadStream(join(outbox, name)));
  return out;
}

/** After a crash and a complete run: every store holds exactly the outbox, nothing left over. */
async function expectComplete(stores: DeltaStore[], outbox: string) {
  const expected = await outboxContents(outbox);
  for (const store of stores) {
    expect(await contents(store), store.where).toEqual(expected);
    expect(await store.leftovers(), store.where).toEqual([]);
  }
}

describe.skipIf(!sftp || !s3)('copy SIGKILLed while pushing to SFTP and S3', () => {
  it.each(['copy:after-part', 'copy:before-manifest', 'copy:before-state'])(
    'at %s: no manifest without its parts, and the next run completes',
    async (point) => {
      const { destinations, stores } = await remoteStores(point.replace(/[^a-z]/g, ''));
      try {
        // SFTP first, so the kill lands while pushing to it; then S3 on its own.
        for (const dest of destinations) {
          job = sqliteJob({
            destinations: [dest],
            delta: { maxRowsPerPart: 2, compression: 'gzip' },
          });
          job.sourceExec(
            "INSERT INTO items VALUES (1, 'a', 1, 5), (2, 'b', 2, 6), (3, 'c', 3, 7), (4, 'd', 4, 8)",
          );
          expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
          const killed = runBin('deltasync-copy', ['-c', job.config], {
            ...env,
            DELTASYNC_FAULT: point,
          });
          expect(killed.code, 'killed').toBeNull();
          const store = stores[destinations.indexOf(dest)]!;
          const manifests = await store.listManifests();
          if (point === 'copy:before-state') expect(manifests).toHaveLength(1);
          else expect(manifests).toEqual([]);
          const done = runBin('deltasync-copy', ['-c', job.config], env);
          expect(done.stderr).toBe('');
          expect(done.code).toBe(0);
          await expectComplete([store], job.outbox);
          job.cleanup();
          job = undefined;
        }
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    },
  );

  it('mid-transfer of a large part: nothing visible under its name, the next run completes', async () => {
    const { destinations, stores } = await remoteStores('midtransfer');
    try {
      for (const [i, dest] of destinations.entries()) {
        job = sqliteJob({
          destinations: [dest],
          delta: { maxRowsPerPart: 1_000_000, compression: 'none' },
        });
        // ~20 MB of incompressible text in one part: several S3 multipart parts of 5 MiB.
        job.sourceExec(
          `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
           INSERT INTO items SELECT i, hex(randomblob(100)), i, i + 10 FROM n`,
        );
        expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
        const store = stores[i]!;
        const child = spawn(
          process.execPath,
          [join(ROOT, 'bin', 'deltasync-copy'), '-c', job.config],
          { env: { ...process.env, ...env }, stdio: 'ignore' },
        );
        const exited = new Promise((r) => child.once('exit', r));
        try {
          // Wait for the part's temporary file or multipart upload to exist: the transfer is on.
          while (!(await store.leftovers()).some((l) => l.kind !== 'orphan-part')) {
            if (child.exitCode !== null) throw new Error('copy finished before it could be killed');
            await new Promise((r) => setTimeout(r, 20));
          }
        } finally {
          child.kill('SIGKILL');
          await exited;
        }
        expect(await store.listManifests()).toEqual([]);
        expect(await store.list('logId')).toEqual([]);
        const done = runBin('deltasync-copy', ['-c', job.config], env);
        expect(done.stderr).toBe('');
        expect(done.code).toBe(0);
        await expectComplete([store], job.outbox);
        job.cleanup();
        job = undefined;
      }
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });
});

/** Rows of the load test: enough that three parts of 50,000 take a while to stream. */
const LOAD_ROWS = 150_000;
const LOAD_PART_ROWS = 50_000;

describe.skipIf(!sftp || !s3 || !pgs.available)(
  'load SIGKILLed while it pulls from SFTP and S3 into PostgreSQL',
  () => {
    it.each(['ssh', 'bucket'])(
      'from %s: killed while a part streams, nothing applied or acknowledged; the next run completes',
      async (name) => {
        const { destinations, stores } = await remoteStores(`load${name}`);
        const dest = destinations.find((d) => d.name === name)!;
        const store = stores[destinations.indexOf(dest)]!;
        const url = await pgs.fresh(`loadcrash_${name}`);
        const db = new pg.Client({ connectionString: url });
        await db.connect();
        try {
          await db.query(
            'CREATE TABLE items (id bigint PRIMARY KEY, name text, qty bigint, log_id bigint NOT NULL)',
          );
          const { name: _n, ...spec } = dest;
          job = sqliteJob({
            destinations: [dest],
            inbox: spec,
            target: { client: 'pg', connection: url },
            delta: { maxRowsPerPart: LOAD_PART_ROWS, compression: 'none' },
          });
          job.sourceExec(
            `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${LOAD_ROWS})
             INSERT INTO items SELECT i, hex(randomblob(60)), i, i + 10 FROM n`,
          );
          expect(runBin('deltasync-extract', ['-c', job.config]).code).toBe(0);
          expect(runBin('deltasync-copy', ['-c', job.config], env).code).toBe(0);

          const child = spawn(
            process.execPath,
            [join(ROOT, 'bin', 'deltasync-load'), '-c', job.config],
            { env: { ...process.env, ...env }, stdio: 'ignore' },
          );
          const exited = new Promise((r) => child.once('exit', r));
          try {
            // Wait until the rows of the first part are streaming into COPY: the rest of the
            // delta is still to be read from the store when the kill lands.
            for (;;) {
              if (child.exitCode !== null)
                throw new Error('load finished before it could be killed');
              const { rows } = await db.query<{ n: string }>(
                `SELECT tuples_processed::text AS n FROM pg_stat_progress_copy
                 WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
              );
              const n = Number(rows[0]?.n ?? 0);
              if (n > 0 && n < LOAD_PART_ROWS) break;
              await new Promise((r) => setTimeout(r, 10));
            }
          } finally {
            child.kill('SIGKILL');
            await exited;
          }
          const count = async () =>
            Number(
              (await db.query<{ n: string }>('SELECT count(*)::text AS n FROM items')).rows[0]!.n,
            );
          expect(await count(), 'rows applied by the killed load').toBe(0);
          expect(await store.list('t.'), 'acknowledgements').toEqual([]);

          const done = runBin('deltasync-load', ['-c', job.config], env);
          expect(done.stderr).toBe('');
          expect(done.code).toBe(0);
          expect(summaryOf(done.stdout)).toMatchObject({ deltas: 1, rows: LOAD_ROWS });
          expect(await count()).toBe(LOAD_ROWS);
          expect(await store.list('t.')).toEqual(['t.default.ack.json']);
          job.cleanup();
          job = undefined;
        } finally {
          await db.end();
          await Promise.all(stores.map((s) => s.close()));
        }
      },
    );
  },
);
