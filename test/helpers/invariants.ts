/**
 * What the crash and hostile-input tests check after a run: the steps as child processes (with
 * the signal that ended them), a replica that counts every row change and every applied delta
 * with triggers, and the end state every interrupted pipeline must converge to.
 */
import { replicaOfAckFile } from '../../src/format/ack.js';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { expect } from 'vitest';
import { ROOT } from './cli.js';

export type Step = 'extract' | 'copy' | 'load';
export const STEPS: readonly Step[] = ['extract', 'copy', 'load'];

export interface StepRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function stepArgs(step: Step, config: string): string[] {
  return [join(ROOT, 'bin', `deltasync-${step}`), '-c', config];
}

/** Runs a step to its end (or its death) and says how it ended. */
export function runStep(step: Step, config: string, env: Record<string, string> = {}): StepRun {
  const r = spawnSync(process.execPath, stepArgs(step, config), {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Starts a step as a child process; `whileRunning` is called once it is under way (for a kill
 * after a delay, or to act on a paused step from outside). Resolves when the child has exited.
 */
export function startStep(
  step: Step,
  config: string,
  env: Record<string, string>,
  whileRunning: (child: ReturnType<typeof spawn>) => void,
): Promise<StepRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, stepArgs(step, config), {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    whileRunning(child);
  });
}

/** Runs extract, copy and load without faults; each must succeed quietly. */
export function completeCycle(config: string, why = ''): StepRun[] {
  return STEPS.map((step) => {
    const r = runStep(step, config);
    expect(r.stderr, `${why} ${step} stderr`).toBe('');
    expect(r.code, `${why} ${step} exit code`).toBe(0);
    return r;
  });
}

export interface DeltaFiles {
  file: string;
  fromLogId: string;
  toLogId: string;
  rows: number;
  parts: string[];
}

/** The manifests in a directory, in logId order, with what they list. */
export function manifestsIn(dir: string): DeltaFiles[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^logId\d+\.MANIFEST\.json$/.test(f))
    .sort()
    .map((file) => {
      const m = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
        fromLogId: string;
        toLogId: string;
        tables: { rows: number; parts: { file: string }[] }[];
      };
      return {
        file,
        fromLogId: m.fromLogId,
        toLogId: m.toLogId,
        rows: m.tables.reduce((n, t) => n + t.rows, 0),
        parts: m.tables.flatMap((t) => t.parts.map((p) => p.file)),
      };
    });
}

/** A step's logId from its state file, or null when it has none. */
export function stateLogId(stateDir: string, job: string, step: string): string | null {
  const path = join(stateDir, `${job}.${step}.state.json`);
  if (!existsSync(path)) return null;
  return (JSON.parse(readFileSync(path, 'utf8')) as { logId: string }).logId;
}

export function tempFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.includes('.tmp-')) : [];
}

/**
 * Every file of a directory (not recursive) with its bytes, to compare before and after. Run
 * records (`*.last-run.json`) are left out: every run rewrites them, failures included.
 */
export function snapshotDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.last-run.json')) out[f] = readFileSync(join(dir, f)).toString('base64');
  }
  return out;
}

/**
 * Writes row changes into a SQLite source table `items (id, name, qty, log_id)`, each with the
 * next logId, and remembers them: every (id, logId) pair is one row change the replica must
 * apply exactly once.
 */
export class SourceChanges {
  readonly changes: [number, number][] = [];

  constructor(
    private readonly file: string,
    public lastLogId = 0,
  ) {}

  /** Inserts new ids and updates existing ones, one logId each, in one transaction. */
  apply(insert: number[], update: number[], nameOf: (id: number) => string = (id) => `n${id}`) {
    const db = new Database(this.file);
    const ins = db.prepare('INSERT INTO items (id, name, qty, log_id) VALUES (?, ?, ?, ?)');
    const upd = db.prepare('UPDATE items SET name = ?, qty = qty + 1, log_id = ? WHERE id = ?');
    db.transaction(() => {
      for (const id of update) {
        const logId = ++this.lastLogId;
        expect(upd.run(`${nameOf(id)} v${logId}`, logId, id).changes).toBe(1);
        this.changes.push([id, logId]);
      }
      for (const id of insert) {
        const logId = ++this.lastLogId;
        ins.run(id, nameOf(id), id, logId);
        this.changes.push([id, logId]);
      }
    })();
    db.close();
  }

  rows(): string[][] {
    const db = new Database(this.file, { readonly: true });
    const rows = db
      .prepare('SELECT id, name, qty, log_id FROM items ORDER BY id')
      .raw(true)
      .all() as unknown[][];
    db.close();
    return rows.map(asText);
  }
}

function asText(row: unknown[]): string[] {
  return row.map((v) => (v === null ? (null as unknown as string) : String(v)));
}

/**
 * The replica as the tests see it. `installCounters` adds triggers that record every row written
 * to `items` (applied_changes) and every logId recorded in deltasync_applied (applied_history):
 * a delta applied twice shows up twice in the history, and its rows twice in the changes.
 */
export interface Replica {
  installCounters(): Promise<void>;
  rows(): Promise<string[][]>;
  /** deltasync_applied.log_id for the job, or null. */
  applied(job: string): Promise<string | null>;
  /** Row changes counted by the triggers, as [id, logId], sorted. */
  changes(): Promise<[number, number][]>;
  /** logIds recorded in deltasync_applied, in the order they were recorded. */
  history(): Promise<string[]>;
  close(): Promise<void>;
}

const byIdThenLogId = (a: [number, number], b: [number, number]) => a[0] - b[0] || a[1] - b[1];

export function sqliteReplica(file: string): Replica {
  const open = () => new Database(file);
  const query = <T>(sql: string, ...params: unknown[]): T[] => {
    const db = open();
    try {
      return db
        .prepare(sql)
        .raw(true)
        .all(...params) as T[];
    } finally {
      db.close();
    }
  };
  return {
    async installCounters() {
      const db = open();
      db.exec(`
        CREATE TABLE applied_changes (id INTEGER NOT NULL, log_id INTEGER NOT NULL);
        CREATE TRIGGER count_insert AFTER INSERT ON items
          BEGIN INSERT INTO applied_changes VALUES (NEW.id, NEW.log_id); END;
        CREATE TRIGGER count_update AFTER UPDATE ON items
          BEGIN INSERT INTO applied_changes VALUES (NEW.id, NEW.log_id); END;
        CREATE TABLE applied_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, log_id TEXT NOT NULL);
        CREATE TRIGGER history_insert AFTER INSERT ON deltasync_applied
          BEGIN INSERT INTO applied_history (log_id) VALUES (NEW.log_id); END;
        CREATE TRIGGER history_update AFTER UPDATE ON deltasync_applied
          BEGIN INSERT INTO applied_history (log_id) VALUES (NEW.log_id); END;
      `);
      db.close();
    },
    async rows() {
      return query<unknown[]>('SELECT id, name, qty, log_id FROM items ORDER BY id').map(asText);
    },
    async applied(job) {
      const hasTable = query<unknown[]>(
        "SELECT 1 FROM sqlite_master WHERE name = 'deltasync_applied'",
      );
      if (hasTable.length === 0) return null;
      const r = query<[string]>('SELECT log_id FROM deltasync_applied WHERE job = ?', job);
      return r[0]?.[0] ?? null;
    },
    async changes() {
      return query<[number, number]>('SELECT id, log_id FROM applied_changes').sort(byIdThenLogId);
    },
    async history() {
      return query<[string]>('SELECT log_id FROM applied_history ORDER BY seq').map((r) => r[0]);
    },
    async close() {},
  };
}

export async function pgReplica(url: string): Promise<Replica> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const rows = async (sql: string, params: unknown[] = []) =>
    (await client.query({ text: sql, values: params, rowMode: 'array' })).rows as unknown[][];
  return {
    async installCounters() {
      await client.query(`
        CREATE TABLE applied_changes (id bigint NOT NULL, log_id bigint NOT NULL);
        CREATE FUNCTION count_change() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN INSERT INTO applied_changes VALUES (NEW.id, NEW.log_id); RETURN NULL; END $$;
        CREATE TRIGGER count_change AFTER INSERT OR UPDATE ON items
          FOR EACH ROW EXECUTE FUNCTION count_change();
        CREATE TABLE applied_history (seq bigserial PRIMARY KEY, log_id text NOT NULL);
        CREATE FUNCTION record_history() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN INSERT INTO applied_history (log_id) VALUES (NEW.log_id); RETURN NULL; END $$;
        CREATE TRIGGER record_history AFTER INSERT OR UPDATE ON deltasync_applied
          FOR EACH ROW EXECUTE FUNCTION record_history();
        -- Load runs as a replication applier (session_replication_role = replica): only
        -- triggers enabled ALWAYS fire then, as the README says for the replica's own triggers.
        ALTER TABLE items ENABLE ALWAYS TRIGGER count_change;
        ALTER TABLE deltasync_applied ENABLE ALWAYS TRIGGER record_history;
      `);
    },
    async rows() {
      return (
        await rows('SELECT id::text, name, qty::text, log_id::text FROM items ORDER BY items.id')
      ).map(asText);
    },
    async applied(job) {
      const exists = await rows("SELECT to_regclass('deltasync_applied') IS NOT NULL");
      if (exists[0]![0] !== true) return null;
      const r = await rows('SELECT log_id FROM deltasync_applied WHERE job = $1', [job]);
      return (r[0]?.[0] as string | undefined) ?? null;
    },
    async changes() {
      return (await rows('SELECT id::int, log_id::int FROM applied_changes'))
        .map((r) => [r[0], r[1]] as [number, number])
        .sort(byIdThenLogId);
    },
    async history() {
      return (await rows('SELECT log_id FROM applied_history ORDER BY seq')).map(
        (r) => r[0] as string,
      );
    },
    close: () => client.end(),
  };
}

export interface PipelineDirs {
  job: string;
  destination: string;
  outbox: string;
  inbox: string;
  stateDir: string;
}

/**
 * The end state after every step has run to completion: the replica equals the source; every
 * step's state, the outbox, the inbox and the target agree on the last logId; the chain has no
 * hole and no overlap; every row change since `baseline` was applied exactly once and every delta
 * recorded exactly once; no temporary or orphan file is left in the outbox or the inbox.
 */
export async function expectConverged(
  dirs: PipelineDirs,
  source: SourceChanges,
  replica: Replica,
  baseline: string,
  why: string,
): Promise<void> {
  expect(await replica.rows(), `${why}: replica rows`).toEqual(source.rows());

  const outbox = manifestsIn(dirs.outbox);
  const inbox = manifestsIn(dirs.inbox);
  for (const [where, chain] of [
    ['outbox', outbox],
    ['inbox', inbox],
  ] as const) {
    let previous = '0';
    for (const d of chain) {
      expect(d.fromLogId, `${why}: ${where} chain at ${d.file}`).toBe(previous);
      previous = d.toLogId;
    }
  }
  expect(
    inbox.map((d) => d.file),
    `${why}: inbox and outbox deltas`,
  ).toEqual(outbox.map((d) => d.file));
  const last = outbox.at(-1)?.toLogId ?? null;
  expect(last, `${why}: the last delta is the source's last change`).toBe(String(source.lastLogId));
  expect(
    {
      extract: stateLogId(dirs.stateDir, dirs.job, 'extract'),
      copy: stateLogId(dirs.stateDir, dirs.job, `copy.${dirs.destination}`),
      load: stateLogId(dirs.stateDir, dirs.job, 'load'),
      target: await replica.applied(dirs.job),
    },
    `${why}: state files and the target`,
  ).toEqual({ extract: last, copy: last, load: last, target: last });

  const since = inbox.filter((d) => BigInt(d.toLogId) > BigInt(baseline));
  const expected = source.changes
    .filter(([, logId]) => logId > Number(baseline))
    .sort(byIdThenLogId);
  const counted = await replica.changes();
  expect(
    since.reduce((n, d) => n + d.rows, 0),
    `${why}: row changes shipped`,
  ).toBe(expected.length);
  expect(counted.length, `${why}: row changes applied (trigger count)`).toBe(expected.length);
  expect(counted, `${why}: each row change applied exactly once`).toEqual(expected);
  expect(await replica.history(), `${why}: each delta recorded exactly once, in order`).toEqual(
    since.map((d) => d.toLogId),
  );

  expect(tempFiles(dirs.stateDir), `${why}: temporary files left in the state directory`).toEqual(
    [],
  );
  for (const [where, dir, chain] of [
    ['outbox', dirs.outbox, outbox],
    ['inbox', dirs.inbox, inbox],
  ] as const) {
    expect(tempFiles(dir), `${why}: temporary files left in the ${where}`).toEqual([]);
    const listed = new Set(chain.flatMap((d) => [d.file, ...d.parts]));
    // The replica's acknowledgement lives beside the deltas it read (load publishes it).
    const ack = (f: string) => where === 'inbox' && replicaOfAckFile(dirs.job, f) !== null;
    expect(
      readdirSync(dir).filter((f) => !listed.has(f) && !ack(f)),
      `${why}: files in the ${where} that no manifest lists`,
    ).toEqual([]);
  }
}

/** A reader of a store and the last logId it has (what prune must never take from it). */
export interface StoreReader {
  name: string;
  logId: string;
}

/**
 * The retention invariant, checked in a store after any prune (killed or not): every manifest
 * there has all its parts (no reader ever finds a delta whose parts are gone), and each reader
 * still finds the unbroken chain of deltas from its position to the newest delta the store held
 * before (`newest`). Returns the manifests present, oldest first.
 */
export async function expectNothingNeededRemoved(
  store: import('../../src/store/index.js').DeltaStore,
  readers: StoreReader[],
  newest: string,
  why = '',
): Promise<string[]> {
  const { readManifestIn } = await import('../../src/store/index.js');
  const { partsOf } = await import('../../src/format/manifest.js');
  const names = new Set(await store.list('logId'));
  const next = new Map<string, string>();
  const manifests = (await store.listManifests()).map((m) => m.file);
  for (const file of manifests) {
    const m = await readManifestIn(store, file);
    for (const part of partsOf(m)) {
      expect(
        names.has(part.file),
        `${why}: ${file} is there but its part ${part.file} is not`,
      ).toBe(true);
    }
    next.set(m.fromLogId, m.toLogId);
  }
  for (const r of readers) {
    let at = r.logId;
    while (BigInt(at) < BigInt(newest)) {
      const to = next.get(at);
      expect(
        to,
        `${why}: reader ${r.name} at ${r.logId} needs the delta after ${at}`,
      ).toBeDefined();
      at = to!;
    }
  }
  return manifests;
}
