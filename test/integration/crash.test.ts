/**
 * Crash safety: a step killed with SIGKILL anywhere leaves nothing that the next runs cannot
 * finish, with nothing lost and nothing applied twice.
 *
 * - Every fault point (src/faults.ts): the step kills itself there; the point-specific state it
 *   leaves is checked, then extract → copy → load run to completion and the end state must be
 *   the one an uninterrupted pipeline reaches (see expectConverged). The load points run again
 *   against PostgreSQL when a server is reachable.
 * - Random moments: a step is killed from outside at a random moment of its work (a random delay
 *   after it took its lock, within how long its work took at calibration), many times over, with
 *   a seeded PRNG (DELTASYNC_CRASH_SEED replays the same changes, victims and delays;
 *   DELTASYNC_CRASH_ITERATIONS sets how many).
 *
 * "Applied exactly once" is counted on the replica by triggers: one row in applied_changes per
 * row written to `items`, one row in applied_history per logId recorded in deltasync_applied.
 * On PostgreSQL the upsert skips rows that would not change (IS DISTINCT FROM), so a delta applied
 * a second time fires no row trigger there: applied_history is what catches it.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FAULT_POINTS, type FaultPoint } from '../../src/faults.js';
import { isTemporaryName } from '../../src/format/atomic-file.js';
import { sqliteJob, summaryOf, type SqliteJob } from '../helpers/cli.js';
import { pgServer } from '../helpers/databases.js';
import {
  STEPS,
  SourceChanges,
  completeCycle,
  expectConverged,
  pgReplica,
  runStep,
  sqliteReplica,
  startStep,
  stateLogId,
  tempFiles,
  type PipelineDirs,
  type Replica,
  type Step,
  type StepRun,
} from '../helpers/invariants.js';

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

interface Scenario {
  job: SqliteJob;
  dirs: PipelineDirs;
  source: SourceChanges;
  replica: Replica;
  /** The logId loaded before the interrupted run. */
  baseline: string;
}

const open: Scenario[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) {
    await s.replica.close();
    s.job.cleanup();
  }
});

const pgs = await pgServer();
afterAll(() => pgs.cleanup());

/**
 * Six rows loaded (the baseline, logId 6); then 3 updates and 18 inserts (logIds 7..27) waiting
 * to be extracted. With maxRowsPerDelta 10 and maxRowsPerPart 3 they make three deltas,
 * 6→16 (parts of 3, 3, 3, 1 rows), 16→26 and 26→27.
 */
async function scenario(target: 'sqlite' | 'pg'): Promise<Scenario> {
  let pgUrl: string | undefined;
  if (target === 'pg') {
    pgUrl = await pgs.fresh('crash');
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    await c.query(
      'CREATE TABLE items (id bigint PRIMARY KEY, name text, qty bigint, log_id bigint NOT NULL)',
    );
    await c.end();
  }
  const job = sqliteJob({
    delta: { maxRowsPerPart: 3, compression: 'gzip', maxRowsPerDelta: 10 },
    ...(pgUrl ? { target: { client: 'pg', connection: pgUrl } } : {}),
  });
  const replica = pgUrl ? await pgReplica(pgUrl) : sqliteReplica(job.target);
  const s: Scenario = {
    job,
    dirs: { job: 't', destination: 'main', ...job },
    source: new SourceChanges(job.source),
    replica,
    baseline: '6',
  };
  open.push(s);
  s.source.apply(range(1, 6), []);
  completeCycle(job.config, 'baseline');
  await replica.installCounters();
  s.source.apply(range(7, 24), [1, 3, 5]);
  return s;
}

const D16 = 'logId00000000000000000016';
const partsOf16 = (n: number) => range(1, n).map((i) => `${D16}.items.000${i}.copy.gz`);

/** Delta files in a directory beyond the baseline delta, sorted. */
function newFiles(dir: string): string[] {
  return existsSync(dir)
    ? readdirSync(dir)
        // The baseline delta, and the replica's acknowledgement that load publishes beside it.
        .filter((f) => !f.startsWith('logId00000000000000000006.') && f !== 't.default.ack.json')
        .sort()
    : [];
}

/** The replica still holds exactly the baseline: nothing of the interrupted delta. */
async function expectReplicaAtBaseline(s: Scenario): Promise<void> {
  expect(await s.replica.applied('t')).toBe('6');
  expect(await s.replica.changes()).toEqual([]);
  expect(await s.replica.history()).toEqual([]);
  expect((await s.replica.rows()).map((r) => r[0])).toEqual(range(1, 6).map(String));
}

/**
 * What each fault point leaves behind, checked right after the kill (`left`) and on the runs that
 * finish the job (`finished`: the stdout of extract, copy and load). A new fault point without
 * an entry here is a type error.
 */
type PipelinePoint = Exclude<FaultPoint, `prune:${string}`>;
/** prune's points have their own test (test/integration/prune-crash.test.ts). */
const PIPELINE_POINTS = FAULT_POINTS.filter((p): p is PipelinePoint => !p.startsWith('prune:'));

const expectations: Record<
  PipelinePoint,
  {
    left(s: Scenario): Promise<void>;
    finished?(s: Scenario, out: Record<Step, string>): void;
  }
> = {
  'extract:after-part': {
    async left(s) {
      const files = newFiles(s.job.outbox);
      const published = files.filter((f) => !isTemporaryName(f));
      expect(published, 'one published part, no manifest').toEqual(partsOf16(1));
      // Part 2 fills while part 1 is published, so its temporary file may be there too.
      const temporary = files.filter(isTemporaryName);
      expect(temporary.every((f) => f.startsWith(`.${partsOf16(2)[1]}.tmp-`))).toBe(true);
      expect(stateLogId(s.job.stateDir, 't', 'extract')).toBe('6');
    },
    finished: (_s, out) =>
      expect(out.extract).toContain('removing a file left by an interrupted extract'),
  },
  'extract:before-manifest': {
    async left(s) {
      expect(newFiles(s.job.outbox), 'every part, no manifest').toEqual(partsOf16(4));
      expect(stateLogId(s.job.stateDir, 't', 'extract')).toBe('6');
    },
    finished: (_s, out) =>
      expect(out.extract).toContain('removing a file left by an interrupted extract'),
  },
  'extract:before-state': {
    async left(s) {
      expect(newFiles(s.job.outbox), 'a complete delta').toEqual([
        `${D16}.MANIFEST.json`,
        ...partsOf16(4),
      ]);
      expect(stateLogId(s.job.stateDir, 't', 'extract'), 'state behind the outbox').toBe('6');
    },
    finished: (_s, out) =>
      expect(out.extract).toContain('adopting a delta published by an interrupted run'),
  },
  'copy:after-part': {
    async left(s) {
      expect(newFiles(s.job.inbox), 'one part at the destination, no manifest').toEqual(
        partsOf16(1),
      );
      expect(stateLogId(s.job.stateDir, 't', 'copy.main')).toBe('6');
    },
  },
  'copy:before-manifest': {
    async left(s) {
      expect(newFiles(s.job.inbox), 'every part, no manifest').toEqual(partsOf16(4));
      expect(stateLogId(s.job.stateDir, 't', 'copy.main')).toBe('6');
    },
  },
  'copy:before-state': {
    async left(s) {
      expect(newFiles(s.job.inbox), 'a complete delta at the destination').toEqual([
        `${D16}.MANIFEST.json`,
        ...partsOf16(4),
      ]);
      expect(stateLogId(s.job.stateDir, 't', 'copy.main'), 'state behind the destination').toBe(
        '6',
      );
    },
    // The delta the state did not record is copied again (same bytes), then the two others.
    finished: (_s, out) => expect(summaryOf(out.copy)).toMatchObject({ deltas: 3, rows: 21 }),
  },
  'load:mid-apply': {
    left: expectReplicaAtBaseline,
    finished: (_s, out) => expect(summaryOf(out.load)).toMatchObject({ deltas: 3, rows: 21 }),
  },
  'load:before-commit': {
    left: expectReplicaAtBaseline,
    finished: (_s, out) => expect(summaryOf(out.load)).toMatchObject({ deltas: 3, rows: 21 }),
  },
  'load:before-state': {
    async left(s) {
      // Committed in the target, not in the state file.
      expect(await s.replica.applied('t')).toBe('16');
      expect(stateLogId(s.job.stateDir, 't', 'load'), 'state file behind the target').toBe('6');
      expect(await s.replica.history()).toEqual(['16']);
      expect((await s.replica.changes()).length).toBe(10);
    },
    finished: (_s, out) => {
      expect(out.load).toContain('state file differs from the target; the target wins');
      expect(summaryOf(out.load)).toMatchObject({ deltas: 2, rows: 11 });
    },
  },
};

async function crashAt(point: PipelinePoint, target: 'sqlite' | 'pg'): Promise<void> {
  const s = await scenario(target);
  const step = point.split(':')[0] as Step;
  for (const before of STEPS.slice(0, STEPS.indexOf(step))) {
    const r = runStep(before, s.job.config);
    expect(r.code, r.stderr).toBe(0);
  }
  const killed = runStep(step, s.job.config, { DELTASYNC_FAULT: point });
  expect(killed.signal, `${point}: ${killed.stderr}`).toBe('SIGKILL');
  await expectations[point].left(s);

  const [extract, copy, load] = completeCycle(s.job.config, `after ${point}`);
  await expectConverged(s.dirs, s.source, s.replica, s.baseline, point);
  expectations[point].finished?.(s, {
    extract: extract!.stdout,
    copy: copy!.stdout,
    load: load!.stdout,
  });
}

describe('SIGKILL at each fault point, then the next runs finish the job (SQLite)', () => {
  it.each(PIPELINE_POINTS)('%s', (point) => crashAt(point, 'sqlite'));
});

describe.skipIf(!pgs.available)('SIGKILL at each load fault point, PostgreSQL target', () => {
  it.each(PIPELINE_POINTS.filter((p) => p.startsWith('load:')))('%s', (point) =>
    crashAt(point, 'pg'),
  );
});

describe('a crash between the target commit and the state-file write (load:before-state)', () => {
  it('leaves the state file behind the target; the next load neither re-applies nor skips', async () => {
    const s = await scenario('sqlite');
    for (const step of ['extract', 'copy'] as const)
      expect(runStep(step, s.job.config).code).toBe(0);
    const killed = runStep('load', s.job.config, { DELTASYNC_FAULT: 'load:before-state' });
    expect(killed.signal).toBe('SIGKILL');
    // Delta 6→16 is committed with its logId in the target; the state file still says 6.
    expect(stateLogId(s.job.stateDir, 't', 'load')).toBe('6');
    expect(await s.replica.applied('t')).toBe('16');
    expect((await s.replica.changes()).length).toBe(10);

    const next = runStep('load', s.job.config);
    expect(next.code, next.stderr).toBe(0);
    // Only 16→26 and 26→27: delta 16 is not applied again, and nothing is skipped.
    expect(await s.replica.history()).toEqual(['16', '26', '27']);
    expect((await s.replica.changes()).length).toBe(21);
    expect(summaryOf(next.stdout)).toMatchObject({ deltas: 2, rows: 11 });
    expect(next.stdout).toContain('the target wins');
    expect(stateLogId(s.job.stateDir, 't', 'load')).toBe('27');
    await expectConverged(s.dirs, s.source, s.replica, s.baseline, 'load:before-state');
  });
});

/** mulberry32: small, fast, and the same sequence for the same seed on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const lockOf = (job: SqliteJob, step: Step) => join(job.stateDir, `t.${step}.lock`);

/**
 * Runs a step and kills it with SIGKILL `delay` ms after it took its lock (polled every 2 ms):
 * from the moment its work begins, whatever its start-up took. Without a delay it runs to its
 * end. Says how it ended and how long after taking the lock.
 */
async function runAndKill(
  step: Step,
  config: string,
  lock: string,
  delay?: number,
): Promise<StepRun & { workMs: number | null }> {
  let lockedAt: number | null = null;
  let poll: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  const r = await startStep(step, config, {}, (child) => {
    poll = setInterval(() => {
      if (!existsSync(lock)) return;
      lockedAt = performance.now();
      clearInterval(poll);
      if (delay !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), delay);
    }, 2);
  });
  clearInterval(poll);
  clearTimeout(timer);
  return { ...r, workMs: lockedAt === null ? null : performance.now() - lockedAt };
}

const SEED = Number(process.env.DELTASYNC_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));
const ITERATIONS = Number(process.env.DELTASYNC_CRASH_ITERATIONS ?? 30);

describe('SIGKILL at random moments', () => {
  it(`${ITERATIONS} kills of random steps at random moments of their work; every time the next runs converge`, async () => {
    console.log(
      `crash.test: random kills with seed ${SEED} (replay: DELTASYNC_CRASH_SEED=${SEED}; the changes, the victims and where in its window each kill falls repeat, the machine's timing does not)`,
    );
    const random = prng(SEED);
    const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
    const job = sqliteJob({
      delta: { maxRowsPerPart: 100, compression: 'gzip', maxRowsPerDelta: 1000 },
    });
    const s: Scenario = {
      job,
      dirs: { job: 't', destination: 'main', ...job },
      source: new SourceChanges(job.source),
      replica: sqliteReplica(job.target),
      baseline: '0',
    };
    open.push(s);
    s.source.apply(range(1, 500), []);
    completeCycle(job.config, 'baseline');
    await s.replica.installCounters();
    s.baseline = String(s.source.lastLogId);
    let nextId = 501;
    const changeSomeRows = () => {
      const existing = nextId - 1;
      const inserts = range(nextId, nextId + int(500, 1500) - 1);
      nextId += inserts.length;
      const updates = new Set<number>();
      const wanted = Math.min(int(200, 800), existing);
      while (updates.size < wanted) updates.add(int(1, existing));
      s.source.apply(inserts, [...updates], (id) => `row ${id} ${'x'.repeat(int(0, 60))}`);
    };

    // Calibration: how long each step holds its lock (does its work) on an iteration's worth of
    // changes, so that the kills spread over the work on a fast or a slow machine alike.
    changeSomeRows();
    const window: Record<Step, number> = { extract: 0, copy: 0, load: 0 };
    for (const step of STEPS) {
      const r = await runAndKill(step, job.config, lockOf(job, step));
      expect(r.code, r.stderr).toBe(0);
      window[step] = Math.max(50, Math.round((r.workMs ?? 0) * 0.9));
    }
    await expectConverged(s.dirs, s.source, s.replica, s.baseline, 'calibration');
    const calibrated = { ...window };

    const landed = { atWork: 0, exiting: 0, finished: 0 };
    const started = performance.now();
    for (let i = 0; i < ITERATIONS; i++) {
      changeSomeRows();
      const victim = STEPS[int(0, 2)]!;
      const delay = int(0, window[victim]);
      const why = `seed ${SEED}, iteration ${i}: ${victim} killed ${delay} ms into its work`;
      for (const before of STEPS.slice(0, STEPS.indexOf(victim))) {
        const r = runStep(before, job.config);
        expect(r.code, `${why}: ${before}: ${r.stderr}`).toBe(0);
      }
      const r = await runAndKill(victim, job.config, lockOf(job, victim), delay);
      if (r.signal === 'SIGKILL') {
        // A lock file left behind means the kill found the step at work, holding its lock.
        if (existsSync(lockOf(job, victim))) landed.atWork++;
        else landed.exiting++;
      } else {
        expect(r.code, `${why}: ${r.stderr}`).toBe(0);
        landed.finished++;
        // Too late: the machine is faster now than at calibration.
        window[victim] = Math.max(50, Math.round(window[victim] * 0.8));
      }
      for (const step of STEPS.slice(STEPS.indexOf(victim))) {
        const done = runStep(step, job.config);
        expect(done.stderr, `${why}: then ${step}`).toBe('');
        expect(done.code, `${why}: then ${step}`).toBe(0);
      }
      await expectConverged(s.dirs, s.source, s.replica, s.baseline, why);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `crash.test: seed ${SEED}, ${ITERATIONS} kills in ${seconds} s (kill windows in ms after the lock: ${JSON.stringify(calibrated)}, at the end ${JSON.stringify(window)}): ${landed.atWork} at work (lock held), ${landed.exiting} after it released its lock, ${landed.finished} after it had exited; ${s.source.changes.length} row changes, ${readdirSync(job.inbox).filter((f) => f.endsWith('.MANIFEST.json')).length} deltas; state-dir temp files left: ${tempFiles(job.stateDir).length}`,
    );
    // The test proves something only if a good share of the kills hit a step at work.
    expect(landed.atWork, 'kills that found the step at work').toBeGreaterThanOrEqual(
      Math.ceil(ITERATIONS / 3),
    );
    // Each kill is followed by full runs of every step: about 4 s each on a loaded 2-core machine.
  }, 300_000);
});
