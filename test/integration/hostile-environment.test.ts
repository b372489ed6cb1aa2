/**
 * A hostile environment: the disk fills up under extract or copy, the target database goes away
 * in the middle of a load, the state directory cannot be written. Each time the run fails with
 * the documented exit code and one line saying what to do, leaves no partial delta and no state
 * change behind, and the next run in a sane environment finishes the job.
 *
 * "Disk full" is a file-size limit (ulimit -f): the bins ignore SIGXFSZ, so the write that
 * crosses the limit fails with EFBIG, as it would with ENOSPC on a full disk.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ROOT, sqliteJob, type SqliteJob } from '../helpers/cli.js';
import { pgServer } from '../helpers/databases.js';
import {
  SourceChanges,
  completeCycle,
  expectConverged,
  manifestsIn,
  pgReplica,
  runStep,
  snapshotDir,
  sqliteReplica,
  startStep,
  tempFiles,
  type Replica,
  type Step,
  type StepRun,
} from '../helpers/invariants.js';

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

const jobs: SqliteJob[] = [];
afterEach(() => {
  for (const j of jobs.splice(0)) j.cleanup();
});
const pgs = await pgServer();
afterAll(() => pgs.cleanup());

/** Runs a step with the largest file it may write limited to `kb` KiB. */
function runWithFileLimit(step: Step, config: string, kb: number): StepRun {
  const bin = join(ROOT, 'bin', `deltasync-${step}`);
  const r = spawnSync(
    'bash',
    ['-c', `ulimit -f ${kb}; exec "$0" "$1" -c "$2"`, process.execPath, bin, config],
    { encoding: 'utf8', timeout: 120_000 },
  );
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A SQLite job with ten rows loaded (and counters installed on the replica), then 200 changes
 * waiting: parts of 50 rows, the first three small, the last one (rows of 4 KiB of random hex)
 * about 200 KiB gzipped, larger than the 64 KiB limit the tests set.
 */
async function bigDeltaJob(): Promise<{ job: SqliteJob; source: SourceChanges; replica: Replica }> {
  const job = sqliteJob({ delta: { maxRowsPerPart: 50, compression: 'gzip' } });
  jobs.push(job);
  const source = new SourceChanges(job.source);
  source.apply(range(1, 10), []);
  completeCycle(job.config, 'baseline');
  const replica = sqliteReplica(job.target);
  await replica.installCounters();
  const big = new Map(range(161, 210).map((id) => [id, randomBytes(2048).toString('hex')]));
  source.apply(range(11, 210), [], (id) => big.get(id) ?? `row ${id}`);
  return { job, source, replica };
}

const LIMIT_KB = 64;

function expectOneLine(r: StepRun, code: number, text: RegExp): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(text);
}

/** Delta files (not temporary) of logIds after the baseline's 10. */
const newDeltaFiles = (dir: string) =>
  existsSync(dir)
    ? readdirSync(dir).filter(
        (f) => /^logId/.test(f) && !f.startsWith('logId00000000000000000010.'),
      )
    : [];

describe('disk full', () => {
  it('during extract: exit 69, no partial delta, state unchanged; the next run completes', async () => {
    const { job, source, replica } = await bigDeltaJob();
    const state = snapshotDir(job.stateDir);
    const r = runWithFileLimit('extract', job.config, LIMIT_KB);
    expectOneLine(
      r,
      69,
      /cannot write delta 210 into .*outbox.*\(free some space \(or raise the limit\) and run again; nothing was published\)$/,
    );
    expect(newDeltaFiles(job.outbox), 'parts or manifest of the failed delta').toEqual([]);
    expect(tempFiles(job.outbox), 'temporary files').toEqual([]);
    expect(snapshotDir(job.stateDir)).toEqual(state);

    completeCycle(job.config, 'without the limit');
    await expectConverged(
      { job: 't', destination: 'main', ...job },
      source,
      replica,
      '10',
      'extract',
    );
  });

  it('during copy: exit 69, nothing of the delta at the destination, state unchanged; the next run completes', async () => {
    const { job, source, replica } = await bigDeltaJob();
    const extracted = runStep('extract', job.config);
    expect(extracted.code, extracted.stderr).toBe(0);
    expect(manifestsIn(job.outbox).at(-1)!.parts).toHaveLength(4);
    const state = snapshotDir(job.stateDir);
    const inbox = snapshotDir(job.inbox);
    const r = runWithFileLimit('copy', job.config, LIMIT_KB);
    expectOneLine(
      r,
      69,
      /destination main: cannot copy logId00000000000000000210\.MANIFEST\.json to .*inbox.*\(free some space \(or raise the limit\) and run again; nothing was published\)$/,
    );
    expect(newDeltaFiles(job.inbox), 'parts or manifest of the failed delta').toEqual([]);
    expect(snapshotDir(job.inbox), 'the destination as it was').toEqual(inbox);
    expect(snapshotDir(job.stateDir)).toEqual(state);

    completeCycle(job.config, 'without the limit');
    await expectConverged({ job: 't', destination: 'main', ...job }, source, replica, '10', 'copy');
  });
});

describe.skipIf(!pgs.available)('the target database goes away in the middle of a load', () => {
  it('exit 69 with one line; the transaction is rolled back, state unchanged; the next run completes', async () => {
    const url = await pgs.fresh('hostileenv');
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(
      'CREATE TABLE items (id bigint PRIMARY KEY, name text, qty bigint, log_id bigint NOT NULL)',
    );
    const job = sqliteJob({ target: { client: 'pg', connection: url } });
    jobs.push(job);
    const source = new SourceChanges(job.source);
    source.apply(range(1, 10), []);
    completeCycle(job.config, 'baseline');
    const replica = await pgReplica(url);
    try {
      await replica.installCounters();
      source.apply(range(11, 40), [2, 4]);
      for (const step of ['extract', 'copy'] as const)
        expect(runStep(step, job.config).code).toBe(0);
      const before = {
        state: snapshotDir(job.stateDir),
        rows: await replica.rows(),
        applied: await replica.applied('t'),
        changes: await replica.changes(),
      };

      let terminated = 0;
      let caught: { state: string; wrote: boolean } | undefined;
      const r = await startStep(
        'load',
        job.config,
        { DELTASYNC_PAUSE: 'load:mid-apply:4000' },
        () => {
          // Once the load has sat in its open transaction for a second (paused at mid-apply,
          // not between two statements), every other session of the target database (the
          // loader's) is terminated, as when the server restarts.
          const poll = setInterval(() => {
            void admin
              .query(
                `SELECT pg_terminate_backend(pid) AS t, state, backend_xid IS NOT NULL AS wrote
                   FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND application_name = 'deltasync' AND state = 'idle in transaction'
                    AND now() - state_change > interval '1 second'`,
              )
              .then(({ rows }) => {
                if (rows.length > 0 && terminated === 0) {
                  terminated = rows.length;
                  caught = { state: rows[0].state, wrote: rows[0].wrote };
                  clearInterval(poll);
                }
              });
          }, 50);
          setTimeout(() => clearInterval(poll), 3800);
        },
      );
      expect(terminated, 'the loader was caught in its transaction').toBeGreaterThan(0);
      // What happened, not how long it took: the loader was stopped inside its transaction, after
      // it had written to the replica (it had an xid) and before it committed.
      expect(caught, 'the loader was mid-apply').toEqual({
        state: 'idle in transaction',
        wrote: true,
      });
      expectOneLine(r, 69, /PostgreSQL .* is unavailable: .*\(check that the server is running/);
      expect(snapshotDir(job.stateDir)).toEqual(before.state);
      // The replica's observer lost its session too: look again with a new one.
      const after = await pgReplica(url);
      try {
        expect({
          state: snapshotDir(job.stateDir),
          rows: await after.rows(),
          applied: await after.applied('t'),
          changes: await after.changes(),
        }).toEqual(before);
        const next = runStep('load', job.config);
        expect(next.code, next.stderr).toBe(0);
        await expectConverged(
          { job: 't', destination: 'main', ...job },
          source,
          after,
          '10',
          'target gone',
        );
      } finally {
        await after.close();
      }
    } finally {
      await replica.close().catch(() => {});
      await admin.end();
    }
  });
});

describe('an unwritable state directory', () => {
  it.each(['extract', 'copy', 'load'] as const)(
    '%s: exit 78 with one line, before any work',
    (step) => {
      const job = sqliteJob();
      jobs.push(job);
      new SourceChanges(job.source).apply(range(1, 5), []);
      for (const before of (['extract', 'copy'] as const).slice(
        0,
        ['extract', 'copy', 'load'].indexOf(step),
      ))
        expect(runStep(before, job.config).code).toBe(0);
      // A path under a regular file: mkdir fails with ENOTDIR, whoever runs the test (root too).
      const file = join(job.dir, 'not-a-dir');
      writeFileSync(file, '');
      const outbox = snapshotDir(job.outbox);
      const inbox = snapshotDir(job.inbox);
      const target = readFileSync(job.target);
      const r = runStep(step, job.config, { DELTASYNC_STATE_DIR: join(file, 'state') });
      expectOneLine(
        r,
        78,
        /state directory .*not-a-dir\/state is not writable: ENOTDIR.*\(create it for this user or set stateDir in the config\)$/,
      );
      expect(existsSync(job.outbox)).toBe(step !== 'extract');
      expect(snapshotDir(job.outbox)).toEqual(outbox);
      expect(snapshotDir(job.inbox)).toEqual(inbox);
      expect(readFileSync(job.target).equals(target), 'target database file untouched').toBe(true);
    },
  );
});
