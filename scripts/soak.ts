/**
 * scripts/soak: a real workload from a client we did not write. Sets up pgbench's TPC-B tables in
 * a throwaway PostgreSQL source, installs deltasync's change capture on them (changelog mode; the
 * first delta seeds the empty replica), then runs `pgbench` for a bounded time while extract, copy
 * and load run in a loop (as cron would, only faster). Through the middle of the run (a third of
 * it, or --hold seconds) one transaction stays open (it has an xid and writes a new account and its history row, delta 0),
 * so every delta in that stretch is cut while an older transaction is still running.
 *
 * After **every** load the replica must satisfy TPC-B's invariant: the sums of the accounts',
 * tellers' and branches' balances and of the history's deltas are equal (each committed pgbench
 * transaction adds the same delta to all four), i.e. each delta is one consistent cut. At the end
 * it catches up, checks the held transaction's rows arrived, and runs `deltasync verify`. Exit 0
 * only if every check passed and verify reports the replica equal.
 *
 *   scripts/soak [--seconds 60] [--clients 4] [--scale 1] [--hold SECONDS] [--keep]
 *
 * e.g. issue 8's soak, five minutes with a transaction open for three of them:
 *   scripts/soak --seconds 300 --clients 8 --hold 180
 *
 * pgbench_history gets a bigserial key (hid) so that it is replicated too. Traffic goes to
 * 127.0.0.1 only.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL =
  process.env.DELTASYNC_SOAK_PG_URL ??
  process.env.DELTASYNC_TEST_PG_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres';
const TABLES = ['pgbench_branches', 'pgbench_tellers', 'pgbench_accounts', 'pgbench_history'];
const KEYS: Record<string, string> = {
  pgbench_branches: 'bid',
  pgbench_tellers: 'tid',
  pgbench_accounts: 'aid',
  pgbench_history: 'hid',
};
/** TPC-B's invariant: each committed transaction adds one delta to all four sums. */
const SUMS_SQL = `SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)::text AS accounts,
  (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers)::text AS tellers,
  (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches)::text AS branches,
  (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::text AS history`;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i === -1) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} needs a positive number`);
  return n;
}

function withDb(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

function bin(
  name: string,
  args: string[],
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', name), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function step(name: string, config: string): void {
  const r = bin(name, ['-c', config]);
  // 75: the previous loop iteration still holds the lock; not possible here, but harmless.
  if (r.code !== 0 && r.code !== 75)
    throw new Error(`${name} exited ${r.code}: ${r.stderr.trim()}`);
}

async function main(): Promise<number> {
  const seconds = arg('seconds', 60);
  const clients = arg('clients', 4);
  const scale = arg('scale', 1);
  const hold = Math.max(1, Math.round(arg('hold', seconds / 3)));
  if (hold >= seconds) throw new Error('--hold must be shorter than --seconds');
  const keep = process.argv.includes('--keep');
  const tag = `${process.pid}_${Date.now() % 100000}`;
  const srcDb = `soak_src_${tag}`;
  const dstDb = `soak_dst_${tag}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const dir = mkdtempSync(join(tmpdir(), 'deltasync-soak-'));
  try {
    await admin.query(`CREATE DATABASE ${srcDb}`);
    await admin.query(`CREATE DATABASE ${dstDb}`);
    const srcUrl = withDb(ADMIN_URL, srcDb);
    const dstUrl = withDb(ADMIN_URL, dstDb);

    console.log(`soak: pgbench -i -s ${scale} into ${srcDb}`);
    const init = spawnSync('pgbench', ['-i', '-q', '-s', String(scale), srcUrl], {
      encoding: 'utf8',
    });
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);

    const src = new pg.Client({ connectionString: srcUrl });
    const dst = new pg.Client({ connectionString: dstUrl });
    // The clean-up below drops both databases under these sessions when the soak fails early.
    for (const c of [src, dst]) c.on('error', () => {});
    await src.connect();
    await dst.connect();
    await src.query('ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY');
    // The replica starts empty: deltasync's first delta seeds it (a base of every table).
    await dst.query(`
      CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
      CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
      CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
      CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp,
        filler char(22), hid bigint PRIMARY KEY);`);
    mkdirSync(join(dir, 'inbox'));
    const config = join(dir, 'soak.js');
    writeFileSync(
      config,
      `export default ${JSON.stringify(
        {
          name: 'soak',
          stateDir: join(dir, 'state'),
          source: { client: 'pg', connection: srcUrl },
          target: { client: 'pg', connection: dstUrl },
          outbox: join(dir, 'outbox'),
          destinations: [{ name: 'replica', dir: join(dir, 'inbox') }],
          inbox: join(dir, 'inbox'),
          tables: TABLES.map((name) => ({ name, key: [KEYS[name]], mode: 'changelog' })),
          delta: { maxRowsPerPart: 20000, maxRowsPerDelta: 50000 },
          log: { file: join(dir, 'soak.log') },
        },
        null,
        2,
      )};\n`,
    );
    const capture = bin('deltasync', ['capture', '--apply', '-c', config]);
    if (capture.code !== 0) throw new Error(`capture --apply failed: ${capture.stderr}`);

    console.log(`soak: pgbench -T ${seconds} -c ${clients} while extract → copy → load loop`);
    const bench = spawn(
      'pgbench',
      ['-n', '-T', String(seconds), '-c', String(clients), '-j', '2', srcUrl],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let benchOut = '';
    bench.stdout.on('data', (d: Buffer) => (benchOut += d.toString()));
    bench.stderr.on('data', (d: Buffer) => (benchOut += d.toString()));
    const benchDone = new Promise<number | null>((done) => bench.on('close', done));
    let running = true;
    void benchDone.then(() => (running = false));
    const held = await holdOneTransaction(srcUrl, seconds, hold, scale);
    // Awaited after the loop; a loop that fails first must still report its own error.
    held.committed.catch(() => {});
    let loops = 0;
    let checks = 0;
    const broken: string[] = [];
    const checkSums = async () => {
      const { rows } = await dst.query(SUMS_SQL);
      const r = rows[0] as Record<string, string>;
      checks++;
      if (new Set(Object.values(r)).size !== 1) broken.push(JSON.stringify(r));
    };
    while (running) {
      for (const s of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) step(s, config);
      await checkSums();
      loops++;
      await new Promise((r) => setTimeout(r, 500));
    }
    await held.committed;
    const benchCode = await benchDone;
    if (benchCode !== 0) throw new Error(`pgbench failed (${benchCode}): ${benchOut}`);
    const tps = /tps = ([\d.]+)/.exec(benchOut)?.[1];
    // Catch up: everything pgbench committed is now behind a stable high-water mark.
    for (let i = 0; i < 2; i++) {
      for (const s of ['deltasync-extract', 'deltasync-copy', 'deltasync-load']) step(s, config);
      await checkSums();
    }
    const { rows: changes } = await src.query('SELECT count(*)::int AS n FROM deltasync_changelog');
    const { rows: heldRows } = await dst.query(
      'SELECT count(*)::int AS n FROM pgbench_accounts WHERE aid = $1',
      [held.aid],
    );
    const final = (await dst.query(SUMS_SQL)).rows[0] as Record<string, string>;
    await src.end();
    await dst.end();

    const verify = bin('deltasync', ['verify', '-c', config]);
    console.log(
      `soak: ${loops} loops during pgbench (${tps ?? '?'} tps), ${changes[0].n} changes captured`,
    );
    console.log(
      `soak: one transaction held open ${held.seconds} s; TPC-B sums checked on the replica after ${checks} loads, ${broken.length} broken; final sums ${JSON.stringify(final)}`,
    );
    console.log(verify.stdout.trim());
    if (broken.length > 0) {
      console.error(
        `soak: TPC-B sums differ on the replica after a load: ${broken.slice(0, 3).join('; ')}`,
      );
      return 1;
    }
    if (heldRows[0].n !== 1) {
      console.error(`soak: the held transaction's account ${held.aid} never reached the replica`);
      return 1;
    }
    if (verify.code !== 0) {
      console.error(`soak: verify exited ${verify.code}: ${verify.stderr.trim()}`);
      return 1;
    }
    console.log('soak: the replica matches the source');
    return 0;
  } finally {
    if (!keep) {
      await admin.query(`DROP DATABASE IF EXISTS ${srcDb} WITH (FORCE)`).catch(() => undefined);
      await admin.query(`DROP DATABASE IF EXISTS ${dstDb} WITH (FORCE)`).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    } else {
      console.log(`soak: kept ${srcDb}, ${dstDb} and ${dir}`);
    }
    await admin.end();
  }
}

/**
 * Opens a transaction for `hold` seconds in the middle of the run: it takes an xid, then
 * writes an account beyond pgbench's range and its history row (delta 0, so the sums hold), rows
 * no pgbench client touches, so nobody waits on its locks.
 */
async function holdOneTransaction(
  url: string,
  seconds: number,
  hold: number,
  scale: number,
): Promise<{ aid: number; seconds: number; committed: Promise<void> }> {
  const aid = 100000 * scale + 1;
  const start = (seconds - hold) / 2;
  const c = new pg.Client({ connectionString: url });
  // When the soak fails early, its clean-up drops the database under this session; that must not
  // crash the process and hide the failure being reported.
  c.on('error', () => {});
  await c.connect();
  const sleep = (s: number) => new Promise((r) => setTimeout(r, s * 1000));
  const committed = (async () => {
    try {
      await sleep(start);
      await c.query('BEGIN');
      await c.query('SELECT pg_current_xact_id()');
      await c.query(
        `INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES ($1, 1, 0, '')`,
        [aid],
      );
      await c.query(
        `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, $1, 0, now())`,
        [aid],
      );
      await sleep(hold);
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
  })();
  return { aid, seconds: hold, committed };
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`soak failed: ${err.message}`);
    process.exit(1);
  },
);
