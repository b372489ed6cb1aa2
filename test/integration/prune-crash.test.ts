/**
 * prune killed with SIGKILL: at each prune fault point (src/faults.ts) and at random moments,
 * on a directory outbox and inbox and on SFTP and S3 destinations. Each time, nothing a reader
 * needs is gone (test/helpers/invariants.ts: every manifest there has all its parts, and every
 * reader still finds its unbroken chain to the newest delta); the next prune removes the parts
 * the killed one left and ends where an uninterrupted prune would.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ackFileName, makeAck, serializeAck } from '../../src/format/ack.js';
import { openStore, type DeltaStore } from '../../src/store/index.js';
import { ROOT, sqliteJob, type SqliteJob } from '../helpers/cli.js';
import {
  expectNothingNeededRemoved,
  runStep,
  stateLogId,
  type Step,
} from '../helpers/invariants.js';
import { storeKinds } from '../helpers/stores.js';

const kinds = storeKinds();
let job: SqliteJob | undefined;
const dirs: string[] = [];
afterEach(() => job?.cleanup());
afterAll(() => {
  kinds.forEach((k) => k.cleanup());
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

const RETENTION = { keepDeltas: 2, keepHours: 0 };

interface PruneRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runPrune(config: string, env: Record<string, string> = {}): PruneRun {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'deltasync'), 'prune', '-c', config], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs prune and kills it `delay` ms after it took its lock (polled every 2 ms); without a delay
 * it runs to its end. `workMs`: how long after taking the lock it ended.
 */
function pruneKilledAfter(
  config: string,
  lock: string,
  delay?: number,
): Promise<PruneRun & { workMs: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'deltasync'), 'prune', '-c', config], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    let timer: NodeJS.Timeout | undefined;
    let lockedAt: number | null = null;
    const poll = setInterval(() => {
      if (!existsSync(lock)) return;
      clearInterval(poll);
      lockedAt = performance.now();
      if (delay !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), delay);
    }, 2);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearInterval(poll);
      clearTimeout(timer);
      const workMs = lockedAt === null ? null : performance.now() - lockedAt;
      resolve({ code, signal, stdout, stderr, workMs });
    });
  });
}

/** mulberry32, as in crash.test.ts: the same sequence for the same seed everywhere. */
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

/** A second config for the same job, with a retention section and `changes` applied. */
function pruneConfig(j: SqliteJob, changes: Record<string, unknown>): string {
  const base = readFileSync(j.config, 'utf8')
    .replace(/^export default /, '')
    .replace(/;\s*$/, '');
  const config = { ...(JSON.parse(base) as Record<string, unknown>), ...changes };
  const file = join(j.dir, `prune-${Object.keys(changes).join('-') || 'job'}.js`);
  writeFileSync(file, `export default ${JSON.stringify(config, null, 2)};\n`);
  return file;
}

let nextId = 1;
/** One delta: four new rows (two parts of at most three rows), extracted and copied. */
function oneDelta(j: SqliteJob, load: boolean): void {
  for (let i = 0; i < 4; i++, nextId++)
    j.sourceExec('INSERT INTO items VALUES (?, ?, ?, ?)', nextId, `row ${nextId}`, 1, nextId);
  const steps: Step[] = load ? ['extract', 'copy', 'load'] : ['extract', 'copy'];
  for (const step of steps) {
    const r = runStep(step, j.config);
    expect(r.code, `${step}: ${r.stderr}`).toBe(0);
  }
}

const newestOf = (j: SqliteJob) => stateLogId(j.stateDir, 't', 'extract')!;

/** The invariant over the directory outbox and inbox, with the readers the state files name. */
async function expectLocalReadersServed(j: SqliteJob, why: string): Promise<string[][]> {
  const newest = newestOf(j);
  const copied = { name: 'copy main', logId: stateLogId(j.stateDir, 't', 'copy.main') ?? '0' };
  const loaded = { name: 'load', logId: stateLogId(j.stateDir, 't', 'load') ?? '0' };
  const outbox = await openStore(j.outbox);
  const inbox = await openStore(j.inbox);
  try {
    return [
      await expectNothingNeededRemoved(outbox, [copied], newest, `${why} (outbox)`),
      await expectNothingNeededRemoved(inbox, [loaded], newest, `${why} (inbox)`),
    ];
  } finally {
    await Promise.all([outbox.close(), inbox.close()]);
  }
}

const manifestLogIds = (files: string[]) => files.map((f) => String(Number(f.slice(5, 25))));

describe('prune SIGKILLed at each fault point (directory outbox and inbox)', () => {
  it.each(['prune:after-manifest', 'prune:mid-parts'])(
    'at %s: nothing a reader needs is gone; the next prune finishes and sweeps',
    async (point) => {
      nextId = 1;
      job = sqliteJob();
      for (let d = 1; d <= 6; d++) oneDelta(job, d <= 3);
      // Six deltas (logIds 4, 8, … 24); load applied three of them, copy all six.
      const config = pruneConfig(job, { retention: RETENTION });
      const killed = runPrune(config, { DELTASYNC_FAULT: point });
      expect(killed.signal, killed.stderr).toBe('SIGKILL');
      const [outbox] = await expectLocalReadersServed(job, point);
      // Killed inside the first delta it removed: the oldest manifest is gone from the outbox.
      expect(manifestLogIds(outbox!)).toEqual(['8', '12', '16', '20', '24']);
      const left = await (await openStore(job.outbox)).leftovers();
      expect(left.map((l) => l.kind)).toEqual(
        point === 'prune:after-manifest' ? ['orphan-part', 'orphan-part'] : ['orphan-part'],
      );

      // What the kill left is swept by the next extract (at after-manifest) or prune (mid-parts).
      const next = point === 'prune:after-manifest' ? runStep('extract', job.config) : undefined;
      const finished = runPrune(config);
      expect(finished.code, finished.stderr).toBe(0);
      expect((next ?? finished).stdout).toContain('removing a part left by an interrupted prune');
      const [outboxAfter, inboxAfter] = await expectLocalReadersServed(job, `${point}, then`);
      // Load acknowledged logId 12 in the inbox: the outbox keeps what no replica has applied.
      expect(manifestLogIds(outboxAfter!)).toEqual(['16', '20', '24']);
      expect(manifestLogIds(inboxAfter!)).toEqual(['16', '20', '24']);
      for (const dir of [job.outbox, job.inbox]) {
        const store = await openStore(dir);
        expect(await store.leftovers(), dir).toEqual([]);
        await store.close();
      }
    },
  );
});

const SEED = Number(process.env.DELTASYNC_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));
const ITERATIONS = Number(process.env.DELTASYNC_CRASH_ITERATIONS ?? 12);

describe('prune SIGKILLed at random moments (directory outbox and inbox)', () => {
  it('never removes what a reader needs, and converges', async () => {
    console.log(`prune-crash: seed ${SEED} (replay: DELTASYNC_CRASH_SEED=${SEED})`);
    const random = prng(SEED);
    nextId = 1;
    job = sqliteJob();
    const config = pruneConfig(job, { retention: RETENTION });
    const lock = join(job.stateDir, 't.prune.lock');
    for (let d = 0; d < 6; d++) oneDelta(job, true);
    // Calibration: how long prune holds its lock with a backlog like an iteration's.
    for (let d = 0; d < 4; d++) oneDelta(job, true);
    const calibration = await pruneKilledAfter(config, lock);
    expect(calibration.code, calibration.stderr).toBe(0);
    const window = Math.max(20, Math.round((calibration.workMs ?? 0) * 0.9));
    const landed = { killed: 0, finished: 0 };
    for (let i = 0; i < ITERATIONS; i++) {
      const deltas = 1 + Math.floor(random() * 4);
      // The replica loads most of the time, sometimes not: its position is what prune must keep.
      for (let d = 0; d < deltas; d++) oneDelta(job, random() < 0.7);
      const delay = Math.floor(random() * window);
      const r = await pruneKilledAfter(config, lock, delay);
      landed[r.signal === 'SIGKILL' ? 'killed' : 'finished'] += 1;
      await expectLocalReadersServed(job, `seed ${SEED}, iteration ${i}, killed at ${delay} ms`);
    }
    console.log(`prune-crash: ${JSON.stringify(landed)} of ${ITERATIONS}, window ${window} ms`);
    const r = runPrune(config);
    expect(r.code, r.stderr).toBe(0);
    const loaded = runStep('load', job.config);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(runPrune(config).code).toBe(0);
    const [outbox, inbox] = await expectLocalReadersServed(job, 'at the end');
    expect(outbox).toHaveLength(RETENTION.keepDeltas);
    expect(inbox).toHaveLength(RETENTION.keepDeltas);
    for (const dir of [job.outbox, job.inbox]) {
      const store = await openStore(dir);
      expect(await store.leftovers(), dir).toEqual([]);
      await store.close();
    }
  }, 600_000);
});

for (const kind of kinds.filter((k) => k.kind !== 'dir')) {
  describe.skipIf(!kind.available)(
    `prune SIGKILLed while pruning an ${kind.kind} destination`,
    () => {
      it.each(['prune:after-manifest', 'prune:mid-parts'])(
        'at %s: nothing the replica needs is gone; the next prune finishes and sweeps',
        async (point) => {
          nextId = 1;
          const spec = await kind.fresh(point.replace(/[^a-z]/g, ''));
          job = sqliteJob({
            destinations: [{ name: 'far', ...spec }],
          });
          for (let d = 1; d <= 6; d++) oneDelta(job, false);
          const far: DeltaStore = await openStore(spec as never);
          try {
            // The replica reading there has applied three deltas and says so.
            await far.replace(ackFileName('t', 'r'), serializeAck(makeAck('t', 'r', '12')));
            // Only the destination: its outbox is an empty directory, so the kill lands there.
            const empty = mkdtempSync(join(tmpdir(), 'deltasync-empty-outbox-'));
            dirs.push(empty);
            const config = pruneConfig(job, {
              retention: RETENTION,
              outbox: empty,
              inbox: undefined,
              target: undefined,
            });
            const newest = newestOf(job);
            const readers = [{ name: 'r', logId: '12' }];
            const killed = runPrune(config, { DELTASYNC_FAULT: point });
            expect(killed.signal, killed.stderr).toBe('SIGKILL');
            const kept = await expectNothingNeededRemoved(far, readers, newest, point);
            expect(manifestLogIds(kept)).toEqual(['8', '12', '16', '20', '24']);
            expect((await far.leftovers()).length).toBeGreaterThan(0);

            const finished = runPrune(config);
            expect(finished.code, finished.stderr).toBe(0);
            const after = await expectNothingNeededRemoved(far, readers, newest, `${point}, then`);
            expect(manifestLogIds(after)).toEqual(['16', '20', '24']);
            expect(await far.leftovers()).toEqual([]);
          } finally {
            await far.close();
          }
        },
        120_000,
      );
    },
  );
}
