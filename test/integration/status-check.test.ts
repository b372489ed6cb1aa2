/**
 * Issue 12, points 1–4, end to end with the real bins against PostgreSQL and MariaDB replicas:
 * run records, `status` (`--json`, `--check`), heartbeats and the metrics files, in the states a
 * sysadmin meets: healthy, idle with and without heartbeat, load stopped, a gap, a failed run, a
 * replica status cannot reach. Lags are only ever checked from below (a sleep makes them at least
 * so long), never against the clock's upper side, so a loaded machine cannot fail them.
 */
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, describe, expect, it } from 'vitest';
import { runBin } from '../helpers/cli.js';
import { openDb, servers, writeJob, type Db, type Engine } from '../helpers/engines.js';

const dbs = await servers();
afterAll(() => dbs.cleanup());

const TABLES = `tables: [{ name: 'items', key: ['id'], logIdColumn: 'log_id' }]`;

interface Pipeline {
  config: string;
  dir: string;
  source: Db;
  replica: Db;
  /** Runs a step of the job; returns its exit code. */
  step(name: 'extract' | 'copy' | 'load'): number;
  cycle(): void;
  insert(id: number): Promise<void>;
  /** `status --check` with these extra arguments. */
  check(...args: string[]): { code: number | null; line: string };
  json(config?: string): Status;
  /** Adds JavaScript keys to the config. */
  amend(keys: string): void;
  metrics(step: string): Map<string, { value: string; labels?: Record<string, string> }[]>;
  cleanup(): Promise<void>;
}

interface StepJson {
  step: string;
  logId: string;
  logIdFrom?: string;
  waiting?: number;
  lagSeconds?: number;
  lagFrom?: string;
  lastSuccess: string | null;
  lastRun: { exitCode: number; rows: number; deltas: number; message: string } | null;
  error?: string;
  gaps?: string[];
  note?: string;
}
interface Status {
  steps: StepJson[];
  problems?: string[];
}

async function pipeline(engine: Engine, label: string): Promise<Pipeline> {
  const source = await openDb(dbs, 'sqlite', `${label}src`);
  const replica = await openDb(dbs, engine, label);
  await source.exec(
    'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, log_id INTEGER NOT NULL)',
  );
  await replica.exec(
    `CREATE TABLE items (id bigint PRIMARY KEY, name ${engine === 'mysql' ? 'varchar(50)' : 'text'}, log_id bigint NOT NULL)`,
  );
  // textfileDir is relative to the config file: the job's own directory.
  const job = writeJob(source, replica, `${TABLES}, metrics: { textfileDir: '.' }`);
  let logId = 0;
  const p: Pipeline = {
    config: job.config,
    dir: job.dir,
    source,
    replica,
    step: (name) => {
      const r = runBin('deltasync', [name, '-c', job.config]);
      return r.code ?? -1;
    },
    cycle() {
      for (const s of ['extract', 'copy', 'load'] as const) expect(p.step(s), s).toBe(0);
    },
    insert: (id) => source.exec(`INSERT INTO items VALUES (${id}, 'n${id}', ${++logId})`),
    check(...args) {
      const r = runBin('deltasync', ['status', '-c', job.config, '--check', ...args]);
      expect(r.stdout.split('\n')).toHaveLength(2); // one line and its newline
      return { code: r.code, line: r.stdout.trimEnd() };
    },
    json(config = job.config) {
      const r = runBin('deltasync', ['status', '-c', config, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Status;
    },
    amend(keys) {
      const text = readFileSync(job.config, 'utf8');
      writeFileSync(job.config, text.replace(/ };\n$/, `, ${keys} };\n`));
    },
    metrics(step) {
      const text = readFileSync(join(job.dir, `deltasync_e2e_${step}.prom`), 'utf8');
      return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f.metrics]));
    },
    async cleanup() {
      await source.close();
      await replica.close();
      job.cleanup();
    },
  };
  return p;
}

const load = (s: Status) => s.steps.find((st) => st.step === 'load')!;

describe.each(['pg', 'mysql'] as const)('status and --check with a %s replica', (engine) => {
  const skip = !dbs.available(engine);

  it.skipIf(skip)(
    'healthy: OK, the replica is asked, run records and metrics files are left',
    async () => {
      const p = await pipeline(engine, `sthealthy${engine}`);
      try {
        await p.insert(1);
        await p.insert(2);
        p.cycle();
        const ok = p.check();
        expect(ok.code, ok.line).toBe(0);
        expect(ok.line).toMatch(
          /^DELTASYNC OK - job e2e: lag \d+s, 0 waiting \| lag=\d+s;900;1800;0 waiting=0;;;0$/,
        );
        const s = p.json();
        expect(s.steps.map((st) => st.step)).toEqual(['extract', 'copy.r', 'load']);
        expect(load(s)).toMatchObject({
          logId: '2',
          logIdFrom: 'replica',
          waiting: 0,
          lastRun: { exitCode: 0, rows: 2, deltas: 1 },
        });
        expect(load(s).lastSuccess).not.toBeNull();
        expect(load(s).lagSeconds).toBeGreaterThanOrEqual(0);

        // Every step left its record; extract and copy share the config and not a file.
        const record = JSON.parse(
          readFileSync(join(p.dir, 'state', 'e2e.load.last-run.json'), 'utf8'),
        );
        expect(record).toMatchObject({ job: 'e2e', step: 'load', exitCode: 0, rows: 2 });
        for (const [step, rows] of [
          ['extract', 2],
          ['copy', 2],
          ['load', 2],
        ] as const) {
          const m = p.metrics(step);
          expect(m.get('deltasync_last_exit_code')![0]).toEqual({
            value: '0',
            labels: { deltasync_job: 'e2e', step },
          });
          expect(Number(m.get('deltasync_last_run_rows')![0]!.value), step).toBe(rows);
          expect(
            Number(m.get('deltasync_last_success_timestamp_seconds')![0]!.value),
          ).toBeGreaterThan(0);
        }
        expect(p.metrics('load').get('deltasync_pending_deltas')).toEqual([
          { value: '0', labels: { deltasync_job: 'e2e', step: 'load', replica: 'default' } },
        ]);
        expect(p.metrics('load').get('deltasync_retained_deltas')![0]!.value).toBe('1');
        expect(p.metrics('copy').get('deltasync_pending_deltas')![0]!.labels).toEqual({
          deltasync_job: 'e2e',
          step: 'copy',
          destination: 'r',
        });
        expect(p.metrics('extract').get('deltasync_retained_deltas')![0]!.value).toBe('1');

        // A replica host whose state directory is empty: the replica says it is up to date.
        const replicaOnly = join(p.dir, 'replica-only.js');
        writeFileSync(
          replicaOnly,
          `export default ${JSON.stringify({
            name: 'e2e',
            stateDir: join(p.dir, 'empty-state'),
            target: p.replica.config,
            inbox: join(p.dir, 'inbox'),
          })};\n`,
        );
        expect(load(p.json(replicaOnly))).toMatchObject({
          logId: '2',
          logIdFrom: 'replica',
          waiting: 0,
        });
        const fresh = runBin('deltasync', ['status', '-c', replicaOnly, '--check']);
        expect(fresh.code, fresh.stdout).toBe(0);
      } finally {
        await p.cleanup();
      }
    },
  );

  it.skipIf(skip)(
    'idle: without a heartbeat the lag grows; with delta.heartbeatSeconds it does not',
    async () => {
      const p = await pipeline(engine, `stidle${engine}`);
      try {
        await p.insert(1);
        p.cycle();
        const first = load(p.json()).lagFrom!;
        await sleep(3000);
        p.cycle(); // nothing changed: no delta
        const idle = load(p.json());
        expect(idle.lagFrom).toBe(first);
        expect(idle.lagSeconds).toBeGreaterThanOrEqual(3);
        const late = p.check('--max-lag', '1s');
        expect(late.code, late.line).toBe(2);
        expect(late.line).toMatch(
          /^DELTASYNC CRITICAL - job e2e: .*load lag \d+s \(nothing waiting: the source may be idle; delta.heartbeatSeconds tells idle from stalled\)/,
        );

        p.amend('delta: { heartbeatSeconds: 1 }');
        const before = Date.now();
        expect(p.step('extract')).toBe(0);
        const beat = readdirSync(join(p.dir, 'outbox')).filter((f) => f.endsWith('.MANIFEST.json'));
        expect(beat).toHaveLength(2); // the heartbeat: an empty delta
        expect(p.step('copy')).toBe(0);
        expect(p.step('load')).toBe(0);
        const fresh = load(p.json());
        expect(fresh.logId).not.toBe(idle.logId);
        expect(Date.parse(fresh.lagFrom!)).toBeGreaterThanOrEqual(before - 1000);
        expect(fresh.note).toBeUndefined();
        expect(p.check('--max-lag', '1m').code).toBe(0);
      } finally {
        await p.cleanup();
      }
    },
  );

  it.skipIf(skip)('load stopped: deltas wait and the lag grows past max-lag', async () => {
    const p = await pipeline(engine, `ststop${engine}`);
    try {
      await p.insert(1);
      p.cycle();
      await p.insert(2);
      expect(p.step('extract')).toBe(0);
      expect(p.step('copy')).toBe(0);
      await sleep(2500);
      const s = load(p.json());
      expect(s).toMatchObject({ logId: '1', waiting: 1 });
      expect(s.lagSeconds).toBeGreaterThanOrEqual(2);
      const c = p.check('--max-lag', '1s');
      expect(c.code, c.line).toBe(2);
      expect(c.line).toMatch(/load lag \d+s > 2 × max-lag 1s/);
      expect(c.line).toMatch(/waiting=1;;;0$/);
      expect(p.step('load')).toBe(0);
      expect(load(p.json()).waiting).toBe(0);
    } finally {
      await p.cleanup();
    }
  });

  it.skipIf(skip)(
    'gap: CRITICAL before load runs; load fails 65 and its record says so',
    async () => {
      const p = await pipeline(engine, `stgap${engine}`);
      try {
        await p.insert(1);
        p.cycle();
        await p.insert(2);
        expect(p.step('extract')).toBe(0);
        await p.insert(3);
        expect(p.step('extract')).toBe(0);
        expect(p.step('copy')).toBe(0);
        const inbox = join(p.dir, 'inbox');
        for (const f of readdirSync(inbox).filter((n) =>
          n.startsWith('logId00000000000000000002.'),
        ))
          rmSync(join(inbox, f));
        const before = p.check();
        expect(before.code, before.line).toBe(2);
        expect(before.line).toContain('load: gap after logId 1 the next delta in the inbox');
        expect(load(p.json()).gaps).toHaveLength(1);

        expect(p.step('load')).toBe(65);
        const s = load(p.json());
        expect(s.lastRun).toMatchObject({ exitCode: 65 });
        expect(s.error).toMatch(/^gap: the delta after logId 1 is missing/);
        expect(s.lastSuccess).not.toBeNull();
        const after = p.check();
        expect(after.code).toBe(2);
        expect(after.line).toContain('load failed (exit 65): gap:');
        const m = p.metrics('load');
        expect(m.get('deltasync_last_exit_code')![0]!.value).toBe('65');
        expect(m.get('deltasync_gaps')![0]!.value).toBe('1');
        expect(
          Number(m.get('deltasync_last_success_timestamp_seconds')![0]!.value),
        ).toBeGreaterThan(0);
      } finally {
        await p.cleanup();
      }
    },
  );

  it.skipIf(skip)('last run failed: CRITICAL with its error until a run succeeds', async () => {
    const p = await pipeline(engine, `stfail${engine}`);
    try {
      await p.insert(1);
      p.cycle();
      const good = readFileSync(p.config, 'utf8');
      p.amend(`afterLoad: { command: 'exit 3' }`);
      await p.insert(2);
      expect(p.step('extract')).toBe(0);
      expect(p.step('copy')).toBe(0);
      expect(p.step('load')).toBe(70);
      const c = p.check();
      expect(c.code, c.line).toBe(2);
      expect(c.line).toMatch(
        /^DELTASYNC CRITICAL - job e2e: load failed \(exit 70\): after-load hook failed/,
      );
      const s = load(p.json());
      expect(s.error).toMatch(/after-load hook failed/);
      expect(s.logId).toBe('2'); // the delta stays committed

      writeFileSync(p.config, good);
      await p.insert(3);
      p.cycle();
      expect(p.check().code).toBe(0);
      expect(load(p.json()).error).toBeUndefined();

      // A config that does not even load (a password read from an unset variable) still leaves
      // a failed record, so that monitoring sees cron's runs fail.
      p.amend(
        `target: { client: '${engine}', connection: { host: '127.0.0.1', user: 'root', password: process.env.DELTASYNC_TEST_UNSET_PASSWORD } }`,
      );
      expect(p.step('load')).toBe(78);
      writeFileSync(p.config, good);
      const unset = p.check();
      expect(unset.code, unset.line).toBe(2);
      expect(unset.line).toMatch(
        /load failed \(exit 78\): .*target\.connection\.password: undefined/,
      );
    } finally {
      await p.cleanup();
    }
  });

  it.skipIf(skip)('UNKNOWN when the replica cannot be read, or there is no config', async () => {
    const p = await pipeline(engine, `stunknown${engine}`);
    try {
      const url =
        engine === 'pg' ? 'postgres://postgres@127.0.0.1:1/x' : 'mysql://root@127.0.0.1:1/x';
      p.amend(`target: { client: '${engine}', connection: '${url}' }`);
      const c = p.check();
      expect(c.code, c.line).toBe(3);
      expect(c.line).toMatch(
        /^DELTASYNC UNKNOWN - job e2e: cannot read replica \(deltasync_applied\)/,
      );
      const missing = runBin('deltasync', ['status', '-c', join(p.dir, 'nope.js'), '--check']);
      expect(missing.code).toBe(3);
      expect(missing.stdout).toMatch(/^DELTASYNC UNKNOWN - config file .*nope\.js does not exist/);
      const badLag = p.check('--max-lag', '5x');
      expect(badLag.code).toBe(3);
      expect(badLag.line).toBe(
        "DELTASYNC UNKNOWN - --max-lag: '5x' is not a duration such as 90s, 15m or 2h",
      );
      expect(existsSync(join(p.dir, 'state', 'e2e.status.last-run.json'))).toBe(false);
    } finally {
      await p.cleanup();
    }
  });
});
