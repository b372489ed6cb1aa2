/**
 * The steps through each kind of store, with the real bins. PostgreSQL → PostgreSQL: extract into
 * a local outbox, copy to a directory, an SFTP server (OpenSSH's sshd) or S3 (Ceph's RADOS
 * Gateway), load pulling from that same store; load acknowledges there, and status on the source
 * side reads the acknowledgement back. Then extract and simulate publishing into a remote outbox,
 * and extract's recovery through it after a kill.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseAck } from '../../src/format/ack.js';
import { openStore, readText, type DeltaStore } from '../../src/store/index.js';
import { logLines, runBin, sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';
import { openDb, servers, type Db } from '../helpers/engines.js';
import { storeKinds } from '../helpers/stores.js';

const dbs = await servers();
const kinds = storeKinds();
afterAll(async () => {
  kinds.forEach((k) => k.cleanup());
  await dbs.cleanup();
});

const DDL =
  'CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), log_id bigint NOT NULL)';
const ROWS = 'SELECT id::text, name, price::text, log_id::text FROM items ORDER BY id';

interface ReplicaLine {
  replica: string;
  destination: string;
  logId: string;
  behindDeltas: number;
  behindLogIds: string;
  behindSeconds?: number;
}

function statusJson(config: string): { replicas?: ReplicaLine[]; problems?: string[] } {
  const r = runBin('deltasync', ['status', '-c', config, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as { replicas?: ReplicaLine[] };
}

function run(bin: string, config: string): Record<string, unknown> | undefined {
  const r = runBin(bin, ['-c', config]);
  expect(r.stderr, bin).toBe('');
  expect(r.code, bin).toBe(0);
  return summaryOf(r.stdout);
}

for (const kind of kinds) {
  describe.skipIf(!kind.available || !dbs.pg.available)(
    `PostgreSQL → PostgreSQL through ${kind.kind === 'dir' ? 'a directory' : kind.kind.toUpperCase()}`,
    () => {
      let source: Db | undefined;
      let target: Db | undefined;
      let dir: string | undefined;
      let store: DeltaStore | undefined;
      afterEach(async () => {
        await store?.close();
        await source?.close();
        await target?.close();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      it('copy pushes there, load pulls from there and acknowledges, status shows the replica', async () => {
        source = await openDb(dbs, 'pg', `src_${kind.kind}`);
        target = await openDb(dbs, 'pg', `dst_${kind.kind}`);
        await source.exec(DDL);
        await target.exec(DDL);
        await source.exec(
          "INSERT INTO items VALUES (1, 'a', 1.50, 5), (2, 'b', NULL, 6), (3, 'c', 3.25, 7)",
        );
        const spec = await kind.fresh('pipeline');
        dir = mkdtempSync(join(tmpdir(), 'deltasync-stores-'));
        const config = join(dir, 'job.js');
        writeFileSync(
          config,
          `export default ${JSON.stringify({
            name: 'stores',
            stateDir: join(dir, 'state'),
            source: source.config,
            target: target.config,
            outbox: join(dir, 'outbox'),
            destinations: [{ name: 'remote', ...spec }],
            // A directory store given as a file: URL string; remote ones as { url, ...options }.
            inbox: kind.kind === 'dir' ? spec.url : spec,
            tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }],
            delta: { maxRowsPerPart: 2, compression: 'gzip' },
          })};\n`,
        );
        store = await openStore(spec as never);

        expect(statusJson(config).replicas).toEqual([]);
        run('deltasync-extract', config);
        expect(run('deltasync-copy', config)).toMatchObject({ deltas: 1, rows: 3 });
        expect(run('deltasync-load', config)).toMatchObject({ deltas: 1, rows: 3 });
        expect(await target.rows(ROWS)).toEqual(await source.rows(ROWS));

        const ack = parseAck(
          await readText(store, 'stores.default.ack.json'),
          'stores.default.ack.json',
        );
        expect(ack).toMatchObject({ job: 'stores', replica: 'default', logId: '7' });
        expect(statusJson(config).replicas).toEqual([
          {
            replica: 'default',
            destination: 'remote',
            logId: '7',
            ackedAt: ack.time,
            behindDeltas: 0,
            behindLogIds: '0',
            behindSeconds: 0,
          },
        ]);

        // The source moves on, copy delivers, the replica has not loaded yet: it is behind.
        await source.exec("INSERT INTO items VALUES (4, 'd', 4.00, 8)");
        await source.exec("UPDATE items SET name = 'c2', log_id = 10 WHERE id = 3");
        run('deltasync-extract', config);
        run('deltasync-copy', config);
        const behind = statusJson(config).replicas!;
        expect(behind).toHaveLength(1);
        expect(behind[0]).toMatchObject({ logId: '7', behindDeltas: 1, behindLogIds: '3' });
        expect(behind[0]!.behindSeconds).toBeGreaterThanOrEqual(0);
        const text = runBin('deltasync', ['status', '-c', config]).stdout;
        expect(text).toMatch(
          /^replica default applied logId 7 \(acknowledged .* at remote\), behind by 1 deltas, 3 logIds, \d+ s$/m,
        );

        expect(run('deltasync-load', config)).toMatchObject({ deltas: 1, rows: 2 });
        expect(await target.rows(ROWS)).toEqual(await source.rows(ROWS));
        expect(statusJson(config).replicas![0]).toMatchObject({ logId: '10', behindDeltas: 0 });

        // Nothing new: load still acknowledges (its time says the loader is alive).
        expect(run('deltasync-load', config)).toMatchObject({ deltas: 0 });
        const again = parseAck(
          await readText(store, 'stores.default.ack.json'),
          'stores.default.ack.json',
        );
        expect(again.logId).toBe('10');
        expect(again.time >= ack.time).toBe(true);
        expect(await store.leftovers()).toEqual([]);
      });
    },
  );
}

const remote = kinds.filter((k) => k.kind !== 'dir');

for (const kind of remote) {
  describe.skipIf(!kind.available)(
    `extract and simulate publish into an ${kind.kind} outbox`,
    () => {
      let job: SqliteJob | undefined;
      let store: DeltaStore | undefined;
      afterEach(async () => {
        await store?.close();
        job?.cleanup();
      });

      async function remoteOutboxJob(label: string) {
        const spec = await kind.fresh(label);
        job = sqliteJob({ outbox: spec, delta: { maxRowsPerPart: 2, compression: 'gzip' } });
        store = await openStore(spec as never);
        // copy pushes from the remote outbox into the local inbox.
        return { job, store, spec };
      }

      function staged(j: SqliteJob): string[] {
        const d = join(j.stateDir, 't.outbox-staging');
        return existsSync(d) ? readdirSync(d) : [];
      }

      it('extract publishes parts and manifest there, copy and load take them from there', async () => {
        const { job, store } = await remoteOutboxJob('extract');
        job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5), (2, 'b', 2, 6), (3, 'c', 3, 7)");
        expect(run('deltasync-extract', job.config)).toMatchObject({ deltas: 1, rows: 3 });
        expect((await store.listManifests()).map((m) => m.logId)).toEqual(['7']);
        expect(await store.list('logId')).toHaveLength(3); // two parts and the manifest
        expect(existsSync(job.outbox)).toBe(false);
        expect(staged(job)).toEqual([]);
        run('deltasync-copy', job.config);
        run('deltasync-load', job.config);
        expect(job.targetRows()).toHaveLength(3);
        const status = JSON.parse(
          runBin('deltasync', ['status', '-c', job.config, '--json']).stdout,
        ) as { steps: { step: string; waiting?: number }[] };
        expect(status.steps.find((s) => s.step === 'copy.main')?.waiting).toBe(0);
      });

      it('simulate publishes there through the same path', async () => {
        const { job, store } = await remoteOutboxJob('simulate');
        const r = runBin('deltasync', [
          'simulate',
          '-c',
          job.config,
          '--count',
          '2',
          '--rows',
          '3',
        ]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect((await store.listManifests()).map((m) => m.logId)).toEqual(['1000', '2000']);
        expect(staged(job)).toEqual([]);
      });

      it.each(['extract:after-part', 'extract:before-manifest', 'extract:before-state'])(
        'killed at %s: the next extract recovers through the store, nothing lost or twice',
        async (point) => {
          const { job, store } = await remoteOutboxJob(point.replace(/[^a-z]/g, ''));
          job.sourceExec("INSERT INTO items VALUES (1, 'a', 1, 5), (2, 'b', 2, 6), (3, 'c', 3, 7)");
          const killed = runBin('deltasync-extract', ['-c', job.config], {
            DELTASYNC_FAULT: point,
          });
          expect(killed.code, 'killed').toBeNull();
          const published = await store.listManifests();
          expect(published).toHaveLength(point === 'extract:before-state' ? 1 : 0);

          const again = runBin('deltasync-extract', ['-c', job.config]);
          expect(again.stderr).toBe('');
          expect(again.code).toBe(0);
          const lines = logLines(again.stdout).map((l) => l.msg);
          if (point === 'extract:before-state')
            expect(lines).toContain('adopting a delta published by an interrupted run');
          expect((await store.listManifests()).map((m) => m.logId)).toEqual(['7']);
          expect(await store.leftovers()).toEqual([]);
          expect(staged(job)).toEqual([]);
          run('deltasync-copy', job.config);
          expect(run('deltasync-load', job.config)).toMatchObject({ deltas: 1, rows: 3 });
          expect(job.targetRows()).toHaveLength(3);
        },
      );
    },
  );
}
